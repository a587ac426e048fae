/* Anti-entropy's trees: which ranges this node shares with each other node,
 * and one Merkle tree per range and peer, built from the store in slices and
 * kept current by every write (ae_int.h). */
#include "ae_int.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ae_config_defaults(struct ae_config *cfg)
{
    ring_placement_set_n(&cfg->placement, 3);
    cfg->interval_ms = 60000;
    cfg->scrub_interval_ms = 24u * 3600 * 1000;
    cfg->step_timeout_ms = 10000;
    cfg->max_message_bytes = PROTO_DEFAULT_MAX_VALUE;
    cfg->max_clock_offset_ms = HLC_MAX_OFFSET_MS;
    cfg->build_batch = 65536;
    cfg->build_steps = 2;
}

uint32_t ae_range_of(uint64_t token)
{
    return (uint32_t)(token >> (64 - AE_RANGE_BITS));
}

static size_t gseg_of(uint64_t token)
{
    return (size_t)(token >> SEG_SHIFT);
}

static void leaf_item(uint8_t out[LEAF_ITEM], const uint8_t *lkey,
                      uint64_t version, const uint8_t *origin, bool tombstone,
                      const uint8_t *checksum)
{
    memcpy(out, lkey, LKEY);
    be64_put(out + LKEY, version);
    memcpy(out + LKEY + 8, origin, ID_BYTES);
    out[LKEY + 8 + ID_BYTES] = tombstone;
    memcpy(out + LKEY + 9 + ID_BYTES, checksum, STORAGE_CHECKSUM_BYTES);
}

void ae_record_hash(uint8_t out[AE_HASH_BYTES], const uint8_t *lkey,
                    uint64_t version, const uint8_t *origin, bool tombstone,
                    const uint8_t *checksum)
{
    uint8_t item[LEAF_ITEM];
    leaf_item(item, lkey, version, origin, tombstone, checksum);
    crypto_generichash(out, AE_HASH_BYTES, item, sizeof(item), NULL, 0);
}

int ae_lkeys_add(struct lkeys *l, const uint8_t *k)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        void *p = realloc(l->k, cap * LKEY);
        if (!p)
            return KV_ERR_NOMEM;
        l->k = p;
        l->cap = cap;
    }
    memcpy(l->k[l->n++], k, LKEY);
    return 0;
}

/* ---- the ring ---- */

long ae_node_index(const struct ae *ae, const uint8_t id[ID_BYTES])
{
    for (size_t i = 0; i < ae->n_nodes; i++)
        if (memcmp(ae->ids[i], id, ID_BYTES) == 0)
            return (long)i;
    return -1;
}

/* The interval holding token. */
static const struct interval *interval_of(const struct ae *ae, uint64_t t)
{
    size_t lo = 0, hi = ae->n_iv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ae->iv[mid].last < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return &ae->iv[lo == ae->n_iv ? 0 : lo];
}

static bool holds(const struct interval *iv, size_t node)
{
    for (size_t i = 0; i < iv->n; i++)
        if (iv->rep[i] == node)
            return true;
    return false;
}

/* A node's rank in range r (splitmix64 of its id and the range): of an
 * interval's replicas in one region, the highest ranked compares the
 * interval with the other regions. The same node wins most intervals of a
 * range (all of them when the region holds every key), so a range crosses
 * the WAN in one exchange per pair of regions; mixing in the range spreads
 * that work over the region's nodes. */
