/* The storage port's contract (storage/storage.h, struct storage_port), held
 * against both of its implementations: storage_lmdb over a real LMDB
 * environment, and the simulator's in-memory tests/fake/store.c. Every test
 * runs once per backend, so the simulator's store cannot drift from what
 * kvnode runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/common.h"
#include "../../storage/storage.h"
#include "../fake/store.h"

struct backend {
    const char *name;
    const struct storage_port *port;
    void *ctx;
    struct storage *lmdb; /* storage_lmdb's */
    struct fake_store *fake;
    char dir[64];
};

static struct backend lmdb_backend = {.name = "lmdb"};
static struct backend fake_backend = {.name = "fake"};

static int lmdb_setup(void **state)
{
    struct backend *b = &lmdb_backend;
    snprintf(b->dir, sizeof(b->dir), "/tmp/essaim-port-XXXXXX");
    if (!mkdtemp(b->dir))
        return -1;
    if (storage_open(&b->lmdb, b->dir, 16 << 20, NULL, NULL) != 0)
        return -1;
    b->port = &storage_lmdb;
    b->ctx = b->lmdb;
    *state = b;
    return 0;
}

static int lmdb_teardown(void **state)
{
    struct backend *b = *state;
    storage_close(b->lmdb);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", b->dir);
    return system(cmd);
}

static int fake_setup(void **state)
{
    struct backend *b = &fake_backend;
    b->fake = fake_store_new();
    b->port = &fake_store_port;
    b->ctx = b->fake;
    *state = b;
    return 0;
}

static int fake_teardown(void **state)
{
    struct backend *b = *state;
    fake_store_free(b->fake);
    return 0;
}

/* Submits one write through the port and waits until it comes back. */
static void commit(struct backend *b, struct storage_write *w)
{
    b->port->submit(b->ctx, w);
    struct storage_write *done = NULL;
    for (int spins = 0; !done && spins < 20000; spins++) {
        done = b->lmdb ? storage_completed(b->lmdb)
                       : fake_store_completed(b->fake);
        if (!done)
            usleep(100);
    }
    assert_ptr_equal(done, w);
    assert_null(done->next);
}

static uint8_t origin_a[STORAGE_ORIGIN_BYTES], origin_b[STORAGE_ORIGIN_BYTES];

static struct storage_write put_of(const char *key, const char *value,
                                   uint64_t version, const uint8_t *origin)
{
    struct storage_write w = {.op = STORAGE_PUT,
                              .key = (const uint8_t *)key,
                              .key_len = strlen(key),
                              .value = (const uint8_t *)value,
                              .value_len = value ? strlen(value) : 0,
                              .version = version,
                              .tombstone = value == NULL};
    memcpy(w.origin, origin, STORAGE_ORIGIN_BYTES);
    return w;
}

static void test_a_put_reads_back_and_a_missing_key_is_not_found(void **state)
{
    struct backend *b = *state;
    struct storage_write w = put_of("alpha", "one", 100, origin_a);
    commit(b, &w);
    assert_int_equal(w.result, 0);
    assert_true(w.applied);
    assert_false(w.had_prev);
    assert_int_equal(w.stored_version, 100);
    uint8_t lkey[STORAGE_LKEY_BYTES], sum[STORAGE_CHECKSUM_BYTES];
    storage_lkey(lkey, w.key, w.key_len);
    assert_memory_equal(w.lkey, lkey, sizeof(lkey));
    storage_checksum(sum, w.value, w.value_len);
    assert_memory_equal(w.checksum, sum, sizeof(sum));

    struct storage_record rec;
    assert_int_equal(b->port->get(b->ctx, w.key, w.key_len, &rec), 0);
    assert_int_equal(rec.version, 100);
    assert_memory_equal(rec.origin, origin_a, STORAGE_ORIGIN_BYTES);
    assert_false(rec.tombstone);
    assert_int_equal(rec.value_len, 3);
    assert_memory_equal(rec.value, "one", 3);
    storage_record_free(&rec);
    assert_int_equal(b->port->get(b->ctx, (const uint8_t *)"beta", 4, &rec),
                     KV_ERR_NOT_FOUND);
}

