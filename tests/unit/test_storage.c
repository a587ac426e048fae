/* storage: durable records with LWW, tombstones, checksums that catch
 * corruption on disk, group commit, and a full map that refuses writes while
 * reads go on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <lmdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../common/common.h"
#include "../../storage/storage.h"

static char dir[64];

/* The test waits for completions on a condition variable that the writer
 * thread's notify callback signals. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int notified;

static void notify(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    notified++;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

/* Collects completions until n writes are back. */
static void wait_done(struct storage *st, size_t n)
{
    size_t got = 0;
    while (got < n) {
        pthread_mutex_lock(&mu);
        while (!notified)
            pthread_cond_wait(&cv, &mu);
        notified = 0;
        pthread_mutex_unlock(&mu);
        for (struct storage_write *w = storage_completed(st); w; w = w->next)
            got++;
    }
    assert_int_equal(got, n);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/essaim-storage-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd);
}

/* Opens storage in a new sub-directory of the test's directory. */
static struct storage *open_sub(const char *name, uint64_t map)
{
    char sub[96];
    snprintf(sub, sizeof(sub), "%s/%s", dir, name);
    assert_int_equal(mkdir(sub, 0700), 0);
    struct storage *st;
    assert_int_equal(storage_open(&st, sub, map, notify, NULL), 0);
    return st;
}

static struct storage *open_st(uint64_t map)
{
    struct storage *st;
    assert_int_equal(storage_open(&st, dir, map, notify, NULL), 0);
    return st;
}

static void put(struct storage *st, const char *key, const char *value,
                uint64_t version, uint8_t origin, bool tomb, int expect_rc,
                bool expect_applied)
{
    struct storage_write w = {.key = (const uint8_t *)key,
                              .key_len = strlen(key),
                              .value = (const uint8_t *)value,
                              .value_len = value ? strlen(value) : 0,
                              .version = version,
                              .tombstone = tomb};
    memset(w.origin, origin, sizeof(w.origin));
    storage_submit(st, &w);
    wait_done(st, 1);
    assert_int_equal(w.result, expect_rc);
    assert_int_equal(w.applied, expect_applied);
}

/* A hint operation (op) for owner 0xNN..: */
static void hint(struct storage *st, uint8_t op, uint8_t owner, const char *key,
                 uint64_t version, int expect_rc, bool expect_applied)
{
    struct storage_write w = {.op = op,
                              .key = (const uint8_t *)key,
                              .key_len = strlen(key),
                              .value = (const uint8_t *)"v",
                              .value_len = 1,
                              .version = version};
    memset(w.owner, owner, sizeof(w.owner));
    storage_submit(st, &w);
    wait_done(st, 1);
    assert_int_equal(w.result, expect_rc);
    assert_int_equal(w.applied, expect_applied);
}

static void assert_stored(struct storage *st, const char *key,
                          const char *value, uint64_t version)
{
    struct storage_record r;
    assert_int_equal(storage_get(st, (const uint8_t *)key, strlen(key), &r), 0);
    assert_false(r.tombstone);
    assert_int_equal(r.value_len, strlen(value));
    assert_memory_equal(r.value, value, r.value_len);
    assert_int_equal(r.version, version);
    storage_record_free(&r);
}

static void test_token_is_a_fixed_format(void **state)
{
    (void)state;
    /* BLAKE2b with an 8-byte digest: these values are on disk and on the
     * wire and must never change (checked against Python's hashlib). */
    assert_int_equal(storage_token((const uint8_t *)"hello", 5),
                     0xa7b6eda801e5347dULL);
    assert_int_equal(storage_token((const uint8_t *)"", 0),
                     0xe4a6a0577479b2b4ULL);
}

static void test_put_get_survives_reopen(void **state)
{
    (void)state;
    struct storage *st = open_st(16 << 20);
    put(st, "k1", "v1", 100, 1, false, 0, true);
    assert_stored(st, "k1", "v1", 100);
    struct storage_record r;
    assert_int_equal(storage_get(st, (const uint8_t *)"nope", 4, &r),
                     KV_ERR_NOT_FOUND);
    storage_close(st);
    st = open_st(16 << 20);
    assert_stored(st, "k1", "v1", 100);
    storage_close(st);
}

/* The highest version ever stored is kept with the writes and read back at
 * open: kvnode's clock restarts above it. */