static uint64_t range_rank(const uint8_t id[ID_BYTES], uint32_t r)
{
    uint64_t x = be64_get(id) ^ ((uint64_t)(r + 1) * 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* node is the interval's highest ranked replica in its region for r. */
static bool speaks_for_region(const struct ae *ae, const struct interval *iv,
                              size_t node, uint32_t r)
{
    uint64_t mine = range_rank(ae->ids[node], r);
    for (size_t i = 0; i < iv->n; i++) {
        size_t p = iv->rep[i];
        if (p != node && ae->region[p] == ae->region[node] &&
            range_rank(ae->ids[p], r) > mine)
            return false;
    }
    return true;
}

/* Both this node and peer hold token. */
bool ae_shares(const struct ae *ae, uint64_t t, size_t peer)
{
    const struct interval *iv = interval_of(ae, t);
    return ae->self_idx >= 0 && holds(iv, (size_t)ae->self_idx) &&
           holds(iv, peer);
}

static void drop_trees(struct ae *ae)
{
    ae_build_free(ae);
    for (size_t i = 0; ae->trees && i < ae->n_nodes; i++)
        free(ae->trees[i]);
    free(ae->trees);
    ae->trees = NULL;
    ae->trees_valid = false;
    ae->n_slices = 0;
}

void ae_drop_ring(struct ae *ae)
{
    drop_trees(ae);
    free(ae->ids);
    free(ae->iv);
    free(ae->shared);
    free(ae->cross);
    free(ae->region);
    ae->ids = NULL;
    ae->iv = NULL;
    ae->shared = NULL;
    ae->cross = NULL;
    ae->region = NULL;
    ae->n_nodes = ae->n_iv = 0;
    ae->self_idx = -1;
    ae->have_ring = false;
}

static void fingerprint(const struct ring *ring, const struct ring_placement *p,
                        uint8_t out[AE_RING_BYTES])
{
    char text[GOSSIP_REPLICAS_MAX];
    ring_placement_format(p, text, sizeof(text));
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, AE_RING_BYTES);
    uint8_t hdr[16];
    be64_put(hdr, ring_size(ring));
    be32_put(hdr + 8, (uint32_t)ring_token_count(ring));
    be32_put(hdr + 12, ring_placement_total(p));
    crypto_generichash_update(&st, hdr, sizeof(hdr));
    crypto_generichash_update(&st, (const uint8_t *)text, strlen(text));
    /* Nodes, and where they are: a zone or region change moves replicas. */
    for (size_t i = 0; i < ring_size(ring); i++) {
        const struct ring_node *rn = ring_node_at(ring, i);
        crypto_generichash_update(&st, rn->id, ID_BYTES);
        const char *names[] = {rn->region, rn->zone};
        for (size_t k = 0; k < 2; k++) {
            uint8_t len = (uint8_t)strnlen(names[k], GOSSIP_NAME_MAX);
            crypto_generichash_update(&st, &len, 1);
            crypto_generichash_update(&st, (const uint8_t *)names[k], len);
        }
    }
    crypto_generichash_final(&st, out, AE_RING_BYTES);
}

void ae_set_ring(struct ae *ae, const struct ring *ring)
{
    uint8_t fp[AE_RING_BYTES];
    if (ring)
        fingerprint(ring, &ae->cfg.placement, fp);
    if ((!ring && !ae->have_ring) ||
        (ring && ae->have_ring && memcmp(fp, ae->fp, sizeof(fp)) == 0))
        return;
    if (ae->rd.active)
        ae_round_end(
            ae, KV_ERR_UNAVAILABLE,
            "the cluster's membership changed during the round; run it "
            "again");
    ae_drop_ring(ae);
    if (!ring)
        return;
    size_t n = ring_size(ring), nt = ring_token_count(ring);
    ae->ids = malloc(n * ID_BYTES);
    ae->iv = malloc(nt * sizeof(*ae->iv));
    ae->shared = calloc(n, sizeof(*ae->shared));
    ae->cross = calloc(n, sizeof(*ae->cross));
    ae->region = calloc(n, sizeof(*ae->region));
    ae->trees = calloc(n, sizeof(*ae->trees));
    if (!ae->ids || !ae->iv || !ae->shared || !ae->cross || !ae->region ||
        !ae->trees) {
        log_error("anti-entropy: out of memory for a ring of %zu nodes", n);
        ae_drop_ring(ae);
        return;
    }
    ae->n_nodes = n;
    for (size_t i = 0; i < n; i++) {
        memcpy(ae->ids[i], ring_node_at(ring, i)->id, ID_BYTES);
        /* Its region: the index of the first node in the same one. */
        size_t j = 0;
        while (strcmp(ring_node_at(ring, j)->region,
                      ring_node_at(ring, i)->region) != 0)
            j++;
        ae->region[i] = (uint16_t)j;
    }
    ae->self_idx = ae_node_index(ae, ae->self);
    for (size_t k = 0; k < nt; k++) {
        size_t idx[REPL_MAX_REPLICAS];
        struct interval *iv = &ae->iv[k];
        iv->last = ring_token_at(ring, k);
        iv->n = (uint8_t)ring_preference_list(ring, iv->last,
                                              &ae->cfg.placement, idx);
        for (size_t i = 0; i < iv->n; i++)
            iv->rep[i] = (uint16_t)idx[i];
    }
    ae->n_iv = nt;
    /* Which ranges each node shares with this one: every range an interval
     * of both touches (the first interval wraps around zero). */
    for (size_t k = 0; ae->self_idx >= 0 && k < nt; k++) {
        const struct interval *iv = &ae->iv[k];
        if (!holds(iv, (size_t)ae->self_idx))
            continue;
        uint64_t first = ae->iv[k ? k - 1 : nt - 1].last + 1; /* mod 2^64 */
        uint32_t mask = 0, lo = ae_range_of(first), hi = ae_range_of(iv->last);
        if (nt == 1) {
            mask = ~0u;
        } else if (first <= iv->last) {
            for (uint32_t r = lo; r <= hi; r++)
                mask |= 1u << r;
        } else { /* the first interval wraps past the top */
            for (uint32_t r = lo; r < AE_RANGES; r++)
                mask |= 1u << r;
            for (uint32_t r = 0; r <= hi; r++)
                mask |= 1u << r;
        }
        mask &= (uint32_t)((1ull << AE_RANGES) - 1);
        for (size_t i = 0; i < iv->n; i++)
            if (iv->rep[i] != (size_t)ae->self_idx)
                ae->shared[iv->rep[i]] |= mask;
        for (uint32_t r = 0; r < AE_RANGES; r++) {
            if (!(mask & (1u << r)) ||
                !speaks_for_region(ae, iv, (size_t)ae->self_idx, r))
                continue;
            for (size_t i = 0; i < iv->n; i++) {
                size_t p = iv->rep[i];
                if (ae->region[p] != ae->region[ae->self_idx] &&
                    speaks_for_region(ae, iv, p, r))
                    ae->cross[p] |= 1u << r;
            }
        }
    }
    memcpy(ae->fp, fp, sizeof(fp));
    ae->have_ring = true;
}

int ae_round_peers(struct ae *ae)
{
    struct round *rd = &ae->rd;
    size_t n = ae->n_nodes ? ae->n_nodes : 1;
    rd->peers = calloc(n, sizeof(*rd->peers));
    rd->masks = calloc(n, sizeof(*rd->masks));
    if (!rd->peers || !rd->masks)
        return KV_ERR_NOMEM;
    uint16_t home = ae->region[ae->self_idx];
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < ae->n_nodes; i++) {
            bool local = ae->region[i] == home;
            if (local != (pass == 0))
                continue;
            uint32_t m = ae->shared[i] & rd->mask;
            if (!local && !rd->forced)
                m &= ae->cross[i];
            if (!m)
                continue;
            rd->masks[i] = m;
            rd->peers[rd->n_peers++] = i;
            rd->total += ae_popcount(m);
        }
    return 0;
}

