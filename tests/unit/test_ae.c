/* ae (node/ae.c, ae_tree.c, ae_scrub.c): two nodes' anti-entropy over real
 * LMDB stores and the CPU accel, wired back to back through their captured
 * sends. Diverged stores (missing keys either way, newer versions either
 * way, tombstones) become equal after one repair; live trees equal a
 * rebuild; the record hash keeps its documented layout; a peer with another
 * view of the ring ends the round with an error instead of a wrong repair. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../accel/accel.h"
#include "../../common/common.h"
#include "../../node/ae.h"
#include "../../node/ring.h"
#include "../fake/env.h"

static char dir[64];

/* Each node acts through a capturing env (tests/fake/env.h) over its LMDB
 * store; pump() carries what one sent to the other. */
struct node {
    struct storage *st;
    struct ae *ae;
    uint8_t id[CRYPTO_NODE_ID_BYTES];
    struct fake_env fe;
};

static struct node nodes[2];
static uint64_t now_ms = 1000;
static struct accel *accel;
/* The outcome of each repair, by the id it was asked with (1..7). */
static struct msg_repair_result outcomes[8];
static bool finished[8];

/* Both nodes' clocks move together. */
static void set_time(uint64_t ms)
{
    now_ms = ms;
    for (size_t i = 0; i < 2; i++) {
        nodes[i].fe.now = ms;
        nodes[i].fe.wall = 1700000000000ull + ms;
    }
}

/* Takes the final outcome of every repair either node answered. */
static void take_replies(struct fake_env *fe)
{
    assert_true(fe->n_replies <= FAKE_ENV_MAX);
    for (size_t i = 0; i < fe->n_replies; i++) {
        const struct msg *m = &fe->replies[i].m;
        assert_int_equal(m->type, MSG_REPAIR_RESULT);
        assert_true(m->id < 8);
        if (m->u.repair_result.final) {
            outcomes[m->id] = m->u.repair_result;
            outcomes[m->id].text = NULL;
            finished[m->id] = true;
        }
    }
    fake_env_clear_replies(fe);
}

static int env_hash(void *ctx, const uint8_t *data, const uint64_t *off,
                    size_t n, size_t outlen, uint8_t *out)
{
    (void)ctx;
    return accel_hash(accel, data, off, n, outlen, out);
}

/* Completed writes go to ae (which frees its own). */
static void collect(struct node *x)
{
    for (struct storage_write *w = storage_completed(x->st), *next; w;
         w = next) {
        next = w->next;
        bool mine = w->tag == AE_WRITE_TAG;
        ae_on_stored(x->ae, w);
        if (!mine)
            free(w);
    }
}

/* What the nodes sent, delivered one message per step in the order sent. */
#define QCAP 4096
static struct qmsg {
    size_t to, from;
    uint8_t *bytes;
    size_t len;
} queue[QCAP];
static size_t q_head, q_n;

static void enqueue_sent(size_t i)
{
    struct fake_env *fe = &nodes[i].fe;
    assert_true(fe->n_sent <= FAKE_ENV_MAX);
    for (size_t k = 0; k < fe->n_sent; k++) {
        struct fake_sent *m = &fe->sent[k];
        assert_true(q_n < QCAP);
        struct qmsg *q = &queue[(q_head + q_n++) % QCAP];
        q->to = memcmp(m->to, nodes[0].id, CRYPTO_NODE_ID_BYTES) == 0 ? 0 : 1;
        assert_int_not_equal(q->to, i);
        q->from = i;
        q->bytes = m->bytes;
        q->len = m->len;
        m->bytes = NULL; /* the queue's now */
    }
    fake_env_clear_sent(fe);
}

static void drop_queue(void)
{
    for (; q_n; q_n--, q_head = (q_head + 1) % QCAP)
        free(queue[q_head].bytes);
}

/* Delivers queued messages and completions until repair id is over and
 * both stores have what was sent to them; returns its outcome. */
