/* LMDB storage and the group-commit writer thread (DESIGN §4, §9).
 *
 * Record format (the LMDB value), version 1, all integers big-endian:
 *   u8 format (1) | u8 flags (bit 0: tombstone) | u64 version |
 *   origin[16] | checksum[16] | u16 key length | key | value
 * The checksum is BLAKE2b-128 of the value and is checked on every read. */
#include "storage.h"

#include "../common/common.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RECORD_FORMAT 1
#define RECORD_HDR                                                             \
    (1 + 1 + 8 + STORAGE_ORIGIN_BYTES + STORAGE_CHECKSUM_BYTES + 2)
#define LKEY_BYTES (8 + 32)
#define FLAG_TOMBSTONE 0x01
/* One transaction takes at most this many writes, so that a flood of puts
 * still gets answered in steady batches. */
#define MAX_BATCH 4096

struct storage {
    MDB_env *env;
    MDB_dbi dbi;       /* records: the unnamed database */
    MDB_dbi hints_dbi; /* "hints": owner ‖ record key -> record */
    MDB_dbi meta_dbi;  /* "meta": name -> value */
    uint64_t hint_limit;
    pthread_t writer;
    bool writer_running;
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;
    struct storage_write *queue, *queue_tail;
    struct storage_write *done, *done_tail;
    uint64_t queued_bytes; /* keys and values of the writes queued */
    bool stopping;
    uint64_t batches, writes;
    uint64_t max_version; /* the highest version ever stored ("meta") */
    storage_notify_fn notify;
    void *notify_arg;
};

static int map_mdb_err(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return KV_ERR_NOT_FOUND;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT:
    case MDB_TXN_FULL:
        return KV_ERR_FULL;
    case EACCES:
    case EROFS:
    case EPERM:
        return KV_ERR_READONLY;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return KV_ERR_CORRUPT;
    case ENOMEM:
        return KV_ERR_NOMEM;
    default:
        return KV_ERR_IO;
    }
}

uint64_t storage_token(const uint8_t *key, size_t len)
{
    uint8_t h[8];
    crypto_generichash(h, sizeof(h), key, len, NULL, 0);
    return be64_get(h);
}

void storage_checksum(uint8_t out[STORAGE_CHECKSUM_BYTES], const uint8_t *value,
                      size_t len)
{
    crypto_generichash(out, STORAGE_CHECKSUM_BYTES, value, len, NULL, 0);
}

static void make_lkey(uint8_t out[LKEY_BYTES], const uint8_t *key, size_t len)
{
    be64_put(out, storage_token(key, len));
    crypto_generichash(out + 8, 32, key, len, NULL, 0);
}

/* Parses a record; the value's checksum is checked only when verify. */
static int parse_record(const uint8_t *data, size_t len,
                        struct storage_record *rec, bool verify)
{
    if (len < RECORD_HDR)
        return KV_ERR_CORRUPT;
    if (data[0] != RECORD_FORMAT)
        return KV_ERR_VERSION;
    if (data[1] & ~FLAG_TOMBSTONE)
        return KV_ERR_CORRUPT;
    const uint8_t *p = data + 2;
    rec->tombstone = data[1] & FLAG_TOMBSTONE;
    rec->version = be64_get(p);
    p += 8;
    memcpy(rec->origin, p, STORAGE_ORIGIN_BYTES);
    p += STORAGE_ORIGIN_BYTES;
    memcpy(rec->checksum, p, STORAGE_CHECKSUM_BYTES);
    p += STORAGE_CHECKSUM_BYTES;
    size_t klen = ((size_t)p[0] << 8) | p[1];
    p += 2;
    if (klen == 0 || klen > STORAGE_MAX_KEY || klen > len - RECORD_HDR)
        return KV_ERR_CORRUPT;
    rec->key = p;
    rec->key_len = klen;
    rec->value = (uint8_t *)(p + klen);
    rec->value_len = len - RECORD_HDR - klen;
    if (rec->tombstone && rec->value_len)
        return KV_ERR_CORRUPT;
    if (!verify)
        return 0;
    uint8_t sum[STORAGE_CHECKSUM_BYTES];
    storage_checksum(sum, rec->value, rec->value_len);
    if (sodium_memcmp(sum, rec->checksum, sizeof(sum)) != 0)
        return KV_ERR_CORRUPT;
    return 0;
}

