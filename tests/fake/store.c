/* The storage port in memory (store.h). Records sit in one array; reads
 * that must come out in LMDB-key order sort what they select. */
#include "store.h"

#include "../../common/common.h"

#include <stdlib.h>
#include <string.h>

#define FAKE_META_MAX 8

/* A record, or a hint held for owner. */
struct mrec {
    bool hint;
    uint8_t owner[STORAGE_ORIGIN_BYTES];
    uint8_t *key, *value; /* one allocation */
    size_t klen, vlen;
    uint64_t version;
    uint8_t origin[STORAGE_ORIGIN_BYTES];
    bool tombstone;
    uint8_t lkey[STORAGE_LKEY_BYTES];
    uint8_t checksum[STORAGE_CHECKSUM_BYTES];
};

struct fake_store {
    struct mrec *recs;
    size_t n, cap;
    uint64_t txn;         /* bumped by every applied write, as LMDB's txn ids */
    uint64_t max_version; /* as storage_max_version */
    struct storage_write *q, *q_tail; /* submitted, not yet applied */
    void (*hook)(void *arg, struct storage_write *w);
    void *hook_arg;
    int fail; /* every write fails with this (fake_store_fail) */
    struct {
        char name[64];
        uint8_t *value;
        size_t len;
    } meta[FAKE_META_MAX]; /* STORAGE_PUT_META; empty name: free slot */
};

struct fake_store *fake_store_new(void)
{
    struct fake_store *fs = calloc(1, sizeof(*fs));
    if (!fs)
        abort();
    return fs;
}

void fake_store_wipe(struct fake_store *fs)
{
    for (size_t k = 0; k < fs->n; k++)
        free(fs->recs[k].key);
    fs->n = 0;
    fs->max_version = 0;
    for (size_t k = 0; k < FAKE_META_MAX; k++) {
        free(fs->meta[k].value);
        memset(&fs->meta[k], 0, sizeof(fs->meta[k]));
    }
}

static size_t meta_slot(struct fake_store *fs, const uint8_t *name, size_t len)
{
    for (size_t k = 0; k < FAKE_META_MAX; k++)
        if (strlen(fs->meta[k].name) == len &&
            memcmp(fs->meta[k].name, name, len) == 0)
            return k;
    return SIZE_MAX;
}

static void apply_meta(struct fake_store *fs, struct storage_write *w)
{
    size_t k = meta_slot(fs, w->key, w->key_len);
    if (k == SIZE_MAX && w->value_len)
        k = meta_slot(fs, (const uint8_t *)"", 0);
    if (k == SIZE_MAX || w->key_len >= sizeof(fs->meta[0].name)) {
        if (w->value_len)
            w->result = KV_ERR_FULL;
        return;
    }
    free(fs->meta[k].value);
    memset(&fs->meta[k], 0, sizeof(fs->meta[k]));
    w->applied = true;
    if (!w->value_len)
        return;
    memcpy(fs->meta[k].name, w->key, w->key_len);
    fs->meta[k].value = malloc(w->value_len);
    if (!fs->meta[k].value)
        abort();
    memcpy(fs->meta[k].value, w->value, w->value_len);
    fs->meta[k].len = w->value_len;
}

void fake_store_free(struct fake_store *fs)
{
    if (!fs)
        return;
    fake_store_wipe(fs);
    free(fs->recs);
    free(fs);
}

void fake_store_set_submit_hook(struct fake_store *fs,
                                void (*hook)(void *arg,
                                             struct storage_write *w),
                                void *arg)
{
    fs->hook = hook;
    fs->hook_arg = arg;
}

static struct mrec *find(struct fake_store *fs, bool hint, const uint8_t *owner,
                         const uint8_t *lkey)
{
    for (size_t k = 0; k < fs->n; k++) {
        struct mrec *m = &fs->recs[k];
        if (m->hint == hint && memcmp(m->lkey, lkey, STORAGE_LKEY_BYTES) == 0 &&
            (!hint || memcmp(m->owner, owner, STORAGE_ORIGIN_BYTES) == 0))
            return m;
    }
    return NULL;
}

static void remove_rec(struct fake_store *fs, struct mrec *m)
{
    free(m->key);
    *m = fs->recs[--fs->n];
}