static void
test_the_newer_version_wins_and_reports_what_it_replaced(void **state)
{
    struct backend *b = *state;
    struct storage_write w1 = put_of("k", "v1", 200, origin_a);
    commit(b, &w1);
    uint64_t txn1 = w1.txn;
    /* Older: not applied, and says what is stored. */
    struct storage_write old = put_of("k", "v0", 150, origin_b);
    commit(b, &old);
    assert_int_equal(old.result, 0);
    assert_false(old.applied);
    assert_int_equal(old.stored_version, 200);
    /* The same version from a higher origin wins the tie. */
    uint8_t high[STORAGE_ORIGIN_BYTES];
    memset(high, 0xff, sizeof(high));
    struct storage_write tie = put_of("k", "v2", 200, high);
    commit(b, &tie);
    assert_true(tie.applied);
    assert_true(tie.had_prev);
    assert_int_equal(tie.prev_version, 200);
    assert_memory_equal(tie.prev_origin, origin_a, STORAGE_ORIGIN_BYTES);
    assert_false(tie.prev_tombstone);
    assert_memory_equal(tie.prev_checksum, w1.checksum, STORAGE_CHECKSUM_BYTES);
    assert_true(tie.txn > txn1);
    /* A delete is a tombstone that reads back as one. */
    struct storage_write del = put_of("k", NULL, 300, origin_b);
    commit(b, &del);
    assert_true(del.applied);
    struct storage_record rec;
    assert_int_equal(b->port->get(b->ctx, (const uint8_t *)"k", 1, &rec), 0);
    assert_true(rec.tombstone);
    assert_int_equal(rec.value_len, 0);
    assert_int_equal(rec.version, 300);
    storage_record_free(&rec);
    /* The highest version ever stored, the refused older one aside. */
    assert_int_equal(b->port->max_version(b->ctx), 300);
}

struct walk {
    size_t n, stop_after;
    uint8_t last[STORAGE_LKEY_BYTES];
    bool ordered;
    uint64_t first, last_token;
    bool in_range;
};

static int on_record(void *arg, const uint8_t *lkey,
                     const struct storage_record *rec, bool sound)
{
    struct walk *w = arg;
    uint64_t t = be64_get(lkey);
    if (w->n && memcmp(lkey, w->last, STORAGE_LKEY_BYTES) <= 0)
        w->ordered = false;
    if (t < w->first || t > w->last_token || !sound || rec->key_len == 0)
        w->in_range = false;
    uint8_t check[STORAGE_LKEY_BYTES];
    storage_lkey(check, rec->key, rec->key_len);
    if (memcmp(check, lkey, STORAGE_LKEY_BYTES) != 0)
        w->in_range = false;
    memcpy(w->last, lkey, STORAGE_LKEY_BYTES);
    w->n++;
    return w->stop_after && w->n == w->stop_after;
}

static size_t walk(struct backend *b, uint64_t first, uint64_t last,
                   const uint8_t *after, size_t stop_after, uint64_t *snap)
{
    struct walk w = {.ordered = true,
                     .in_range = true,
                     .first = first,
                     .last_token = last,
                     .stop_after = stop_after};
    assert_int_equal(
        b->port->scan(b->ctx, first, last, after, on_record, &w, snap), 0);
    assert_true(w.ordered);
    assert_true(w.in_range);
    return w.n;
}