int storage_record_parse(const uint8_t *data, size_t len,
                         struct storage_record *rec)
{
    return parse_record(data, len, rec, true);
}

void storage_lkey(uint8_t out[STORAGE_LKEY_BYTES], const uint8_t *key,
                  size_t len)
{
    make_lkey(out, key, len);
}

/* Encodes w's record into an LMDB-reserved buffer of record_size(w) bytes. */
static size_t record_size(const struct storage_write *w)
{
    return RECORD_HDR + w->key_len + (w->tombstone ? 0 : w->value_len);
}

static void record_encode(uint8_t *p, const struct storage_write *w)
{
    size_t vlen = w->tombstone ? 0 : w->value_len;
    p[0] = RECORD_FORMAT;
    p[1] = w->tombstone ? FLAG_TOMBSTONE : 0;
    be64_put(p + 2, w->version);
    memcpy(p + 10, w->origin, STORAGE_ORIGIN_BYTES);
    storage_checksum(p + 10 + STORAGE_ORIGIN_BYTES, w->value, vlen);
    uint8_t *k = p + RECORD_HDR - 2;
    k[0] = (uint8_t)(w->key_len >> 8);
    k[1] = (uint8_t)w->key_len;
    memcpy(k + 2, w->key, w->key_len);
    if (vlen)
        memcpy(k + 2 + w->key_len, w->value, vlen);
}

bool storage_newer(uint64_t v1, const uint8_t *o1, uint64_t v2,
                   const uint8_t *o2)
{
    if (v1 != v2)
        return v1 > v2;
    return memcmp(o1, o2, STORAGE_ORIGIN_BYTES) > 0;
}

/* Applies one write inside txn. */
static int apply_write(struct storage *st, MDB_txn *txn,
                       struct storage_write *w)
{
    if (w->op == STORAGE_PUT_META) {
        MDB_val mk = {w->key_len, (void *)w->key},
                mv = {w->value_len, (void *)w->value};
        w->applied = true;
        if (w->value_len)
            return mdb_put(txn, st->meta_dbi, &mk, &mv, 0);
        int rc = mdb_del(txn, st->meta_dbi, &mk, NULL);
        return rc == MDB_NOTFOUND ? 0 : rc;
    }
    uint8_t lk[STORAGE_ORIGIN_BYTES + LKEY_BYTES];
    size_t off = w->op == STORAGE_PUT ? 0 : STORAGE_ORIGIN_BYTES;
    MDB_dbi dbi = w->op == STORAGE_PUT ? st->dbi : st->hints_dbi;
    memcpy(lk, w->owner, STORAGE_ORIGIN_BYTES);
    make_lkey(lk + off, w->key, w->key_len);
    memcpy(w->lkey, lk + off, LKEY_BYTES);
    MDB_val k = {.mv_size = off + LKEY_BYTES, .mv_data = lk}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (w->op == STORAGE_DEL_HINT) {
        struct storage_record old;
        w->applied = false;
        if (rc == MDB_NOTFOUND)
            return 0;
        if (rc)
            return rc;
        /* A newer hint that arrived meanwhile stays. */
        if (storage_record_parse(v.mv_data, v.mv_size, &old) == 0 &&
            storage_newer(old.version, old.origin, w->version, w->origin))
            return 0;
        w->applied = true;
        return mdb_del(txn, dbi, &k, NULL);
    }
    if (w->op == STORAGE_PUT_HINT && rc == MDB_NOTFOUND) {
        MDB_stat hs;
        if (mdb_stat(txn, dbi, &hs) == 0 && hs.ms_entries >= st->hint_limit) {
            w->applied = false;
            w->result = KV_ERR_FULL;
            return 0;
        }
    }
    w->had_prev = false;
    if (rc == 0) {
        struct storage_record old;
        /* A sound record is replaced only by a newer one. A damaged one is
         * replaced by the same version (a replica's copy, as scrub pulls
         * it) or a newer one, never by an older one, which could bring back
         * a value the damaged record had deleted (correctness review M1);
         * one whose header cannot be read is replaced by any write. */
        bool sound = storage_record_parse(v.mv_data, v.mv_size, &old) == 0;
        bool header =
            sound || parse_record(v.mv_data, v.mv_size, &old, false) == 0;
        if (header && (sound ? !storage_newer(w->version, w->origin,
                                              old.version, old.origin)
                             : storage_newer(old.version, old.origin,
                                             w->version, w->origin))) {
            w->applied = false;
            w->stored_version = old.version;
            return 0;
        }
        /* What it replaces, as anti-entropy's trees hold it: the header,
         * even of a record whose value is damaged. */
        if (parse_record(v.mv_data, v.mv_size, &old, false) == 0) {
            w->had_prev = true;
            w->prev_tombstone = old.tombstone;
            w->prev_version = old.version;
            memcpy(w->prev_origin, old.origin, STORAGE_ORIGIN_BYTES);
            memcpy(w->prev_checksum, old.checksum, STORAGE_CHECKSUM_BYTES);
        }
    } else if (rc != MDB_NOTFOUND) {
        return rc;
    }
    v.mv_size = record_size(w);
    rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
    if (rc)
        return rc;
    record_encode(v.mv_data, w);
    memcpy(w->checksum, (uint8_t *)v.mv_data + 10 + STORAGE_ORIGIN_BYTES,
           STORAGE_CHECKSUM_BYTES);
    w->txn = mdb_txn_id(txn);
    w->applied = true;
    w->stored_version = w->version;
    return 0;
}