/* ---- trees ---- */

/* A build reads the store in slices of cfg.build_batch records, each in its
 * own read transaction, a few slices per tick, so that a large store never
 * stalls the node. Slice i covers the LMDB keys after slice i-1's last key
 * up to its own last key (the final slice: to the end) and saw every write
 * committed at or before its txn. A write that completes later goes into
 * the trees only if its key lies in a slice already read and it committed
 * after that slice's txn: a write is counted by the slice or by its
 * completion, never by both. The slices outlive the build for that rule. */
struct slice {
    uint8_t last[LKEY];
    uint64_t txn;
};

struct build {
    struct ae *ae;
    uint8_t *items;
    uint64_t *off, *tokens;
    uint8_t *hashes;
    size_t n;    /* records to hash */
    size_t seen; /* records this slice went through */
    uint8_t last[LKEY];
};

static void xor_into(struct ae *ae, uint64_t token, const uint8_t *h)
{
    const struct interval *iv = interval_of(ae, token);
    if (ae->self_idx < 0 || !holds(iv, (size_t)ae->self_idx))
        return;
    size_t g = gseg_of(token);
    for (size_t i = 0; i < iv->n; i++) {
        struct tree *t = ae->trees[iv->rep[i]];
        if (iv->rep[i] == (size_t)ae->self_idx || !t)
            continue;
        for (size_t b = 0; b < AE_HASH_BYTES; b++)
            t->seg[g][b] ^= h[b];
    }
}