static const struct msg_repair_result *pump(uint64_t id)
{
    for (int spins = 0;
         spins < 200000 &&
         (!finished[id] || q_n || ae_busy(nodes[0].ae) || ae_busy(nodes[1].ae));
         spins++) {
        if (q_n) {
            struct qmsg q = queue[q_head];
            q_head = (q_head + 1) % QCAP;
            q_n--;
            struct msg_limits lim = {PROTO_MAX_KEY, PROTO_DEFAULT_MAX_VALUE};
            struct msg m;
            assert_int_equal(msg_decode(q.bytes, q.len, &lim, &m), 0);
            ae_on_peer_message(nodes[q.to].ae, nodes[q.from].id, &m, q.len);
            msg_free(&m);
            free(q.bytes);
        } else {
            usleep(200);
            set_time(now_ms + 1);
        }
        take_replies(&nodes[0].fe);
        take_replies(&nodes[1].fe);
        collect(&nodes[0]);
        collect(&nodes[1]);
        ae_tick(nodes[0].ae);
        ae_tick(nodes[1].ae);
        enqueue_sent(0);
        enqueue_sent(1);
    }
    assert_true(finished[id]);
    return &outcomes[id];
}

static struct ring *ring_of(size_t n)
{
    struct ring_node rn[2];
    memset(rn, 0, sizeof(rn));
    for (size_t i = 0; i < n; i++)
        memcpy(rn[i].id, nodes[i].id, CRYPTO_NODE_ID_BYTES);
    return ring_build(rn, n, RING_DEFAULT_VNODES);
}

/* Node i's anti-entropy: rounds only on request; builds and scrubs in
 * slices of 100 records, one slice per tick; many small messages. */
static struct ae *new_ae(size_t i)
{
    struct ae_config cfg;
    ae_config_defaults(&cfg);
    ring_placement_set_n(&cfg.placement, 2);
    cfg.interval_ms = 0;
    cfg.scrub_interval_ms = 0;
    cfg.step_timeout_ms = 300;
    cfg.max_message_bytes = 4096;
    cfg.build_batch = 100;
    cfg.build_steps = 1;
    struct ae *ae = ae_new(&cfg, &nodes[i].fe.env, nodes[i].id);
    assert_non_null(ae);
    struct ring *ring = ring_of(2);
    assert_non_null(ring);
    ae_set_ring(ae, ring);
    ring_free(ring);
    return ae;
}

static void start(void)
{
    for (size_t i = 0; i < 2; i++)
        memset(nodes[i].id, (int)(0x10 + i), sizeof(nodes[i].id));
    for (size_t i = 0; i < 2; i++) {
        struct node *x = &nodes[i];
        char sub[96];
        snprintf(sub, sizeof(sub), "%s/n%zu", dir, i);
        assert_int_equal(mkdir(sub, 0700), 0);
        assert_int_equal(storage_open(&x->st, sub, 1 << 26, NULL, NULL), 0);
        fake_env_init(&x->fe, &storage_lmdb, x->st);
        x->fe.env.hash = env_hash;
    }
    set_time(now_ms);
    for (size_t i = 0; i < 2; i++) {
        struct node *x = &nodes[i];
        x->ae = new_ae(i);
    }
    memset(finished, 0, sizeof(finished));
}

static void stop(void)
{
    for (size_t i = 0; i < 2; i++) {
        ae_free(nodes[i].ae);
        storage_close(nodes[i].st);
        fake_env_clear(&nodes[i].fe);
    }
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s/n0 %s/n1", dir, dir);
    assert_int_equal(system(cmd), 0);
}

/* Submits a write to node i and waits until it is committed, without
 * telling ae: the caller does, when it chooses. */
static struct storage_write *commit(size_t i, const char *key,
                                    const char *value, uint64_t version,
                                    bool tomb)
{
    struct storage_write *w = calloc(1, sizeof(*w));
    assert_non_null(w);
    w->key = (const uint8_t *)key;
    w->key_len = strlen(key);
    w->value = (const uint8_t *)value;
    w->value_len = value ? strlen(value) : 0;
    w->version = version;
    w->tombstone = tomb;
    memset(w->origin, 7, sizeof(w->origin));
    storage_submit(nodes[i].st, w);
    for (int t = 0; t < 10000; t++) {
        struct storage_write *done = storage_completed(nodes[i].st);
        if (done) {
            assert_ptr_equal(done, w);
            assert_int_equal(w->result, 0);
            return w;
        }
        usleep(100);
    }
    fail_msg("write did not complete");
    return NULL;
}