/* The "meta" entry that keeps the highest version ever stored, so that a
 * node's clock restarts above every version it wrote (DESIGN §4). */
static const char META_MAX_VERSION[] = "max_version";

static int put_max_version(struct storage *st, MDB_txn *txn, uint64_t v)
{
    uint8_t buf[8];
    be64_put(buf, v);
    MDB_val k = {sizeof(META_MAX_VERSION) - 1, (void *)META_MAX_VERSION},
            val = {sizeof(buf), buf};
    return mdb_put(txn, st->meta_dbi, &k, &val, 0);
}

/* Commits the writes listed from batch in one transaction. @retval its
 * outcome, also in each write's result. */
static int commit_txn(struct storage *st, struct storage_write *batch)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    size_t n = 0;
    uint64_t max = st->max_version; /* only this thread writes it */
    for (struct storage_write *w = batch; w && rc == 0; w = w->next, n++) {
        rc = apply_write(st, txn, w);
        if (rc == 0 && w->applied && w->op != STORAGE_DEL_HINT &&
            w->version > max)
            max = w->version;
    }
    if (rc == 0 && max > st->max_version)
        rc = put_max_version(st, txn, max);
    if (rc == 0)
        rc = mdb_txn_commit(txn); /* one fsync for the whole batch */
    else if (txn)
        mdb_txn_abort(txn);
    txn = NULL;
    int err = map_mdb_err(rc);
    if (rc == 0 && max > st->max_version) {
        pthread_mutex_lock(&st->mu);
        st->max_version = max;
        pthread_mutex_unlock(&st->mu);
    }
    if (rc)
        log_error("storage: write batch of %zu failed: %s (%s)", n,
                  kv_strerror(err), mdb_strerror(rc));
    for (struct storage_write *w = batch; w; w = w->next) {
        if (err || w->result == 0)
            w->result = err; /* keeps a hint refused for the bound */
        if (err)
            w->applied = false;
    }
    return err;
}

/* One failing write aborts its whole transaction (a value too large for
 * what is left of the map): then each write of the batch goes again in a
 * transaction of its own, so that only those that fail are refused
 * (security review L9). */