void ae_build_free(struct ae *ae)
{
    struct build *b = ae->build;
    if (!b)
        return;
    free(b->items);
    free(b->off);
    free(b->tokens);
    free(b->hashes);
    free(b);
    ae->build = NULL;
}

static int build_begin(struct ae *ae)
{
    if (!ae->have_ring || ae->self_idx < 0)
        return KV_ERR_UNAVAILABLE;
    for (size_t i = 0; i < ae->n_nodes; i++) {
        free(ae->trees[i]);
        ae->trees[i] = NULL;
        if (ae->shared[i] && !(ae->trees[i] = calloc(1, sizeof(struct tree))))
            return KV_ERR_NOMEM;
    }
    size_t batch = ae->cfg.build_batch;
    struct build *b = calloc(1, sizeof(*b));
    ae->build = b;
    if (!b)
        return KV_ERR_NOMEM;
    b->ae = ae;
    b->items = malloc(batch * LEAF_ITEM);
    b->off = malloc((batch + 1) * sizeof(*b->off));
    b->tokens = malloc(batch * sizeof(*b->tokens));
    b->hashes = malloc(batch * AE_HASH_BYTES);
    if (!b->items || !b->off || !b->tokens || !b->hashes) {
        ae_build_free(ae);
        return KV_ERR_NOMEM;
    }
    for (size_t i = 0; i <= batch; i++)
        b->off[i] = i * LEAF_ITEM;
    ae->trees_valid = false;
    ae->n_slices = 0;
    return 0;
}

static int build_record(void *arg, const uint8_t *lkey,
                        const struct storage_record *rec, bool sound)
{
    struct build *b = arg;
    if (b->seen == b->ae->cfg.build_batch)
        return 1; /* the next slice starts here */
    b->seen++;
    memcpy(b->last, lkey, LKEY);
    if (!sound)
        return 0; /* scrub finds it; the peers' copy fills the gap */
    leaf_item(b->items + b->n * LEAF_ITEM, lkey, rec->version, rec->origin,
              rec->tombstone, rec->checksum);
    b->tokens[b->n++] = be64_get(lkey);
    return 0;
}

/* Reads and hashes one slice. */
static int build_step(struct ae *ae)
{
    struct build *b = ae->build;
    if (ae->n_slices == ae->cap_slices) {
        size_t cap = ae->cap_slices ? ae->cap_slices * 2 : 16;
        void *p = realloc(ae->slices, cap * sizeof(*ae->slices));
        if (!p)
            return KV_ERR_NOMEM;
        ae->slices = p;
        ae->cap_slices = cap;
    }
    struct slice *sl = &ae->slices[ae->n_slices];
    b->n = b->seen = 0;
    int rc = ae->env.store->scan(
        ae->env.store_ctx, 0, UINT64_MAX,
        ae->n_slices ? ae->slices[ae->n_slices - 1].last : NULL, build_record,
        b, &sl->txn);
    if (rc == 0 && b->n)
        rc = ae->env.hash(ae->env.ctx, b->items, b->off, b->n, AE_HASH_BYTES,
                          b->hashes);
    if (rc)
        return rc;
    for (size_t i = 0; i < b->n; i++)
        xor_into(ae, b->tokens[i], b->hashes + i * AE_HASH_BYTES);
    bool done = b->seen < ae->cfg.build_batch;
    if (done)
        memset(sl->last, 0xff, LKEY);
    else
        memcpy(sl->last, b->last, LKEY);
    ae->n_slices++;
    if (done) {
        ae_build_free(ae);
        ae->trees_valid = true;
    }
    return 0;
}