/* Writes a record straight into node i's store and tells ae. */
static void put(size_t i, const char *key, const char *value, uint64_t version,
                bool tomb)
{
    struct storage_write *w = commit(i, key, value, version, tomb);
    ae_on_stored(nodes[i].ae, w);
    free(w);
}

/* Writes count keys "PREFIX-i" into node i's store in one batch. */
static void put_many(size_t i, const char *prefix, size_t count)
{
    struct storage_write *w = calloc(count, sizeof(*w));
    char(*k)[32] = calloc(count, 32);
    assert_non_null(w);
    assert_non_null(k);
    for (size_t j = 0; j < count; j++) {
        int len = snprintf(k[j], 32, "%s-%zu", prefix, j);
        w[j].key = (const uint8_t *)k[j];
        w[j].key_len = (size_t)len;
        w[j].value = (const uint8_t *)k[j];
        w[j].value_len = (size_t)len;
        w[j].version = 5;
        storage_submit(nodes[i].st, &w[j]);
    }
    for (size_t got = 0; got < count;) {
        struct storage_write *d = storage_completed(nodes[i].st);
        if (!d)
            usleep(200);
        for (; d; d = d->next, got++) {
            assert_int_equal(d->result, 0);
            ae_on_stored(nodes[i].ae, d);
        }
    }
    free(w);
    free(k);
}

struct dump {
    uint8_t (*lkeys)[STORAGE_LKEY_BYTES];
    uint64_t *versions;
    bool *tombs;
    size_t n;
};

static int dump_one(void *arg, const uint8_t *lkey,
                    const struct storage_record *rec, bool sound)
{
    struct dump *d = arg;
    assert_true(sound);
    memcpy(d->lkeys[d->n], lkey, STORAGE_LKEY_BYTES);
    d->versions[d->n] = rec->version;
    d->tombs[d->n++] = rec->tombstone;
    return 0;
}

static void dump(size_t i, struct dump *d)
{
    d->lkeys = calloc(1000, STORAGE_LKEY_BYTES);
    d->versions = calloc(1000, sizeof(uint64_t));
    d->tombs = calloc(1000, sizeof(bool));
    d->n = 0;
    assert_int_equal(
        storage_scan(nodes[i].st, 0, UINT64_MAX, NULL, dump_one, d, NULL), 0);
}

static void dump_free(struct dump *d)
{
    free(d->lkeys);
    free(d->versions);
    free(d->tombs);
}

static void roots_equal(void)
{
    for (unsigned r = 0; r < AE_RANGES; r++) {
        uint8_t a[AE_HASH_BYTES], b[AE_HASH_BYTES];
        assert_int_equal(ae_root(nodes[0].ae, nodes[1].id, r, a), 0);
        assert_int_equal(ae_root(nodes[1].ae, nodes[0].id, r, b), 0);
        assert_memory_equal(a, b, sizeof(a));
    }
}