static void commit_batch(struct storage *st, struct storage_write *batch)
{
    if (commit_txn(st, batch) == 0 || !batch->next)
        return;
    for (struct storage_write *w = batch, *next; w; w = next) {
        next = w->next;
        w->next = NULL;
        w->result = 0;
        commit_txn(st, w);
        w->next = next;
    }
}

/* What a queued write holds, as storage_queued_bytes counts it. */
static uint64_t write_bytes(const struct storage_write *w)
{
    return sizeof(*w) + w->key_len + w->value_len;
}

static void *writer_main(void *arg)
{
    struct storage *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->queue && !st->stopping)
            pthread_cond_wait(&st->cv, &st->mu);
        if (!st->queue && st->stopping)
            break;
        /* Take up to MAX_BATCH writes off the queue. */
        struct storage_write *batch = st->queue, *last = batch;
        size_t n = 1;
        uint64_t bytes = write_bytes(batch);
        while (last->next && n < MAX_BATCH) {
            last = last->next;
            bytes += write_bytes(last);
            n++;
        }
        st->queued_bytes -= bytes;
        st->queue = last->next;
        if (!st->queue)
            st->queue_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&st->mu);

        commit_batch(st, batch);

        pthread_mutex_lock(&st->mu);
        if (batch->result == 0) {
            st->batches++;
            st->writes += n;
        }
        if (st->done_tail)
            st->done_tail->next = batch;
        else
            st->done = batch;
        st->done_tail = last;
        pthread_mutex_unlock(&st->mu);
        if (st->notify)
            st->notify(st->notify_arg);
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Reads the highest version stored; a store written before "meta" kept it
 * is walked once to find it. */
static int load_max_version(struct storage *st, MDB_txn *txn)
{
    MDB_val k = {sizeof(META_MAX_VERSION) - 1, (void *)META_MAX_VERSION}, v;
    int rc = mdb_get(txn, st->meta_dbi, &k, &v);
    if (rc == 0 && v.mv_size == 8) {
        st->max_version = be64_get(v.mv_data);
        return 0;
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    MDB_dbi dbis[] = {st->dbi, st->hints_dbi};
    for (size_t d = 0; d < 2; d++) {
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, dbis[d], &cur)))
            return rc;
        for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            struct storage_record rec;
            if (k.mv_size >= LKEY_BYTES &&
                parse_record(v.mv_data, v.mv_size, &rec, false) == 0 &&
                rec.version > st->max_version)
                st->max_version = rec.version;
        }
        mdb_cursor_close(cur);
        if (rc != MDB_NOTFOUND)
            return rc;
    }
    return put_max_version(st, txn, st->max_version);
}

int storage_meta_get(struct storage *st, const char *name, uint8_t **out,
                     size_t *len)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return map_mdb_err(rc);
    MDB_val k = {strlen(name), (void *)name}, v;
    rc = mdb_get(txn, st->meta_dbi, &k, &v);
    int err = rc == MDB_NOTFOUND ? KV_ERR_NOT_FOUND : map_mdb_err(rc);
    if (rc == 0) {
        *out = malloc(v.mv_size ? v.mv_size : 1);
        if (*out) {
            memcpy(*out, v.mv_data, v.mv_size);
            *len = v.mv_size;
        } else {
            err = KV_ERR_NOMEM;
        }
    }
    mdb_txn_abort(txn);
    return err;
}

uint64_t storage_max_version(struct storage *st)
{
    pthread_mutex_lock(&st->mu);
    uint64_t v = st->max_version;
    pthread_mutex_unlock(&st->mu);
    return v;
}