static void
test_scans_walk_token_order_within_range_and_resume_after(void **state)
{
    struct backend *b = *state;
    struct storage_write w[40];
    char keys[40][8];
    uint64_t max_txn = 0;
    size_t low_half = 0;
    for (size_t i = 0; i < 40; i++) {
        snprintf(keys[i], sizeof(keys[i]), "s%zu", i);
        w[i] = put_of(keys[i], "x", 10 + i, origin_a);
        commit(b, &w[i]);
        max_txn = w[i].txn > max_txn ? w[i].txn : max_txn;
        low_half += storage_token(w[i].key, w[i].key_len) < (1ull << 63);
    }
    uint64_t snap = 0;
    assert_int_equal(walk(b, 0, UINT64_MAX, NULL, 0, &snap), 40);
    assert_true(snap >= max_txn);
    assert_int_equal(walk(b, 0, (1ull << 63) - 1, NULL, 0, NULL), low_half);
    assert_int_equal(walk(b, 0, UINT64_MAX, NULL, 3, NULL), 3);
    /* After the 10th key in order, 30 remain. */
    struct walk first10 = {.ordered = true,
                           .in_range = true,
                           .last_token = UINT64_MAX,
                           .stop_after = 10};
    assert_int_equal(
        b->port->scan(b->ctx, 0, UINT64_MAX, NULL, on_record, &first10, NULL),
        0);
    assert_int_equal(walk(b, 0, UINT64_MAX, first10.last, 0, NULL), 30);
    /* By LMDB key, with key and value in one allocation. */
    struct storage_record rec;
    assert_int_equal(b->port->get_lkey(b->ctx, w[7].lkey, &rec), 0);
    assert_int_equal(rec.key_len, strlen(keys[7]));
    assert_memory_equal(rec.key, keys[7], rec.key_len);
    assert_int_equal(rec.version, 17);
    assert_memory_equal(rec.checksum, w[7].checksum, STORAGE_CHECKSUM_BYTES);
    storage_record_free_all(&rec);
    uint8_t none[STORAGE_LKEY_BYTES];
    storage_lkey(none, (const uint8_t *)"absent", 6);
    assert_int_equal(b->port->get_lkey(b->ctx, none, &rec), KV_ERR_NOT_FOUND);
}

static struct storage_write hint_of(const char *key, uint64_t version,
                                    const uint8_t *owner, uint8_t op)
{
    struct storage_write w = put_of(key, "h", version, origin_a);
    w.op = op;
    memcpy(w.owner, owner, STORAGE_ORIGIN_BYTES);
    return w;
}