/* Runs up to steps slices of the build in progress.
 * @retval 0 still building or done. @retval a kv_err: the build failed. */
int ae_build_run(struct ae *ae, size_t steps)
{
    while (ae->build && steps--) {
        int rc = build_step(ae);
        if (rc) {
            log_error("anti-entropy: building the trees failed: %s",
                      kv_strerror(rc));
            ae_build_free(ae);
            return rc;
        }
    }
    return 0;
}

/* 0 when the trees are ready; KV_ERR_BUSY while they are being built (a
 * build is started if none is). */
int ae_ensure_trees(struct ae *ae)
{
    if (ae->trees_valid)
        return 0;
    if (!ae->build) {
        int rc = build_begin(ae);
        if (rc) {
            log_error("anti-entropy: cannot build the trees: %s",
                      kv_strerror(rc));
            return rc;
        }
    }
    return KV_ERR_BUSY;
}

/* The slice holding lkey, or NULL when no slice read it yet. */
static const struct slice *slice_of(const struct ae *ae, const uint8_t *lkey)
{
    size_t lo = 0, hi = ae->n_slices;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(ae->slices[mid].last, lkey, LKEY) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ae->n_slices ? &ae->slices[lo] : NULL;
}

const uint8_t *ae_seg_hash(const struct ae *ae, size_t peer, size_t g)
{
    static const uint8_t zero[AE_HASH_BYTES];
    const struct tree *t = ae->trees ? ae->trees[peer] : NULL;
    return t ? t->seg[g] : zero;
}

static void branch_hash(const struct ae *ae, size_t peer, uint32_t range,
                        uint32_t b, uint8_t out[AE_HASH_BYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, AE_HASH_BYTES);
    size_t g0 = (size_t)range * AE_SEGMENTS + (size_t)b * AE_FANOUT;
    for (size_t s = 0; s < AE_FANOUT; s++)
        crypto_generichash_update(&st, ae_seg_hash(ae, peer, g0 + s),
                                  AE_HASH_BYTES);
    crypto_generichash_final(&st, out, AE_HASH_BYTES);
}

void ae_branches(const struct ae *ae, size_t peer, uint32_t range,
                 uint8_t out[AE_BRANCHES][AE_HASH_BYTES])
{
    for (uint32_t b = 0; b < AE_BRANCHES; b++)
        branch_hash(ae, peer, range, b, out[b]);
}

void ae_root_hash(const struct ae *ae, size_t peer, uint32_t range,
                  uint8_t out[AE_HASH_BYTES])
{
    uint8_t br[AE_BRANCHES][AE_HASH_BYTES];
    ae_branches(ae, peer, range, br);
    crypto_generichash(out, AE_HASH_BYTES, &br[0][0], sizeof(br), NULL, 0);
}

int ae_root(struct ae *ae, const uint8_t peer[ID_BYTES], unsigned range,
            uint8_t out[AE_HASH_BYTES])
{
    long p = ae_node_index(ae, peer);
    if (p < 0 || range >= AE_RANGES || !ae->shared[p])
        return KV_ERR_NOT_FOUND;
    int rc = ae_ensure_trees(ae);
    if (rc == KV_ERR_BUSY && (rc = ae_build_run(ae, SIZE_MAX)) == 0)
        rc = ae->trees_valid ? 0 : KV_ERR_IO;
    if (rc == 0)
        ae_root_hash(ae, (size_t)p, range, out);
    return rc;
}