/* Stores w's record in m (a new slot or the one it replaces). */
static void fill(struct mrec *m, const struct storage_write *w, bool hint)
{
    size_t vlen = w->tombstone ? 0 : w->value_len;
    free(m->key);
    m->key = malloc(w->key_len + vlen + 1);
    if (!m->key)
        abort();
    memcpy(m->key, w->key, w->key_len);
    if (vlen)
        memcpy(m->key + w->key_len, w->value, vlen);
    m->value = m->key + w->key_len;
    m->klen = w->key_len;
    m->vlen = vlen;
    m->hint = hint;
    memcpy(m->owner, w->owner, STORAGE_ORIGIN_BYTES);
    m->version = w->version;
    memcpy(m->origin, w->origin, STORAGE_ORIGIN_BYTES);
    m->tombstone = w->tombstone;
    memcpy(m->lkey, w->lkey, STORAGE_LKEY_BYTES);
    storage_checksum(m->checksum, m->value, m->vlen);
}

void fake_store_fail(struct fake_store *fs, int code)
{
    fs->fail = code;
}

void fake_store_apply(struct fake_store *fs, struct storage_write *w)
{
    bool hint = w->op != STORAGE_PUT;
    storage_lkey(w->lkey, w->key, w->key_len);
    w->result = fs->fail;
    w->applied = false;
    w->had_prev = false;
    if (fs->fail)
        return; /* nothing of the batch is committed, as with LMDB */
    if (w->op == STORAGE_PUT_META) {
        apply_meta(fs, w);
        return;
    }
    struct mrec *m = find(fs, hint, w->owner, w->lkey);
    if (w->op == STORAGE_DEL_HINT) {
        /* A newer hint that arrived meanwhile stays. */
        if (m && !storage_newer(m->version, m->origin, w->version, w->origin)) {
            remove_rec(fs, m);
            w->applied = true;
        }
        return;
    }
    if (m && !storage_newer(w->version, w->origin, m->version, m->origin)) {
        w->stored_version = m->version;
        return;
    }
    if (m) {
        w->had_prev = true;
        w->prev_version = m->version;
        memcpy(w->prev_origin, m->origin, STORAGE_ORIGIN_BYTES);
        w->prev_tombstone = m->tombstone;
        memcpy(w->prev_checksum, m->checksum, STORAGE_CHECKSUM_BYTES);
    } else {
        if (fs->n == fs->cap) {
            fs->cap = fs->cap ? 2 * fs->cap : 64;
            fs->recs = realloc(fs->recs, fs->cap * sizeof(*fs->recs));
            if (!fs->recs)
                abort();
        }
        m = &fs->recs[fs->n++];
        memset(m, 0, sizeof(*m));
    }
    fill(m, w, hint);
    if (w->version > fs->max_version)
        fs->max_version = w->version;
    memcpy(w->checksum, m->checksum, STORAGE_CHECKSUM_BYTES);
    w->txn = ++fs->txn;
    w->applied = true;
    w->stored_version = w->version;
}

struct storage_write *fake_store_completed(struct fake_store *fs)
{
    struct storage_write *list = fs->q;
    for (struct storage_write *w = list; w; w = w->next)
        fake_store_apply(fs, w);
    fs->q = fs->q_tail = NULL;
    return list;
}

bool fake_store_lookup(struct fake_store *fs, const uint8_t *key, size_t len,
                       uint64_t *version, bool *tombstone)
{
    uint8_t lkey[STORAGE_LKEY_BYTES];
    storage_lkey(lkey, key, len);
    struct mrec *m = find(fs, false, NULL, lkey);
    if (m && version)
        *version = m->version;
    if (m && tombstone)
        *tombstone = m->tombstone;
    return m != NULL;
}

bool fake_store_corrupt(struct fake_store *fs, const uint8_t *key, size_t len)
{
    uint8_t lkey[STORAGE_LKEY_BYTES];
    storage_lkey(lkey, key, len);
    struct mrec *m = find(fs, false, NULL, lkey);
    if (!m || m->vlen == 0)
        return false;
    m->value[0] ^= 0x40; /* the stored checksum stays: it no longer fits */
    return true;
}