int storage_open(struct storage **out, const char *dir, uint64_t map_size,
                 storage_notify_fn notify, void *notify_arg)
{
    struct storage *st = calloc(1, sizeof(*st));
    if (!st)
        return KV_ERR_NOMEM;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    st->notify = notify;
    st->notify_arg = notify_arg;
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&st->env);
    if (rc == 0)
        rc = mdb_env_set_mapsize(st->env, map_size);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(st->env, 3);
    if (rc == 0)
        rc = mdb_env_open(st->env, dir, MDB_NOTLS, 0600);
    if (rc == 0)
        rc = mdb_txn_begin(st->env, NULL, 0, &txn);
    if (rc == 0)
        rc = mdb_dbi_open(txn, NULL, 0, &st->dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "hints", MDB_CREATE, &st->hints_dbi);
    if (rc == 0)
        rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->meta_dbi);
    if (rc == 0)
        rc = load_max_version(st, txn);
    st->hint_limit = UINT64_MAX;
    if (rc == 0) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn)
        mdb_txn_abort(txn);
    if (rc == 0) {
        rc = pthread_create(&st->writer, NULL, writer_main, st);
        st->writer_running = rc == 0;
    }
    if (rc) {
        int err = map_mdb_err(rc);
        log_error("storage: cannot open %s: %s (%s)", dir, kv_strerror(err),
                  mdb_strerror(rc));
        storage_close(st);
        return err;
    }
    *out = st;
    return 0;
}

void storage_close(struct storage *st)
{
    if (!st)
        return;
    if (st->writer_running) {
        pthread_mutex_lock(&st->mu);
        st->stopping = true;
        pthread_cond_signal(&st->cv);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->writer, NULL);
    }
    if (st->env)
        mdb_env_close(st->env);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
}

/* Reads the record at LMDB key lk, checksum verified. With key given, the
 * record must hold that key, and only the value is copied (rec->key is the
 * caller's); without, the record must hash to lk, and its key and value are
 * copied into one allocation. */
static int read_record(struct storage *st, const uint8_t *lk,
                       const uint8_t *key, size_t len,
                       struct storage_record *rec)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc) {
        log_error("storage: read transaction: %s", mdb_strerror(rc));
        return map_mdb_err(rc);
    }
    MDB_val k = {.mv_size = LKEY_BYTES, .mv_data = (void *)lk}, v;
    rc = mdb_get(txn, st->dbi, &k, &v);
    int err = map_mdb_err(rc);
    if (rc == 0) {
        struct storage_record view;
        uint8_t check[LKEY_BYTES];
        err = storage_record_parse(v.mv_data, v.mv_size, &view);
        if (err == 0 && key &&
            (view.key_len != len || memcmp(view.key, key, len) != 0))
            err = KV_ERR_CORRUPT;
        if (err == 0 && !key) {
            make_lkey(check, view.key, view.key_len);
            if (memcmp(check, lk, LKEY_BYTES) != 0)
                err = KV_ERR_CORRUPT;
        }
        /* Copy out: LMDB's pages are only valid inside the txn. */
        size_t copy = view.value_len + (key ? 0 : view.key_len);
        uint8_t *buf = err ? NULL : malloc(copy ? copy : 1);
        if (err == 0 && !buf)
            err = KV_ERR_NOMEM;
        if (err == 0) {
            *rec = view;
            if (key) {
                rec->key = key;
                rec->value = buf;
            } else {
                memcpy(buf, view.key, view.key_len);
                rec->key = buf;
                rec->value = buf + view.key_len;
            }
            if (view.value_len)
                memcpy(rec->value, view.value, view.value_len);
        } else if (err != KV_ERR_NOMEM) {
            log_error("storage: record with token %016llx is corrupt: %s",
                      (unsigned long long)be64_get(lk), kv_strerror(err));
            err = KV_ERR_CORRUPT;
        }
    } else if (rc != MDB_NOTFOUND) {
        log_error("storage: read: %s", mdb_strerror(rc));
    }
    mdb_txn_abort(txn);
    return err;
}

int storage_get(struct storage *st, const uint8_t *key, size_t len,
                struct storage_record *rec)
{
    uint8_t lk[LKEY_BYTES];
    make_lkey(lk, key, len);
    return read_record(st, lk, key, len, rec);
}