void ae_on_stored(struct ae *ae, struct storage_write *w)
{
    const uint8_t *lkey = w->lkey;
    const struct slice *sl = NULL;
    if (w->op == STORAGE_PUT && w->applied && w->result == 0 && ae->trees &&
        (ae->trees_valid || ae->build))
        sl = slice_of(ae, lkey);
    if (sl && w->txn > sl->txn) {
        uint8_t h[AE_HASH_BYTES];
        uint64_t token = be64_get(lkey);
        if (w->had_prev) {
            ae_record_hash(h, lkey, w->prev_version, w->prev_origin,
                           w->prev_tombstone, w->prev_checksum);
            xor_into(ae, token, h);
        }
        ae_record_hash(h, lkey, w->version, w->origin, w->tombstone,
                       w->checksum);
        xor_into(ae, token, h);
    }
    if (w->tag != AE_WRITE_TAG)
        return;
    struct ae_write *aw = (struct ae_write *)w;
    if (w->result)
        log_warn("anti-entropy: storing a repaired record failed: %s",
                 kv_strerror(w->result));
    for (size_t i = 0; w->result == 0 && i < ae->n_corrupt; i++)
        if (!ae->corrupt[i].fixed &&
            memcmp(ae->corrupt[i].lkey, w->lkey, LKEY) == 0) {
            ae->corrupt[i].fixed = true;
            ae->c.scrub_repaired++;
            ae->rd.repaired++;
            log_info("scrub: record with token %016llx replaced from a "
                     "replica",
                     (unsigned long long)be64_get(w->lkey));
        }
    struct push_wait *wait = aw->wait;
    free(aw);
    ae->pending_writes--;
    if (wait)
        ae_push_stored(ae, wait);
    if (ae->pending_writes == 0 && ae->rd.active &&
        ae->rd.state == R_WAIT_WRITES)
        ae_round_end(ae, 0, NULL);
}

/* Stores a record pulled from a peer (or pushed by one). */
bool ae_store_record(struct ae *ae, const struct ae_record *r,
                     struct push_wait *wait)
{
    /* A record stamped by a clock running ahead would win every later
     * write: it is refused, as a replica write would be (F2). */
    uint64_t wall = ae->env.wall_ms(ae->env.ctx);
    if (hlc_too_far_ahead(r->version, wall, ae->cfg.max_clock_offset_ms)) {
        if (ae->c.clock_refused++ % 100 == 0)
            log_warn("anti-entropy: refused a record stamped %llu ms ahead of "
                     "this node's clock (more than %u ms: a node's clock "
                     "runs fast)",
                     (unsigned long long)(hlc_physical_ms(r->version) - wall),
                     ae->cfg.max_clock_offset_ms);
        return false;
    }
    struct ae_write *aw = calloc(1, sizeof(*aw) + r->key_len + r->value_len);
    if (!aw) {
        log_error("anti-entropy: out of memory for a record");
        return false;
    }
    memcpy(aw->buf, r->key, r->key_len);
    if (r->value_len)
        memcpy(aw->buf + r->key_len, r->value, r->value_len);
    aw->w.op = STORAGE_PUT;
    aw->w.tag = AE_WRITE_TAG;
    aw->w.key = aw->buf;
    aw->w.key_len = r->key_len;
    aw->w.value = aw->buf + r->key_len;
    aw->w.value_len = r->value_len;
    aw->w.version = r->version;
    memcpy(aw->w.origin, r->origin, ID_BYTES);
    aw->w.tombstone = r->tombstone;
    aw->w.ctx = aw;
    aw->wait = wait;
    if (wait)
        wait->left++;
    ae->pending_writes++;
    ae->env.store->submit(ae->env.store_ctx, &aw->w);
    return true;
}