size_t fake_store_value(struct fake_store *fs, const uint8_t *key, size_t len,
                        uint8_t *out, size_t cap)
{
    uint8_t lkey[STORAGE_LKEY_BYTES];
    storage_lkey(lkey, key, len);
    struct mrec *m = find(fs, false, NULL, lkey);
    if (!m)
        return SIZE_MAX;
    memcpy(out, m->value, m->vlen < cap ? m->vlen : cap);
    return m->vlen;
}

size_t fake_store_records(const struct fake_store *fs)
{
    size_t n = 0;
    for (size_t k = 0; k < fs->n; k++)
        n += !fs->recs[k].hint;
    return n;
}

size_t fake_store_hint_count(const struct fake_store *fs)
{
    return fs->n - fake_store_records(fs);
}

/* ---- the port ---- */

/* A record as storage hands it out: key and value in one allocation at
 * r->key, r->value pointing into it. */
static int copy_out(const struct mrec *m, struct storage_record *r)
{
    uint8_t *blob = malloc(m->klen + m->vlen + 1);
    if (!blob)
        return KV_ERR_NOMEM;
    memcpy(blob, m->key, m->klen + m->vlen);
    memset(r, 0, sizeof(*r));
    r->key = blob;
    r->key_len = m->klen;
    r->value = blob + m->klen;
    r->value_len = m->vlen;
    r->version = m->version;
    memcpy(r->origin, m->origin, STORAGE_ORIGIN_BYTES);
    r->tombstone = m->tombstone;
    memcpy(r->checksum, m->checksum, STORAGE_CHECKSUM_BYTES);
    return 0;
}

static int port_get(void *ctx, const uint8_t *key, size_t len,
                    struct storage_record *rec)
{
    uint8_t lkey[STORAGE_LKEY_BYTES];
    storage_lkey(lkey, key, len);
    struct mrec *m = find(ctx, false, NULL, lkey);
    if (!m)
        return KV_ERR_NOT_FOUND;
    /* As storage_get: the key is the caller's, the value malloc'd alone. */
    memset(rec, 0, sizeof(*rec));
    rec->version = m->version;
    memcpy(rec->origin, m->origin, STORAGE_ORIGIN_BYTES);
    rec->tombstone = m->tombstone;
    memcpy(rec->checksum, m->checksum, STORAGE_CHECKSUM_BYTES);
    rec->key = key;
    rec->key_len = len;
    rec->value = malloc(m->vlen + 1);
    if (!rec->value)
        return KV_ERR_NOMEM;
    memcpy(rec->value, m->value, m->vlen);
    rec->value_len = m->vlen;
    return 0;
}

static int port_get_lkey(void *ctx, const uint8_t *lkey,
                         struct storage_record *rec)
{
    struct mrec *m = find(ctx, false, NULL, lkey);
    return m ? copy_out(m, rec) : KV_ERR_NOT_FOUND;
}

static void port_submit(void *ctx, struct storage_write *w)
{
    struct fake_store *fs = ctx;
    if (fs->hook) {
        fs->hook(fs->hook_arg, w);
        return;
    }
    w->next = NULL;
    if (fs->q_tail)
        fs->q_tail->next = w;
    else
        fs->q = w;
    fs->q_tail = w;
}

static int cmp_lkey(const void *a, const void *b)
{
    const struct mrec *const *x = a, *const *y = b;
    return memcmp((*x)->lkey, (*y)->lkey, STORAGE_LKEY_BYTES);
}

/* The records (hint false) or an owner's hints, in LMDB-key order, whose
 * tokens lie in [first, last] and that come after `after`. */
static struct mrec **select_sorted(struct fake_store *fs, bool hint,
                                   const uint8_t *owner, uint64_t first,
                                   uint64_t last, const uint8_t *after,
                                   size_t *n)
{
    struct mrec **sel = malloc((fs->n ? fs->n : 1) * sizeof(*sel));
    if (!sel)
        return NULL;
    *n = 0;
    for (size_t k = 0; k < fs->n; k++) {
        struct mrec *m = &fs->recs[k];
        uint64_t t = be64_get(m->lkey);
        if (m->hint == hint &&
            (!hint || memcmp(m->owner, owner, STORAGE_ORIGIN_BYTES) == 0) &&
            t >= first && t <= last &&
            (!after || memcmp(m->lkey, after, STORAGE_LKEY_BYTES) > 0))
            sel[(*n)++] = m;
    }
    qsort(sel, *n, sizeof(*sel), cmp_lkey);
    return sel;
}