void storage_record_free(struct storage_record *rec)
{
    free(rec->value);
    rec->value = NULL;
}

void storage_set_hint_limit(struct storage *st, uint64_t max)
{
    st->hint_limit = max;
}

/* What a scan's callback asks for next. */
enum { SCAN_NEXT = 0, SCAN_STOP = 1, SCAN_SEEK = 2 };

/* Walks database dbi from the first key at or after start (prefix bytes
 * of it), calling fn on each: SCAN_NEXT goes on, SCAN_SEEK jumps to the
 * first key at or after *seek, SCAN_STOP or an error (< 0) ends it. One read
 * transaction, whose id goes to *snapshot when that is not NULL. */
static int
scan_db(struct storage *st, MDB_dbi dbi, const uint8_t *start, size_t len,
        int (*fn)(void *arg, const MDB_val *k, const MDB_val *v, MDB_val *seek),
        void *arg, uint64_t *snapshot)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return map_mdb_err(rc);
    if (snapshot)
        *snapshot = mdb_txn_id(txn);
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc) {
        mdb_txn_abort(txn);
        return map_mdb_err(rc);
    }
    MDB_val k = {.mv_size = len, .mv_data = (void *)start}, v, seek;
    int step = SCAN_NEXT;
    rc = mdb_cursor_get(cur, &k, &v, len ? MDB_SET_RANGE : MDB_FIRST);
    while (rc == 0 && (step = fn(arg, &k, &v, &seek)) != SCAN_STOP &&
           step >= 0) {
        if (step == SCAN_SEEK) {
            k = seek;
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        } else {
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (step < 0)
        return step;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : map_mdb_err(rc);
}

struct hint_list {
    const uint8_t *owner;
    size_t max, n, bytes;
    struct storage_record *recs;
};

static int list_hint(void *arg, const MDB_val *k, const MDB_val *v,
                     MDB_val *seek)
{
    (void)seek;
    struct hint_list *hl = arg;
    struct storage_record rec;
    if (k->mv_size != STORAGE_ORIGIN_BYTES + LKEY_BYTES ||
        memcmp(k->mv_data, hl->owner, STORAGE_ORIGIN_BYTES) != 0)
        return SCAN_STOP; /* past this owner's hints */
    if (hl->n == hl->max || hl->bytes >= STORAGE_HINT_BATCH_BYTES)
        return SCAN_STOP;
    if (storage_record_parse(v->mv_data, v->mv_size, &rec) != 0) {
        log_error("storage: a hint is corrupt; skipping it");
        return SCAN_NEXT;
    }
    uint8_t *blob = malloc(rec.key_len + rec.value_len);
    if (!blob)
        return KV_ERR_NOMEM;
    memcpy(blob, rec.key, rec.key_len);
    memcpy(blob + rec.key_len, rec.value, rec.value_len);
    rec.key = blob;
    rec.value = blob + rec.key_len;
    hl->recs[hl->n++] = rec;
    hl->bytes += rec.key_len + rec.value_len;
    return SCAN_NEXT;
}

int storage_hints(struct storage *st, const uint8_t owner[STORAGE_ORIGIN_BYTES],
                  size_t max, struct storage_record **out, size_t *n)
{
    struct hint_list hl = {owner, max, 0, 0,
                           calloc(max ? max : 1, sizeof(*hl.recs))};
    if (!hl.recs)
        return KV_ERR_NOMEM;
    int rc = scan_db(st, st->hints_dbi, owner, STORAGE_ORIGIN_BYTES, list_hint,
                     &hl, NULL);
    if (rc) {
        storage_hints_free(hl.recs, hl.n);
        return rc;
    }
    *out = hl.recs;
    *n = hl.n;
    return 0;
}

void storage_hints_free(struct storage_record *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((void *)recs[i].key);
    free(recs);
}

struct hint_owners {
    uint8_t (*out)[STORAGE_ORIGIN_BYTES];
    size_t max, n;
    uint8_t next[STORAGE_ORIGIN_BYTES];
};

/* Takes the owner of the first hint, then seeks past all of its hints. */
static int take_owner(void *arg, const MDB_val *k, const MDB_val *v,
                      MDB_val *seek)
{
    (void)v;
    struct hint_owners *ho = arg;
    if (ho->n == ho->max || k->mv_size < STORAGE_ORIGIN_BYTES)
        return SCAN_STOP;
    memcpy(ho->out[ho->n++], k->mv_data, STORAGE_ORIGIN_BYTES);
    /* The next owner id up, as a big-endian number. */
    memcpy(ho->next, k->mv_data, STORAGE_ORIGIN_BYTES);
    int i = STORAGE_ORIGIN_BYTES - 1;
    while (i >= 0 && ++ho->next[i] == 0)
        i--;
    if (i < 0)
        return SCAN_STOP; /* the last possible owner */
    *seek = (MDB_val){.mv_size = sizeof(ho->next), .mv_data = ho->next};
    return SCAN_SEEK;
}

int storage_hint_owners(struct storage *st,
                        uint8_t (*out)[STORAGE_ORIGIN_BYTES], size_t max,
                        size_t *n)
{
    struct hint_owners ho = {.out = out, .max = max};
    int rc = scan_db(st, st->hints_dbi, NULL, 0, take_owner, &ho, NULL);
    *n = ho.n;
    return rc;
}

struct hint_census {
    struct storage_hint_count *out;
    size_t max, n;
    uint64_t total;
};

static int count_hint(void *arg, const MDB_val *k, const MDB_val *v,
                      MDB_val *seek)
{
    (void)v;
    (void)seek;
    struct hint_census *hc = arg;
    hc->total++;
    if (hc->n && memcmp(hc->out[hc->n - 1].owner, k->mv_data,
                        STORAGE_ORIGIN_BYTES) == 0) {
        hc->out[hc->n - 1].count++;
    } else if (hc->n < hc->max) {
        memcpy(hc->out[hc->n].owner, k->mv_data, STORAGE_ORIGIN_BYTES);
        hc->out[hc->n++].count = 1;
    }
    return SCAN_NEXT;
}

int storage_hint_counts(struct storage *st, struct storage_hint_count *out,
                        size_t max, size_t *n, uint64_t *total)
{
    struct hint_census hc = {out, max, 0, 0};
    int rc = scan_db(st, st->hints_dbi, NULL, 0, count_hint, &hc, NULL);
    *n = hc.n;
    *total = hc.total;
    return rc;
}

void storage_submit(struct storage *st, struct storage_write *w)
{
    w->next = NULL;
    w->result = 0;
    w->applied = false;
    pthread_mutex_lock(&st->mu);
    if (st->queue_tail)
        st->queue_tail->next = w;
    else
        st->queue = w;
    st->queue_tail = w;
    st->queued_bytes += write_bytes(w);
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

uint64_t storage_queued_bytes(struct storage *st)
{
    pthread_mutex_lock(&st->mu);
    uint64_t n = st->queued_bytes;
    pthread_mutex_unlock(&st->mu);
    return n;
}

struct storage_write *storage_completed(struct storage *st)
{
    pthread_mutex_lock(&st->mu);
    struct storage_write *list = st->done;
    st->done = st->done_tail = NULL;
    pthread_mutex_unlock(&st->mu);
    return list;
}

int storage_stats(struct storage *st, struct storage_stats *out)
{
    MDB_envinfo info;
    MDB_stat stat;
    int rc = mdb_env_info(st->env, &info);
    if (rc == 0)
        rc = mdb_env_stat(st->env, &stat);
    if (rc)
        return map_mdb_err(rc);
    MDB_txn *txn;
    MDB_stat dstat;
    if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) == 0) {
        if (mdb_stat(txn, st->dbi, &dstat) == 0)
            stat = dstat;
        mdb_txn_abort(txn);
    }
    /* The main database also holds the entries naming "hints" and "meta". */
    out->entries = stat.ms_entries >= 2 ? stat.ms_entries - 2 : 0;
    out->map_size = info.me_mapsize;
    out->map_used = (uint64_t)(info.me_last_pgno + 1) * stat.ms_psize;
    pthread_mutex_lock(&st->mu);
    out->batches = st->batches;
    out->writes = st->writes;
    pthread_mutex_unlock(&st->mu);
    return 0;
}