static void test_the_highest_version_stored_survives_reopen(void **state)
{
    (void)state;
    char sub[96];
    snprintf(sub, sizeof(sub), "%s/max-version", dir); /* its own store */
    assert_int_equal(mkdir(sub, 0700), 0);
    struct storage *st;
    assert_int_equal(storage_open(&st, sub, 16 << 20, notify, NULL), 0);
    assert_int_equal(storage_max_version(st), 0);
    put(st, "a", "1", 500, 1, false, 0, true);
    put(st, "b", "2", 900, 1, false, 0, true);
    put(st, "a", "0", 400, 1, false, 0, false); /* older: not applied */
    assert_int_equal(storage_max_version(st), 900);
    storage_close(st);
    assert_int_equal(storage_open(&st, sub, 16 << 20, notify, NULL), 0);
    assert_int_equal(storage_max_version(st), 900);
    put(st, "c", "3", 950, 1, false, 0, true);
    storage_close(st);
    assert_int_equal(storage_open(&st, sub, 16 << 20, notify, NULL), 0);
    assert_int_equal(storage_max_version(st), 950);
    struct storage_stats ss;
    assert_int_equal(storage_stats(st, &ss), 0);
    assert_int_equal(ss.entries, 3); /* "hints" and "meta" are not records */
    storage_close(st);
}

static void test_last_writer_wins_by_version_then_origin(void **state)
{
    (void)state;
    struct storage *st = open_st(16 << 20);
    put(st, "lww", "a", 200, 1, false, 0, true);
    put(st, "lww", "old", 150, 9, false, 0, false); /* older: ignored */
    assert_stored(st, "lww", "a", 200);
    put(st, "lww", "b", 200, 2, false, 0, true); /* tie: higher origin wins */
    assert_stored(st, "lww", "b", 200);
    put(st, "lww", "c", 200, 1, false, 0, false);
    assert_stored(st, "lww", "b", 200);
    put(st, "lww", NULL, 300, 1, true, 0, true); /* delete = tombstone */
    struct storage_record r;
    assert_int_equal(storage_get(st, (const uint8_t *)"lww", 3, &r), 0);
    assert_true(r.tombstone);
    assert_int_equal(r.version, 300);
    storage_record_free(&r);
    put(st, "lww", "late", 250, 5, false, 0, false); /* older than tombstone */
    storage_close(st);
}

static void test_corrupted_record_is_reported_not_returned(void **state)
{
    (void)state;
    struct storage *st = open_st(16 << 20);
    put(st, "victim", "precious value", 100, 1, false, 0, true);
    put(st, "bystander", "fine", 100, 1, false, 0, true);
    storage_close(st);

    /* Flip one byte of the stored value with LMDB directly. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 16 << 20), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    int found = 0;
    while (mdb_cursor_get(cur, &k, &v, found ? MDB_NEXT : MDB_FIRST) == 0) {
        found++;
        if (v.mv_size >= 14 && memmem(v.mv_data, v.mv_size, "precious", 8)) {
            uint8_t *copy = malloc(v.mv_size);
            memcpy(copy, v.mv_data, v.mv_size);
            copy[v.mv_size - 1] ^= 0x20;
            MDB_val nv = {v.mv_size, copy};
            assert_int_equal(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT), 0);
            free(copy);
            break;
        }
    }
    mdb_cursor_close(cur);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    st = open_st(16 << 20);
    struct storage_record r;
    assert_int_equal(storage_get(st, (const uint8_t *)"victim", 6, &r),
                     KV_ERR_CORRUPT);
    assert_stored(st, "bystander", "fine", 100);
    /* An older write never replaces it (it might bring back what a damaged
     * tombstone deleted)... */
    put(st, "victim", "older", 99, 1, false, 0, false);
    assert_int_equal(storage_get(st, (const uint8_t *)"victim", 6, &r),
                     KV_ERR_CORRUPT);
    /* ...the same version, a replica's copy, does... */
    put(st, "victim", "precious value", 100, 1, false, 0, true);
    assert_stored(st, "victim", "precious value", 100);
    /* ...and so does a newer write. */
    put(st, "victim", "repaired", 101, 1, false, 0, true);
    assert_stored(st, "victim", "repaired", 101);
    storage_close(st);
}