static void test_diverged_stores_are_equal_after_one_repair(void **state)
{
    (void)state;
    start();
    char k[32], v[32];
    /* Both: 0..199. Only node 0: 200..299. Node 1 newer: 10..19, and a
     * tombstone for 20. Node 0 newer: 30..34. Only node 1: 300..309. */
    for (int i = 0; i < 300; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        snprintf(v, sizeof(v), "value-%d", i);
        put(0, k, v, 100, false);
        if (i < 200)
            put(1, k, v, 100, false);
    }
    for (int i = 10; i < 20; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        put(1, k, "newer on 1", 200, false);
    }
    put(1, "key-20", NULL, 200, true);
    for (int i = 30; i < 35; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        put(0, k, "newer on 0", 300, false);
    }
    for (int i = 300; i < 310; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        put(1, k, "only on 1", 100, false);
    }
    assert_int_equal(ae_repair(nodes[0].ae, outcomes, 1, -1, false), 0);
    /* A second request waits; a third is refused. */
    assert_int_equal(ae_repair(nodes[0].ae, outcomes, 2, -1, false), 0);
    assert_int_equal(ae_repair(nodes[0].ae, outcomes, 3, -1, false),
                     KV_ERR_BUSY);
    const struct msg_repair_result *o = pump(1);
    assert_int_equal(o->code, 0);
    assert_int_equal(o->pulled, 10 + 1 + 10);
    assert_int_equal(o->pushed, 100 + 5);
    assert_int_equal(o->differing, 126);
    /* The queued second round finds nothing. */
    o = pump(2);
    assert_int_equal(o->differing, 0);
    struct dump a, b;
    dump(0, &a);
    dump(1, &b);
    assert_int_equal(a.n, 310);
    assert_int_equal(b.n, 310);
    assert_memory_equal(a.lkeys, b.lkeys, a.n * STORAGE_LKEY_BYTES);
    assert_memory_equal(a.versions, b.versions, a.n * sizeof(uint64_t));
    assert_memory_equal(a.tombs, b.tombs, a.n * sizeof(bool));
    dump_free(&a);
    dump_free(&b);
    roots_equal();
    const struct ae_counters *c = ae_counters(nodes[0].ae);
    assert_int_equal(c->rounds, 2);
    assert_true(c->bytes_sent > 0 && c->bytes_received > 0);
    stop();
}

/* More keys than one message lists (AE_MAX_KEYS), both ways: the peer
 * answers in batches, and the initiator bounds its own side too. */
static void test_large_differences_move_in_bounded_batches(void **state)
{
    (void)state;
    start();
    put_many(0, "big-a", 20000);
    assert_int_equal(ae_repair(nodes[1].ae, outcomes, 1, -1, false), 0);
    const struct msg_repair_result *o = pump(1);
    assert_int_equal(o->code, 0);
    assert_int_equal(o->pulled, 20000);
    assert_int_equal(o->pushed, 0);
    put_many(1, "big-b", 20000);
    assert_int_equal(ae_repair(nodes[1].ae, outcomes, 2, -1, false), 0);
    o = pump(2);
    assert_int_equal(o->code, 0);
    assert_int_equal(o->pulled, 0);
    assert_int_equal(o->pushed, 20000);
    assert_int_equal(ae_repair(nodes[0].ae, outcomes, 3, -1, false), 0);
    o = pump(3);
    assert_int_equal(o->differing, 0);
    roots_equal();
    stop();
}

/* Trees built once, then kept by writes (new keys, overwrites, a delete),
 * equal a tree rebuilt from the store. */
static void test_live_trees_equal_a_rebuild(void **state)
{
    (void)state;
    start();
    char k[32];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "live-%d", i);
        put(0, k, "a", 1, false);
    }
    uint8_t before[AE_HASH_BYTES];
    assert_int_equal(ae_root(nodes[0].ae, nodes[1].id, 3, before), 0);
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof(k), "live-%d", i);
        put(0, k, "b", 2, i == 7);
    }
    struct ae *fresh = new_ae(0);
    for (unsigned r = 0; r < AE_RANGES; r++) {
        uint8_t live[AE_HASH_BYTES], built[AE_HASH_BYTES];
        assert_int_equal(ae_root(nodes[0].ae, nodes[1].id, r, live), 0);
        assert_int_equal(ae_root(fresh, nodes[1].id, r, built), 0);
        assert_memory_equal(live, built, sizeof(live));
    }
    ae_free(fresh);
    /* The overwrites changed the tree: a tree that ignored writes would
     * have passed the comparison above only if the rebuild did too. */
    uint8_t after[AE_HASH_BYTES];
    assert_int_equal(ae_root(nodes[0].ae, nodes[1].id, 3, after), 0);
    assert_memory_not_equal(before, after, sizeof(before));
    stop();
}

/* A build reads the store a slice at a time while writes go on. A write
 * committed before its slice was read but reported after, a write to a
 * slice already read, and one to a slice not read yet are each counted
 * exactly once: the built trees equal a build with no writes in flight. */