struct range_scan {
    uint64_t first, last;
    const uint8_t *after;
    storage_scan_fn fn;
    void *arg;
};

static int range_step(void *arg, const MDB_val *k, const MDB_val *v,
                      MDB_val *seek)
{
    (void)seek;
    struct range_scan *r = arg;
    if (k->mv_size != LKEY_BYTES)
        return SCAN_NEXT; /* a named database's entry, not a record */
    if (r->after && memcmp(k->mv_data, r->after, LKEY_BYTES) == 0)
        return SCAN_NEXT;
    uint64_t t = be64_get(k->mv_data);
    if (t > r->last || t < r->first)
        return SCAN_STOP;
    struct storage_record rec;
    bool sound = parse_record(v->mv_data, v->mv_size, &rec, false) == 0;
    if (!sound)
        memset(&rec, 0, sizeof(rec));
    return r->fn(r->arg, k->mv_data, &rec, sound) ? SCAN_STOP : SCAN_NEXT;
}

int storage_scan(struct storage *st, uint64_t first, uint64_t last,
                 const uint8_t *after, storage_scan_fn fn, void *arg,
                 uint64_t *snapshot)
{
    uint8_t start[LKEY_BYTES] = {0};
    if (after)
        memcpy(start, after, LKEY_BYTES);
    else
        be64_put(start, first);
    struct range_scan r = {first, last, after, fn, arg};
    int err = scan_db(st, st->dbi, start, LKEY_BYTES, range_step, &r, snapshot);
    if (err)
        log_error("storage: scan: %s", kv_strerror(err));
    return err;
}

