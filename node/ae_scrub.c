/* Anti-entropy's scrub: every stored value re-hashed against its checksum,
 * a slice per tick; what fails is pulled from a replica (ae_int.h). */
#include "ae_int.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- scrub ---- */

/* A scrub, like a build, reads the store a slice at a time. */
struct scrub {
    struct ae *ae;
    uint8_t *data;
    uint64_t *off;
    uint8_t (*lkeys)[LKEY];
    uint8_t (*sums)[STORAGE_CHECKSUM_BYTES];
    uint8_t *hashes;
    size_t n, bytes;
    size_t seen; /* records this slice went through */
    bool has_cursor;
    uint8_t cursor[LKEY]; /* the last key read */
    int err;
};

void ae_add_corrupt(struct ae *ae, const uint8_t *lkey, const char *what)
{
    ae->c.corrupt++;
    ae->rd.corrupt++;
    log_error("scrub: record with token %016llx is corrupt (%s); it will be "
              "replaced from a replica",
              (unsigned long long)be64_get(lkey), what);
    if (ae->n_corrupt == MAX_CORRUPT)
        return; /* the next scrub finds the rest */
    memcpy(ae->corrupt[ae->n_corrupt].lkey, lkey, LKEY);
    ae->corrupt[ae->n_corrupt++].fixed = false;
}

static int scrub_flush(struct scrub *s)
{
    if (s->n == 0)
        return 0;
    int rc = s->ae->env.hash(s->ae->env.ctx, s->data, s->off, s->n,
                             STORAGE_CHECKSUM_BYTES, s->hashes);
    if (rc)
        return rc;
    for (size_t i = 0; i < s->n; i++)
        if (sodium_memcmp(s->hashes + i * STORAGE_CHECKSUM_BYTES, s->sums[i],
                          STORAGE_CHECKSUM_BYTES) != 0)
            ae_add_corrupt(s->ae, s->lkeys[i], "its value fails its checksum");
    s->ae->c.scrubbed += s->n;
    s->ae->rd.scrubbed += s->n;
    s->n = s->bytes = 0;
    return 0;
}

static int scrub_record(void *arg, const uint8_t *lkey,
                        const struct storage_record *rec, bool sound)
{
    struct scrub *s = arg;
    if (s->seen == s->ae->cfg.build_batch)
        return 1; /* the next slice starts here */
    s->seen++;
    memcpy(s->cursor, lkey, LKEY);
    if (!sound) {
        s->ae->c.scrubbed++;
        s->ae->rd.scrubbed++;
        ae_add_corrupt(s->ae, lkey, "its header cannot be read");
        return 0;
    }
    if ((s->n == HASH_BATCH || s->bytes + rec->value_len > SCRUB_BATCH_BYTES) &&
        (s->err = scrub_flush(s)) != 0)
        return 1;
    if (rec->value_len > SCRUB_BATCH_BYTES) {
        uint8_t sum[STORAGE_CHECKSUM_BYTES];
        storage_checksum(sum, rec->value, rec->value_len);
        if (sodium_memcmp(sum, rec->checksum, sizeof(sum)) != 0)
            ae_add_corrupt(s->ae, lkey, "its value fails its checksum");
        s->ae->c.scrubbed++;
        s->ae->rd.scrubbed++;
        return 0;
    }
    memcpy(s->data + s->bytes, rec->value, rec->value_len);
    s->off[s->n] = s->bytes;
    s->bytes += rec->value_len;
    s->off[s->n + 1] = s->bytes;
    memcpy(s->lkeys[s->n], lkey, LKEY);
    memcpy(s->sums[s->n], rec->checksum, STORAGE_CHECKSUM_BYTES);
    s->n++;
    return 0;
}

void ae_scrub_free(struct ae *ae)
{
    struct scrub *s = ae->scrub;
    if (!s)
        return;
    free(s->data);
    free(s->off);
    free(s->lkeys);
    free(s->sums);
    free(s->hashes);
    free(s);
    ae->scrub = NULL;
}

int ae_scrub_begin(struct ae *ae)
{
    ae_scrub_free(ae);
    ae->n_corrupt = 0;
    struct scrub *s = calloc(1, sizeof(*s));
    ae->scrub = s;
    if (!s)
        return KV_ERR_NOMEM;
    s->ae = ae;
    s->data = malloc(SCRUB_BATCH_BYTES);
    s->off = malloc((HASH_BATCH + 1) * sizeof(*s->off));
    s->lkeys = malloc((size_t)HASH_BATCH * LKEY);
    s->sums = malloc((size_t)HASH_BATCH * STORAGE_CHECKSUM_BYTES);
    s->hashes = malloc((size_t)HASH_BATCH * STORAGE_CHECKSUM_BYTES);
    if (!s->data || !s->off || !s->lkeys || !s->sums || !s->hashes) {
        ae_scrub_free(ae);
        return KV_ERR_NOMEM;
    }
    return 0;
}

/* Re-hashes one slice of stored values; what fails goes to ae->corrupt.
 * @retval 1 the scrub is done. @retval 0 more to read. @retval a kv_err. */
int ae_scrub_step(struct ae *ae)
{
    struct scrub *s = ae->scrub;
    s->seen = 0;
    int rc = ae->env.store->scan(ae->env.store_ctx, 0, UINT64_MAX,
                                 s->has_cursor ? s->cursor : NULL, scrub_record,
                                 s, NULL);
    if (rc == 0)
        rc = s->err;
    if (rc == 0)
        rc = scrub_flush(s);
    if (rc)
        return rc;
    s->has_cursor = true;
    return s->seen < ae->cfg.build_batch;
}
