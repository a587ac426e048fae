/* node/topo.c and node/topo_stream.c on one node over fakes: what it
 * answers other nodes' streams (its ring digest, scans in token order with
 * their checksums and a cursor, stores acknowledged once durable) and what
 * kvcli decommission and removenode get when something is in the way. The
 * drivers' side (joins, decommissions, removals under faults) runs in
 * tests/sim/test_sim_topo.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/common.h"
#include "../../node/core.h"
#include "../fake/env.h"
#include "../fake/store.h"

static const uint8_t PEER[CRYPTO_NODE_ID_BYTES] = {0x22};

struct node {
    struct fake_env f;
    struct fake_store *fs;
    struct core *c;
};

static struct node *node_new(void)
{
    struct node *n = calloc(1, sizeof(*n));
    assert_non_null(n);
    n->fs = fake_store_new();
    fake_env_init(&n->f, &fake_store_port, n->fs);
    struct core_config cc;
    core_config_defaults(&cc);
    cc.with_ae = false;
    struct wire_member self = {.version = PROTO_VERSION};
    memset(self.id, 0x11, sizeof(self.id));
    snprintf(self.addr, sizeof(self.addr), "127.0.0.1:7400");
    n->c = core_new(&cc, &n->f.env, &self);
    assert_non_null(n->c);
    core_start(n->c, NULL, 0); /* a cluster of one: it owns the ring */
    core_tick(n->c);
    return n;
}

static void node_free(struct node *n)
{
    core_free(n->c);
    fake_store_free(n->fs);
    fake_env_clear(&n->f);
    free(n);
}

static void deliver(struct node *n)
{
    for (struct storage_write *w = fake_store_completed(n->fs), *next; w;
         w = next) {
        next = w->next;
        core_on_stored(n->c, w);
    }
}

/* Sends m as PEER would, and returns the one stream answer it got. */
static const struct msg_stream *ask(struct node *n, struct msg *m)
{
    uint8_t *buf;
    size_t len;
    fake_env_clear(&n->f);
    m->type = MSG_STREAM;
    assert_int_equal(msg_encode(m, &buf, &len), 0);
    assert_int_equal(core_on_peer_message(n->c, PEER, buf, len), 0);
    free(buf);
    deliver(n);
    for (size_t i = 0; i < n->f.n_sent; i++)
        if (!n->f.sent[i].gossip && n->f.sent[i].m.type == MSG_STREAM_ANSWER &&
            n->f.sent[i].m.id == m->id) {
            assert_memory_equal(n->f.sent[i].to, PEER, sizeof(PEER));
            return &n->f.sent[i].m.u.stream;
        }
    fail_msg("no stream answer to request %llu", (unsigned long long)m->id);
    return NULL;
}

static void test_answers_its_ring_digest(void **state)
{
    (void)state;
    struct node *n = node_new();
    struct msg q = {.id = 1};
    q.u.stream.op = STREAM_DIGEST;
    const struct msg_stream *a = ask(n, &q);
    assert_int_equal(a->op, STREAM_DIGEST);
    assert_int_equal(a->code, 0);
    assert_true(a->digest == repl_digest(core_repl(n->c)));
    assert_true(a->digest != 0);
    node_free(n);
}

#define RECS 40

/* Records a driver stores here are acknowledged once durable; a scan then
 * gives them back in token order, batch by batch after a cursor, each with
 * the checksum of its value. */