int storage_get_lkey(struct storage *st, const uint8_t *lkey,
                     struct storage_record *rec)
{
    return read_record(st, lkey, NULL, 0, rec);
}

void storage_record_free_all(struct storage_record *rec)
{
    free((void *)rec->key);
    rec->key = NULL;
    rec->value = NULL;
}

/* ---- the storage port over LMDB ---- */

static int port_get(void *ctx, const uint8_t *key, size_t len,
                    struct storage_record *rec)
{
    return storage_get(ctx, key, len, rec);
}

static int port_get_lkey(void *ctx, const uint8_t *lkey,
                         struct storage_record *rec)
{
    return storage_get_lkey(ctx, lkey, rec);
}

static void port_submit(void *ctx, struct storage_write *w)
{
    storage_submit(ctx, w);
}

static int port_scan(void *ctx, uint64_t first, uint64_t last,
                     const uint8_t *after, storage_scan_fn fn, void *arg,
                     uint64_t *snapshot)
{
    return storage_scan(ctx, first, last, after, fn, arg, snapshot);
}

static int port_hints(void *ctx, const uint8_t owner[STORAGE_ORIGIN_BYTES],
                      size_t max, struct storage_record **out, size_t *n)
{
    return storage_hints(ctx, owner, max, out, n);
}

static int port_hint_owners(void *ctx, uint8_t (*out)[STORAGE_ORIGIN_BYTES],
                            size_t max, size_t *n)
{
    return storage_hint_owners(ctx, out, max, n);
}

static uint64_t port_max_version(void *ctx)
{
    return storage_max_version(ctx);
}

static int port_meta_get(void *ctx, const char *name, uint8_t **out,
                         size_t *len)
{
    return storage_meta_get(ctx, name, out, len);
}

const struct storage_port storage_lmdb = {
    .get = port_get,
    .get_lkey = port_get_lkey,
    .submit = port_submit,
    .scan = port_scan,
    .hints = port_hints,
    .hint_owners = port_hint_owners,
    .max_version = port_max_version,
    .meta_get = port_meta_get,
};