static void test_record_parse_rejects_damage(void **state)
{
    (void)state;
    struct storage_record r;
    uint8_t buf[64] = {1};
    assert_int_equal(storage_record_parse(buf, 10, &r), KV_ERR_CORRUPT);
    buf[0] = 7;
    assert_int_equal(storage_record_parse(buf, sizeof(buf), &r),
                     KV_ERR_VERSION);
    buf[0] = 1;
    buf[1] = 0x80; /* unknown flag */
    assert_int_equal(storage_record_parse(buf, sizeof(buf), &r),
                     KV_ERR_CORRUPT);
    buf[1] = 0;
    buf[42] = 0xff; /* key length beyond the record */
    buf[43] = 0xff;
    assert_int_equal(storage_record_parse(buf, sizeof(buf), &r),
                     KV_ERR_CORRUPT);
}

static void test_group_commit_batches_concurrent_writes(void **state)
{
    (void)state;
    struct storage *st = open_sub("group", 64 << 20);
    enum { N = 2000 };
    struct storage_write *ws = calloc(N, sizeof(*ws));
    char(*keys)[16] = calloc(N, 16);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], 16, "g%05d", i);
        ws[i].key = (const uint8_t *)keys[i];
        ws[i].key_len = strlen(keys[i]);
        ws[i].value = (const uint8_t *)"v";
        ws[i].value_len = 1;
        ws[i].version = 1;
        storage_submit(st, &ws[i]);
    }
    wait_done(st, N);
    struct storage_stats s;
    assert_int_equal(storage_stats(st, &s), 0);
    assert_int_equal(s.writes, N);
    assert_int_equal(s.entries, N);
    /* Submitted faster than one fsync each: far fewer transactions. */
    assert_true(s.batches < N / 4);
    for (int i = 0; i < N; i++)
        assert_int_equal(ws[i].result, 0);
    storage_close(st);
    free(ws);
    free(keys);
}

struct seen {
    uint8_t lkeys[64][STORAGE_LKEY_BYTES];
    size_t n;
    size_t stop_at;
};

static int see(void *arg, const uint8_t *lkey, const struct storage_record *rec,
               bool sound)
{
    struct seen *s = arg;
    assert_true(sound);
    assert_true(rec->key_len > 0);
    uint8_t check[STORAGE_LKEY_BYTES];
    storage_lkey(check, rec->key, rec->key_len);
    assert_memory_equal(check, lkey, sizeof(check));
    memcpy(s->lkeys[s->n++], lkey, STORAGE_LKEY_BYTES);
    return s->n == s->stop_at;
}

/* Anti-entropy's reads: a scan of a token range in key order, resumable
 * after a key; a read by LMDB key; and what a write replaced. */