static void test_stores_then_scans_in_batches(void **state)
{
    (void)state;
    struct node *n = node_new();
    char keys[RECS][16], values[RECS][32];
    struct ae_record recs[RECS];
    for (size_t i = 0; i < RECS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "key-%zu", i);
        snprintf(values[i], sizeof(values[i]), "value-%zu", i * 7);
        recs[i] = (struct ae_record){.key = (const uint8_t *)keys[i],
                                     .key_len = strlen(keys[i]),
                                     .value = (const uint8_t *)values[i],
                                     .value_len = strlen(values[i]),
                                     .version = 1000 + i};
        recs[i].origin[0] = 0x22;
    }
    recs[3].tombstone = true;
    recs[3].value_len = 0;
    struct msg q = {.id = 2};
    q.u.stream.op = STREAM_STORE;
    q.u.stream.recs = recs;
    q.u.stream.n_recs = RECS;
    const struct msg_stream *a = ask(n, &q);
    assert_int_equal(a->op, STREAM_STORE);
    assert_int_equal(a->code, 0);
    assert_int_equal(fake_store_records(n->fs), RECS);

    /* Scans of at most ~200 bytes: several batches, each after the last
     * key of the one before, tokens ascending, nothing twice. */
    size_t seen = 0, batches = 0;
    uint64_t last_token = 0;
    uint8_t after[STORAGE_LKEY_BYTES];
    bool has_after = false, more = true;
    while (more) {
        struct msg s = {.id = 10 + batches};
        s.u.stream.op = STREAM_SCAN;
        s.u.stream.first = 0;
        s.u.stream.last = UINT64_MAX;
        s.u.stream.max_bytes = 200;
        s.u.stream.has_after = has_after;
        memcpy(s.u.stream.after, after, sizeof(after));
        a = ask(n, &s);
        assert_int_equal(a->code, 0);
        assert_true(a->n_recs >= 1 && a->n_recs < RECS);
        assert_int_equal(a->sums_len, a->n_recs * STORAGE_CHECKSUM_BYTES);
        for (size_t i = 0; i < a->n_recs; i++) {
            const struct ae_record *r = &a->recs[i];
            uint64_t t = storage_token(r->key, r->key_len);
            assert_true(seen == 0 || t >= last_token);
            last_token = t;
            uint8_t sum[STORAGE_CHECKSUM_BYTES];
            storage_checksum(sum, r->value, r->value_len);
            assert_memory_equal(sum, a->sums + i * STORAGE_CHECKSUM_BYTES,
                                sizeof(sum));
            seen++;
        }
        const struct ae_record *l = &a->recs[a->n_recs - 1];
        storage_lkey(after, l->key, l->key_len);
        has_after = true;
        more = a->more;
        batches++;
    }
    assert_int_equal(seen, RECS);
    assert_true(batches > 2);

    /* A scan of one token range holds only the keys in it. */
    uint64_t mid = storage_token(recs[0].key, recs[0].key_len);
    struct msg s = {.id = 99};
    s.u.stream.op = STREAM_SCAN;
    s.u.stream.first = mid;
    s.u.stream.last = mid;
    a = ask(n, &s);
    assert_int_equal(a->n_recs, 1);
    assert_memory_equal(a->recs[0].key, "key-0", 5);
    assert_false(a->more);
    node_free(n);
}

/* A store into a full disk is answered with the store's error, so that the
 * driver retries instead of counting the batch as moved. */
static void test_a_failed_store_is_answered_with_its_error(void **state)
{
    (void)state;
    struct node *n = node_new();
    fake_store_fail(n->fs, KV_ERR_FULL);
    struct ae_record r = {.key = (const uint8_t *)"k",
                          .key_len = 1,
                          .value = (const uint8_t *)"v",
                          .value_len = 1,
                          .version = 5};
    struct msg q = {.id = 3};
    q.u.stream.op = STREAM_STORE;
    q.u.stream.recs = &r;
    q.u.stream.n_recs = 1;
    const struct msg_stream *a = ask(n, &q);
    assert_int_equal(a->code, KV_ERR_FULL);
    node_free(n);
}

/* kvcli decommission on the only owner is refused, with --force too, and
 * removenode of this node or of an id nobody has. */
static void test_requests_in_the_way_are_refused(void **state)
{
    (void)state;
    struct node *n = node_new();
    char why[320];
    struct msg_topo q = {.op = TOPO_DECOMMISSION};
    assert_int_equal(core_topo_request(n->c, NULL, 1, &q, why, sizeof(why)),
                     KV_ERR_INVAL);
    assert_non_null(strstr(why, "fewer than the replication factor"));
    q.force = true;
    assert_int_equal(core_topo_request(n->c, NULL, 1, &q, why, sizeof(why)),
                     KV_ERR_INVAL);
    assert_non_null(strstr(why, "only owner"));
    struct msg_topo r = {.op = TOPO_REMOVENODE};
    memset(r.node, 0x11, sizeof(r.node)); /* itself */
    assert_int_equal(core_topo_request(n->c, NULL, 1, &r, why, sizeof(why)),
                     KV_ERR_INVAL);
    assert_non_null(strstr(why, "decommission"));
    memset(r.node, 0x77, sizeof(r.node)); /* nobody */
    assert_int_equal(core_topo_request(n->c, NULL, 1, &r, why, sizeof(why)),
                     KV_ERR_NOT_FOUND);
    node_free(n);
}

int main(void)
{
    if (crypto_init() != 0)
        return 1;
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_its_ring_digest),
        cmocka_unit_test(test_stores_then_scans_in_batches),
        cmocka_unit_test(test_a_failed_store_is_answered_with_its_error),
        cmocka_unit_test(test_requests_in_the_way_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