static int port_scan(void *ctx, uint64_t first, uint64_t last,
                     const uint8_t *after, storage_scan_fn fn, void *arg,
                     uint64_t *snapshot)
{
    struct fake_store *fs = ctx;
    if (snapshot)
        *snapshot = fs->txn;
    size_t n;
    struct mrec **sel = select_sorted(fs, false, NULL, first, last, after, &n);
    if (!sel)
        return KV_ERR_NOMEM;
    for (size_t k = 0; k < n; k++) {
        struct storage_record rec = {
            .version = sel[k]->version,
            .tombstone = sel[k]->tombstone,
            .key = sel[k]->key,
            .key_len = sel[k]->klen,
            .value = sel[k]->value,
            .value_len = sel[k]->vlen,
        };
        memcpy(rec.origin, sel[k]->origin, STORAGE_ORIGIN_BYTES);
        memcpy(rec.checksum, sel[k]->checksum, STORAGE_CHECKSUM_BYTES);
        if (fn(arg, sel[k]->lkey, &rec, true))
            break;
    }
    free(sel);
    return 0;
}

static int port_hints(void *ctx, const uint8_t owner[STORAGE_ORIGIN_BYTES],
                      size_t max, struct storage_record **out, size_t *n)
{
    size_t sel_n;
    struct mrec **sel =
        select_sorted(ctx, true, owner, 0, UINT64_MAX, NULL, &sel_n);
    struct storage_record *recs = calloc(max ? max : 1, sizeof(*recs));
    if (!sel || !recs) {
        free(sel);
        free(recs);
        return KV_ERR_NOMEM;
    }
    size_t got = 0;
    for (; got < sel_n && got < max; got++)
        if (copy_out(sel[got], &recs[got]) != 0)
            abort();
    free(sel);
    *out = recs;
    *n = got;
    return 0;
}

static int port_hint_owners(void *ctx, uint8_t (*out)[STORAGE_ORIGIN_BYTES],
                            size_t max, size_t *n)
{
    struct fake_store *fs = ctx;
    *n = 0;
    for (size_t k = 0; k < fs->n; k++) {
        struct mrec *m = &fs->recs[k];
        if (!m->hint)
            continue;
        size_t j = 0; /* kept in id order, as storage gives them */
        while (j < *n && memcmp(out[j], m->owner, STORAGE_ORIGIN_BYTES) < 0)
            j++;
        if ((j < *n && memcmp(out[j], m->owner, STORAGE_ORIGIN_BYTES) == 0) ||
            j >= max)
            continue;
        size_t keep = *n < max ? *n : max - 1; /* the first max by id */
        memmove(out[j + 1], out[j], (keep - j) * STORAGE_ORIGIN_BYTES);
        memcpy(out[j], m->owner, STORAGE_ORIGIN_BYTES);
        *n = keep + 1;
    }
    return 0;
}

static uint64_t port_max_version(void *ctx)
{
    return ((struct fake_store *)ctx)->max_version;
}

static int port_meta_get(void *ctx, const char *name, uint8_t **out,
                         size_t *len)
{
    struct fake_store *fs = ctx;
    size_t k = meta_slot(fs, (const uint8_t *)name, strlen(name));
    if (k == SIZE_MAX || !*name)
        return KV_ERR_NOT_FOUND;
    *out = malloc(fs->meta[k].len);
    if (!*out)
        return KV_ERR_NOMEM;
    memcpy(*out, fs->meta[k].value, fs->meta[k].len);
    *len = fs->meta[k].len;
    return 0;
}

const struct storage_port fake_store_port = {
    .get = port_get,
    .get_lkey = port_get_lkey,
    .submit = port_submit,
    .scan = port_scan,
    .hints = port_hints,
    .hint_owners = port_hint_owners,
    .max_version = port_max_version,
    .meta_get = port_meta_get,
};