static void test_scan_reads_ranges_in_order_and_writes_report_what_they_replace(
    void **state)
{
    (void)state;
    struct storage *st = open_sub("scan", 1 << 24);
    char key[32];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "scan-%d", i);
        put(st, key, "v1", 10, 1, false, 0, true);
    }
    struct seen all = {.stop_at = 1000};
    uint64_t snap = 0;
    assert_int_equal(storage_scan(st, 0, UINT64_MAX, NULL, see, &all, &snap),
                     0);
    assert_int_equal(all.n, 40);
    assert_true(snap > 0);
    for (size_t i = 1; i < all.n; i++)
        assert_true(memcmp(all.lkeys[i - 1], all.lkeys[i], STORAGE_LKEY_BYTES) <
                    0);
    /* Resumed after the tenth key: the other thirty. */
    struct seen rest = {.stop_at = 1000};
    assert_int_equal(
        storage_scan(st, 0, UINT64_MAX, all.lkeys[9], see, &rest, NULL), 0);
    assert_int_equal(rest.n, 30);
    assert_memory_equal(rest.lkeys[0], all.lkeys[10], STORAGE_LKEY_BYTES);
    /* A token range holds only its own keys; fn may stop the walk. */
    uint64_t lo = be64_get(all.lkeys[5]), hi = be64_get(all.lkeys[14]);
    struct seen part = {.stop_at = 1000};
    assert_int_equal(storage_scan(st, lo, hi, NULL, see, &part, NULL), 0);
    assert_int_equal(part.n, 10);
    struct seen three = {.stop_at = 3};
    assert_int_equal(storage_scan(st, 0, UINT64_MAX, NULL, see, &three, NULL),
                     0);
    assert_int_equal(three.n, 3);
    /* Read back by LMDB key. */
    struct storage_record rec;
    assert_int_equal(storage_get_lkey(st, all.lkeys[7], &rec), 0);
    uint8_t check[STORAGE_LKEY_BYTES];
    storage_lkey(check, rec.key, rec.key_len);
    assert_memory_equal(check, all.lkeys[7], sizeof(check));
    assert_int_equal(rec.value_len, 2);
    assert_memory_equal(rec.value, "v1", 2);
    storage_record_free_all(&rec);
    uint8_t none[STORAGE_LKEY_BYTES] = {0};
    assert_int_equal(storage_get_lkey(st, none, &rec), KV_ERR_NOT_FOUND);
    /* An overwrite says what it replaced, its checksum, and a transaction
     * after the scan's snapshot; a first write replaced nothing. */
    struct storage_write w = {.key = (const uint8_t *)"scan-3",
                              .key_len = 6,
                              .value = (const uint8_t *)"v2",
                              .value_len = 2,
                              .version = 11};
    memset(w.origin, 2, sizeof(w.origin));
    storage_submit(st, &w);
    wait_done(st, 1);
    assert_true(w.applied);
    assert_true(w.had_prev);
    assert_int_equal(w.prev_version, 10);
    assert_int_equal(w.prev_origin[0], 1);
    assert_false(w.prev_tombstone);
    uint8_t sum[STORAGE_CHECKSUM_BYTES];
    storage_checksum(sum, (const uint8_t *)"v1", 2);
    assert_memory_equal(w.prev_checksum, sum, sizeof(sum));
    storage_checksum(sum, (const uint8_t *)"v2", 2);
    assert_memory_equal(w.checksum, sum, sizeof(sum));
    assert_true(w.txn > snap);
    struct storage_write f = {.key = (const uint8_t *)"scan-new",
                              .key_len = 8,
                              .value = (const uint8_t *)"x",
                              .value_len = 1,
                              .version = 1};
    storage_submit(st, &f);
    wait_done(st, 1);
    assert_true(f.applied);
    assert_false(f.had_prev);
    storage_close(st);
}

static void test_full_map_refuses_writes_and_keeps_reads(void **state)
{
    (void)state;
    struct storage *st = open_sub("small", 1 << 20);
    static char value[100000];
    memset(value, 'x', sizeof(value) - 1);
    struct storage_write w = {.key = (const uint8_t *)"first",
                              .key_len = 5,
                              .value = (const uint8_t *)"kept",
                              .value_len = 4,
                              .version = 1};
    storage_submit(st, &w);
    wait_done(st, 1);
    assert_int_equal(w.result, 0);
    int full = 0;
    for (int i = 0; i < 40 && !full; i++) {
        char key[16];
        snprintf(key, sizeof(key), "big%d", i);
        struct storage_write b = {.key = (const uint8_t *)key,
                                  .key_len = strlen(key),
                                  .value = (const uint8_t *)value,
                                  .value_len = sizeof(value),
                                  .version = 2};
        storage_submit(st, &b);
        wait_done(st, 1);
        if (b.result == KV_ERR_FULL)
            full = 1;
        else
            assert_int_equal(b.result, 0);
    }
    assert_true(full);
    struct storage_record r;
    assert_int_equal(storage_get(st, (const uint8_t *)"first", 5, &r), 0);
    assert_memory_equal(r.value, "kept", 4);
    storage_record_free(&r);
    storage_close(st);
}

/* A write too large for what is left of the map fails alone: the small
 * writes committed with it (in one batch, most runs) still succeed. */
static void test_one_failing_write_does_not_fail_its_batch(void **state)
{
    (void)state;
    struct storage *st = open_sub("onefails", 1 << 20);
    static char huge[2 << 20];
    memset(huge, 'h', sizeof(huge));
    for (int round = 0; round < 5; round++) {
        struct storage_write ws[5];
        char keys[5][32];
        for (int i = 0; i < 5; i++) {
            snprintf(keys[i], sizeof(keys[i]), "r%d-%d", round, i);
            bool big = i == 2;
            ws[i] = (struct storage_write){.key = (const uint8_t *)keys[i],
                                           .key_len = strlen(keys[i]),
                                           .value = big ? (const uint8_t *)huge
                                                        : (const uint8_t *)"s",
                                           .value_len = big ? sizeof(huge) : 1,
                                           .version = 1};
            storage_submit(st, &ws[i]);
        }
        wait_done(st, 5);
        for (int i = 0; i < 5; i++)
            assert_int_equal(ws[i].result, i == 2 ? KV_ERR_FULL : 0);
    }
    storage_close(st);
}