static void test_writes_during_a_build_are_counted_once(void **state)
{
    (void)state;
    start();
    put_many(0, "slice", 450);
    struct ae *ae = new_ae(0);
    /* Committed before any slice is read; reported to ae only later. */
    struct storage_write *early = commit(0, "slice-3", "early", 9, false);
    /* A repair starts the build and waits for it. */
    assert_int_equal(ae_repair(ae, outcomes, 1, -1, false), 0);
    ae_tick(ae); /* the first slice */
    struct storage_write *mid[8];
    for (int i = 0; i < 8; i++) {
        char *k = malloc(32);
        snprintf(k, 32, "slice-%d", i * 60);
        mid[i] = commit(0, k, "mid", 10, false);
        ae_on_stored(ae, mid[i]);
        ae_tick(ae); /* another slice */
    }
    ae_on_stored(ae, early);
    for (int t = 0; t < 20; t++)
        ae_tick(ae);
    struct ae *check = new_ae(0);
    for (unsigned r = 0; r < AE_RANGES; r++) {
        uint8_t live[AE_HASH_BYTES], built[AE_HASH_BYTES];
        assert_int_equal(ae_root(ae, nodes[1].id, r, live), 0);
        assert_int_equal(ae_root(check, nodes[1].id, r, built), 0);
        assert_memory_equal(live, built, sizeof(live));
    }
    for (int i = 0; i < 8; i++) {
        free((void *)mid[i]->key);
        free(mid[i]);
    }
    free(early);
    ae_free(ae);
    ae_free(check);
    fake_env_clear(&nodes[0].fe);
    drop_queue();
    stop();
}

/* The hash of a record is BLAKE2b-128 over lkey ‖ version (big-endian) ‖
 * origin ‖ tombstone byte ‖ checksum: nodes of different builds must agree. */
static void test_record_hash_layout(void **state)
{
    (void)state;
    uint8_t lkey[40], origin[16], sum[16], item[81], want[16], got[16];
    for (size_t i = 0; i < 40; i++)
        lkey[i] = (uint8_t)i;
    memset(origin, 0xab, sizeof(origin));
    memset(sum, 0xcd, sizeof(sum));
    memcpy(item, lkey, 40);
    be64_put(item + 40, 0x0102030405060708ull);
    memcpy(item + 48, origin, 16);
    item[64] = 1;
    memcpy(item + 65, sum, 16);
    crypto_generichash(want, 16, item, sizeof(item), NULL, 0);
    ae_record_hash(got, lkey, 0x0102030405060708ull, origin, true, sum);
    assert_memory_equal(got, want, 16);
    ae_record_hash(got, lkey, 0x0102030405060708ull, origin, false, sum);
    assert_memory_not_equal(got, want, 16);
}

/* A peer whose ring differs is asked again until the step deadline, then
 * the round ends with an error and nothing is written. */
static void test_a_peer_with_another_ring_fails_the_round(void **state)
{
    (void)state;
    start();
    put(0, "only", "x", 1, false);
    struct ring *solo = ring_of(1);
    ae_set_ring(nodes[1].ae, solo); /* node 1 sees only node 0 */
    ring_free(solo);
    assert_int_equal(ae_repair(nodes[0].ae, outcomes, 1, -1, false), 0);
    const struct msg_repair_result *o = pump(1);
    assert_int_equal(o->code, KV_ERR_UNAVAILABLE);
    assert_int_equal(o->pushed, 0);
    uint64_t at[AE_RANGES];
    ae_converged(nodes[0].ae, at);
    for (size_t r = 0; r < AE_RANGES; r++)
        assert_int_equal(at[r], 0);
    stop();
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/essaim-ae-XXXXXX");
    assert_non_null(mkdtemp(dir));
    struct accel_config ac = {.mode = ACCEL_CPU, .threads = 2};
    return sodium_init() < 0 || accel_open(&accel, &ac) != 0;
}

static int teardown(void **state)
{
    (void)state;
    accel_close(accel);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_diverged_stores_are_equal_after_one_repair),
        cmocka_unit_test(test_live_trees_equal_a_rebuild),
        cmocka_unit_test(test_large_differences_move_in_bounded_batches),
        cmocka_unit_test(test_writes_during_a_build_are_counted_once),
        cmocka_unit_test(test_record_hash_layout),
        cmocka_unit_test(test_a_peer_with_another_ring_fails_the_round),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
