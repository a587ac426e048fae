/* kvbench: load generator. C connections, each on its own thread, run a put
 * phase over K keys with V-byte values, then a get phase over the same keys,
 * and print operations per second with p50/p99/p999 latency per phase.
 * It reports figures; it never judges them (speed goals live here, not in
 * timed tests). */
#include "../common/common.h"
#include "../crypto/crypto.h"
#include "../proto/proto.h"

#include <getopt.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PIPELINE 256

struct bench {
    const char *node;
    uint8_t secret[CRYPTO_KEY_BYTES];
    bool identity; /* secret is a key of this client's own (--identity) */
    unsigned conns, keys, value_size;
    unsigned pipeline; /* requests in flight per connection */
    int consistency;
    const char *label;
    const char *prefix; /* keys are PREFIX%08u */
};

struct worker {
    struct bench *b;
    unsigned index;
    bool get_phase;
    uint32_t *lat_us; /* one per operation of this worker */
    size_t nops;
    uint64_t errors;
    int connect_err;
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct bench *b = w->b;
    struct kvc *c;
    w->connect_err = b->identity
                         ? kvc_connect_identity(&c, b->node, b->secret, 10000)
                         : kvc_connect(&c, b->node, b->secret, 10000);
    if (w->connect_err)
        return NULL;
    uint8_t *value = malloc(b->value_size ? b->value_size : 1);
    randombytes_buf(value, b->value_size);
    char key[PROTO_MAX_KEY + 1];
    /* Requests in flight: id and start time, matched by id on answer. */
    struct {
        uint64_t id, t0;
    } inflight[MAX_PIPELINE];
    unsigned n_inflight = 0;
    /* Worker i takes keys i, i+C, i+2C, ... */
    unsigned k = w->index;
    while (k < b->keys || n_inflight > 0) {
        if (k < b->keys && n_inflight < b->pipeline) {
            int klen = snprintf(key, sizeof(key), "%s%08u", b->prefix, k);
            struct msg m = {.type = w->get_phase ? MSG_GET : MSG_PUT};
            m.u.req.key = (const uint8_t *)key;
            m.u.req.key_len = (size_t)klen;
            m.u.req.value = value;
            m.u.req.value_len = b->value_size;
            m.u.req.consistency = (uint8_t)b->consistency;
            inflight[n_inflight].t0 = now_us();
            if (kvc_send(c, &m) != 0) {
                w->errors++;
                break;
            }
            inflight[n_inflight++].id = m.id;
            k += b->conns;
            continue;
        }
        struct msg m;
        if (kvc_recv(c, &m, 30000) != 0) {
            w->errors += n_inflight;
            break;
        }
        unsigned i = 0;
        while (i < n_inflight && inflight[i].id != m.id)
            i++;
        if (i == n_inflight || m.type != MSG_RESULT || m.u.result.code) {
            w->errors++;
            if (i == n_inflight)
                break; /* an answer to nothing we asked */
        }
        uint64_t dt = now_us() - inflight[i].t0;
        inflight[i] = inflight[--n_inflight];
        w->lat_us[w->nops++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
    }
    free(value);
    kvc_close(c);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint32_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i] / 1000.0;
}

static int run_phase(struct bench *b, bool get)
{
    struct worker *ws = calloc(b->conns, sizeof(*ws));
    pthread_t *th = calloc(b->conns, sizeof(*th));
    size_t per = b->keys / b->conns + 1;
    for (unsigned i = 0; i < b->conns; i++) {
        ws[i] = (struct worker){.b = b, .index = i, .get_phase = get};
        ws[i].lat_us = malloc(per * sizeof(uint32_t));
    }
    uint64_t t0 = now_us();
    for (unsigned i = 0; i < b->conns; i++)
        pthread_create(&th[i], NULL, worker_main, &ws[i]);
    for (unsigned i = 0; i < b->conns; i++)
        pthread_join(th[i], NULL);
    double secs = (double)(now_us() - t0) / 1e6;
    size_t total = 0;
    uint64_t errors = 0;
    int connect_err = 0;
    for (unsigned i = 0; i < b->conns; i++) {
        total += ws[i].nops;
        errors += ws[i].errors;
        if (ws[i].connect_err)
            connect_err = ws[i].connect_err;
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof(uint32_t));
    size_t k = 0;
    for (unsigned i = 0; i < b->conns; i++) {
        memcpy(all + k, ws[i].lat_us, ws[i].nops * sizeof(uint32_t));
        k += ws[i].nops;
        free(ws[i].lat_us);
    }
    qsort(all, total, sizeof(uint32_t), cmp_u32);
    printf("%-10s %-4s %8zu ops %7.2f s %10.0f ops/s  p50 %7.3f ms  p99 %7.3f "
           "ms  p999 %7.3f ms  errors %llu\n",
           b->label, get ? "get" : "put", total, secs,
           secs > 0 ? (double)total / secs : 0, pct(all, total, 0.50),
           pct(all, total, 0.99), pct(all, total, 0.999),
           (unsigned long long)errors);
    free(all);
    free(ws);
    free(th);
    if (connect_err) {
        fprintf(stderr, "kvbench: connecting to %s: %s\n", b->node,
                kv_strerror(connect_err));
        return 1;
    }
    return errors ? 1 : 0;
}