static void
test_hints_are_kept_per_owner_bounded_and_never_read_as_data(void **state)
{
    (void)state;
    struct storage *st = open_sub("hints", 16 << 20);
    storage_set_hint_limit(st, 3);
    hint(st, STORAGE_PUT_HINT, 0xbb, "a", 5, 0, true);
    hint(st, STORAGE_PUT_HINT, 0xbb, "b", 5, 0, true);
    hint(st, STORAGE_PUT_HINT, 0xaa, "a", 5, 0, true);
    hint(st, STORAGE_PUT_HINT, 0xaa, "a", 4, 0, false); /* older: kept 5 */
    hint(st, STORAGE_PUT_HINT, 0xcc, "c", 5, KV_ERR_FULL, false);
    struct storage_record rec;
    assert_int_equal(storage_get(st, (const uint8_t *)"a", 1, &rec),
                     KV_ERR_NOT_FOUND);

    uint8_t owners[4][STORAGE_ORIGIN_BYTES];
    size_t n;
    assert_int_equal(storage_hint_owners(st, owners, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(owners[0][0], 0xaa);
    assert_int_equal(owners[1][0], 0xbb);
    struct storage_hint_count counts[4];
    uint64_t total;
    assert_int_equal(storage_hint_counts(st, counts, 4, &n, &total), 0);
    assert_int_equal(total, 3);
    assert_int_equal(counts[1].count, 2);

    struct storage_record *recs;
    assert_int_equal(storage_hints(st, owners[1], 8, &recs, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(recs[0].value_len, 1);
    storage_hints_free(recs, n);

    /* A deletion for an older version leaves a newer hint in place. */
    hint(st, STORAGE_DEL_HINT, 0xaa, "a", 4, 0, false);
    hint(st, STORAGE_DEL_HINT, 0xaa, "a", 5, 0, true);
    assert_int_equal(storage_hint_owners(st, owners, 4, &n), 0);
    assert_int_equal(n, 1);
    struct storage_stats ss;
    assert_int_equal(storage_stats(st, &ss), 0);
    assert_int_equal(ss.entries, 0); /* hints are not records */
    storage_close(st);
}

/* Large hints come back a few at a time (STORAGE_HINT_BATCH_BYTES), and
 * the queue counts what writes hold until the writer takes them. */
static void test_hint_batches_are_bounded_by_bytes(void **state)
{
    (void)state;
    struct storage *st = open_sub("hintbytes", 64 << 20);
    static uint8_t big[1 << 20];
    memset(big, 'h', sizeof(big));
    struct storage_write ws[10];
    char keys[10][16];
    for (int i = 0; i < 10; i++) {
        snprintf(keys[i], sizeof(keys[i]), "big%d", i);
        ws[i] = (struct storage_write){.op = STORAGE_PUT_HINT,
                                       .key = (const uint8_t *)keys[i],
                                       .key_len = strlen(keys[i]),
                                       .value = big,
                                       .value_len = sizeof(big),
                                       .version = 1};
        memset(ws[i].owner, 0xdd, sizeof(ws[i].owner));
        storage_submit(st, &ws[i]);
    }
    wait_done(st, 10);
    assert_int_equal(storage_queued_bytes(st), 0);
    uint8_t owner[STORAGE_ORIGIN_BYTES];
    memset(owner, 0xdd, sizeof(owner));
    struct storage_record *recs;
    size_t n;
    assert_int_equal(storage_hints(st, owner, 64, &recs, &n), 0);
    assert_int_equal(n, STORAGE_HINT_BATCH_BYTES / sizeof(big));
    storage_hints_free(recs, n);
    storage_close(st);
}

int main(void)
{
    assert_true(sodium_init() >= 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_token_is_a_fixed_format, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hint_batches_are_bounded_by_bytes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_one_failing_write_does_not_fail_its_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_get_survives_reopen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_the_highest_version_stored_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_last_writer_wins_by_version_then_origin, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_corrupted_record_is_reported_not_returned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_parse_rejects_damage, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_group_commit_batches_concurrent_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_full_map_refuses_writes_and_keeps_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_scan_reads_ranges_in_order_and_writes_report_what_they_replace,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_hints_are_kept_per_owner_bounded_and_never_read_as_data, setup,
            teardown),
    };
    /* Each test in a directory of its own: none depends on another. */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