static void
test_hints_live_apart_per_owner_and_go_only_when_not_newer(void **state)
{
    struct backend *b = *state;
    uint8_t own1[STORAGE_ORIGIN_BYTES], own2[STORAGE_ORIGIN_BYTES];
    memset(own1, 0x22, sizeof(own1));
    memset(own2, 0x11, sizeof(own2));
    const char *keys[] = {"h1", "h2", "h3"};
    struct storage_write w[4];
    for (size_t i = 0; i < 3; i++) {
        w[i] = hint_of(keys[i], 50, own1, STORAGE_PUT_HINT);
        commit(b, &w[i]);
        assert_true(w[i].applied);
    }
    w[3] = hint_of("h9", 50, own2, STORAGE_PUT_HINT);
    commit(b, &w[3]);
    /* Never read as data. */
    struct storage_record rec;
    assert_int_equal(b->port->get(b->ctx, (const uint8_t *)"h1", 2, &rec),
                     KV_ERR_NOT_FOUND);
    assert_int_equal(walk(b, 0, UINT64_MAX, NULL, 0, NULL), 0);
    /* Owners in id order; an owner's hints in token order. */
    uint8_t owners[4][STORAGE_ORIGIN_BYTES];
    size_t n = 0;
    assert_int_equal(b->port->hint_owners(b->ctx, owners, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(owners[0], own2, STORAGE_ORIGIN_BYTES);
    assert_memory_equal(owners[1], own1, STORAGE_ORIGIN_BYTES);
    assert_int_equal(b->port->hint_owners(b->ctx, owners, 1, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(owners[0], own2, STORAGE_ORIGIN_BYTES);
    struct storage_record *recs;
    assert_int_equal(b->port->hints(b->ctx, own1, 10, &recs, &n), 0);
    assert_int_equal(n, 3);
    for (size_t i = 1; i < n; i++) {
        uint8_t a[STORAGE_LKEY_BYTES], c[STORAGE_LKEY_BYTES];
        storage_lkey(a, recs[i - 1].key, recs[i - 1].key_len);
        storage_lkey(c, recs[i].key, recs[i].key_len);
        assert_true(memcmp(a, c, sizeof(a)) < 0);
    }
    assert_int_equal(recs[0].value_len, 1);
    assert_int_equal(recs[0].version, 50);
    storage_hints_free(recs, n);
    assert_int_equal(b->port->hints(b->ctx, own1, 2, &recs, &n), 0);
    assert_int_equal(n, 2);
    storage_hints_free(recs, n);
    /* A delete older than the hint leaves it; one at its version drops it. */
    struct storage_write d = hint_of("h2", 40, own1, STORAGE_DEL_HINT);
    commit(b, &d);
    assert_false(d.applied);
    d = hint_of("h2", 50, own1, STORAGE_DEL_HINT);
    commit(b, &d);
    assert_true(d.applied);
    assert_int_equal(b->port->hints(b->ctx, own1, 10, &recs, &n), 0);
    assert_int_equal(n, 2);
    storage_hints_free(recs, n);
    /* The other owner's hint for another key is untouched. */
    assert_int_equal(b->port->hints(b->ctx, own2, 10, &recs, &n), 0);
    assert_int_equal(n, 1);
    storage_hints_free(recs, n);
}

/* A named value kept apart from the records (a stream's progress): it
 * reads back whole, is replaced, is deleted by an empty one, and never
 * shows as a record. */
static void test_meta_values_live_apart_from_records(void **state)
{
    struct backend *b = *state;
    uint8_t *v = NULL;
    size_t len = 0;
    assert_int_equal(b->port->meta_get(b->ctx, "topo/progress", &v, &len),
                     KV_ERR_NOT_FOUND);
    uint8_t blob[3000];
    for (size_t i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 7);
    struct storage_write w = {.op = STORAGE_PUT_META,
                              .key = (const uint8_t *)"topo/progress",
                              .key_len = 13,
                              .value = blob,
                              .value_len = sizeof(blob)};
    commit(b, &w);
    assert_int_equal(w.result, 0);
    assert_int_equal(b->port->meta_get(b->ctx, "topo/progress", &v, &len), 0);
    assert_int_equal(len, sizeof(blob));
    assert_memory_equal(v, blob, len);
    free(v);
    struct storage_record rec;
    assert_int_equal(
        b->port->get(b->ctx, (const uint8_t *)"topo/progress", 13, &rec),
        KV_ERR_NOT_FOUND);
    w.value_len = 10;
    commit(b, &w);
    assert_int_equal(b->port->meta_get(b->ctx, "topo/progress", &v, &len), 0);
    assert_int_equal(len, 10);
    free(v);
    w.value_len = 0;
    commit(b, &w);
    assert_int_equal(w.result, 0);
    assert_int_equal(b->port->meta_get(b->ctx, "topo/progress", &v, &len),
                     KV_ERR_NOT_FOUND);
}

#define BOTH(t)                                                                \
    cmocka_unit_test_setup_teardown(t, lmdb_setup, lmdb_teardown),             \
        cmocka_unit_test_setup_teardown(t, fake_setup, fake_teardown)

int main(void)
{
    assert_true(sodium_init() >= 0);
    log_set_level(LOG_ERROR);
    memset(origin_a, 0x0a, sizeof(origin_a));
    memset(origin_b, 0x0b, sizeof(origin_b));
    const struct CMUnitTest tests[] = {
        BOTH(test_a_put_reads_back_and_a_missing_key_is_not_found),
        BOTH(test_the_newer_version_wins_and_reports_what_it_replaced),
        BOTH(test_scans_walk_token_order_within_range_and_resume_after),
        BOTH(test_hints_live_apart_per_owner_and_go_only_when_not_newer),
        BOTH(test_meta_values_live_apart_from_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