static void usage(void)
{
    printf("usage: kvbench [--node HOST:PORT] --identity FILE | --key FILE\n"
           "               [--connections C] [--keys K]\n"
           "               [--value-size V] [--consistency LEVEL] "
           "[--label TEXT] [--pipeline D]\n"
           "               [--key-prefix P]\n"
           "defaults: node $KV_NODE or 127.0.0.1:7400, identity "
           "$KV_IDENTITY, key $KV_KEY, C 50, "
           "K 100000, V 100, D 1 (requests in flight per connection), "
           "keys P%%08u (P bench-)\n"
           "LEVEL: " CONS_NAMES " (default quorum)\n");
}

int main(int argc, char **argv)
{
    struct bench b = {.conns = 50,
                      .keys = 100000,
                      .value_size = 100,
                      .consistency = CONS_QUORUM,
                      .label = "1 node",
                      .prefix = "bench-",
                      .pipeline = 1};
    const char *key_path = getenv("KV_KEY");
    const char *identity_path = getenv("KV_IDENTITY");
    b.node = getenv("KV_NODE") ? getenv("KV_NODE") : PROTO_DEFAULT_NODE;
    static const struct option lopts[] = {
        {"node", required_argument, NULL, 'n'},
        {"key", required_argument, NULL, 'k'},
        {"identity", required_argument, NULL, 'i'},
        {"connections", required_argument, NULL, 'c'},
        {"keys", required_argument, NULL, 'K'},
        {"value-size", required_argument, NULL, 'V'},
        {"consistency", required_argument, NULL, 'C'},
        {"label", required_argument, NULL, 'l'},
        {"key-prefix", required_argument, NULL, 'P'},
        {"pipeline", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            b.node = optarg;
            break;
        case 'k':
            key_path = optarg;
            identity_path = NULL;
            break;
        case 'i':
            identity_path = optarg;
            break;
        case 'c':
            b.conns = (unsigned)atoi(optarg);
            break;
        case 'K':
            b.keys = (unsigned)atoi(optarg);
            break;
        case 'V':
            b.value_size = (unsigned)atoi(optarg);
            break;
        case 'C':
            b.consistency = consistency_parse(optarg);
            if (!b.consistency) {
                fprintf(stderr,
                        "kvbench: --consistency: unknown level '%s'; expected "
                        "one of " CONS_NAMES "\n",
                        optarg);
                return 2;
            }
            break;
        case 'P':
            b.prefix = optarg;
            break;
        case 'l':
            b.label = optarg;
            break;
        case 'p':
            b.pipeline = (unsigned)atoi(optarg);
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (identity_path) {
        key_path = identity_path;
        b.identity = true;
    }
    if (!key_path || !b.conns || !b.keys || !b.consistency || !b.pipeline ||
        strlen(b.prefix) > PROTO_MAX_KEY - 8 || b.pipeline > MAX_PIPELINE ||
        b.value_size > PROTO_DEFAULT_MAX_VALUE) {
        fprintf(stderr, "kvbench: bad arguments (see kvbench --help)\n");
        return 2;
    }
    if (crypto_init() || crypto_keyfile_read(key_path, b.secret)) {
        fprintf(stderr, "kvbench: cannot read key file %s\n", key_path);
        return 2;
    }
    printf("kvbench: %s, %u connections, %u in flight each, %u keys, "
           "%u-byte values, %s\n",
           b.node, b.conns, b.pipeline, b.keys, b.value_size,
           consistency_name(b.consistency));
    int rc = run_phase(&b, false);
    if (rc == 0)
        rc = run_phase(&b, true);
    sodium_memzero(b.secret, sizeof(b.secret));
    return rc;
}
