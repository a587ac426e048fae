/* Anti-entropy's exchange: rounds, the initiator and the responder, and the
 * tick that drives builds, scrubs and rounds. See ae.h and ae_int.h. */
#include "ae_int.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the exchange: initiator ---- */

static void progress(struct ae *ae, bool final, int code, const char *text)
{
    struct round *rd = &ae->rd;
    if (!rd->client)
        return;
    struct msg m = {.type = MSG_REPAIR_RESULT, .id = rd->client_id};
    struct msg_repair_result *r = &m.u.repair_result;
    r->final = final;
    r->code = code;
    r->text = text ? text : "";
    r->text_len = strlen(r->text);
    r->done = rd->done;
    r->total = rd->total;
    r->differing = rd->differing;
    r->pulled = rd->pulled;
    r->pushed = rd->pushed;
    r->bytes_sent = rd->bytes_sent;
    r->bytes_received = rd->bytes_received;
    r->scrubbed = rd->scrubbed;
    r->corrupt = rd->corrupt;
    r->scrub_repaired = rd->repaired;
    ae->env.reply(ae->env.ctx, rd->client, &m);
}

static void send_req(struct ae *ae, struct msg *m)
{
    struct round *rd = &ae->rd;
    m->type = MSG_AE;
    m->id = rd->req = ++ae->next_req;
    memcpy(m->u.ae.ring, ae->fp, AE_RING_BYTES);
    size_t n = ae->env.send(ae->env.ctx, ae->ids[rd->peer], m);
    rd->bytes_sent += n;
    ae->c.bytes_sent += n;
    rd->deadline = ae->env.now_ms(ae->env.ctx) + ae->cfg.step_timeout_ms;
}

static void next_peer(struct ae *ae);
static void send_roots(struct ae *ae);
static void next_range(struct ae *ae);
static void send_keys(struct ae *ae);
static void pull_loop(struct ae *ae);

/* The peer did not finish: its ranges in this round failed. */
static void fail_peer(struct ae *ae, const char *why)
{
    struct round *rd = &ae->rd;
    uint32_t mine = rd->masks[rd->peer];
    char hex[17];
    sodium_bin2hex(hex, sizeof(hex), ae->ids[rd->peer], 8);
    log_warn("anti-entropy: exchange with node %s stopped: %s", hex, why);
    rd->failed |= mine;
    /* Count what was left of this peer as done, so progress still ends. */
    rd->done += ae_popcount(mine) - rd->peer_done;
    next_peer(ae);
}

static void range_done(struct ae *ae)
{
    ae->rd.done++;
    ae->rd.peer_done++;
    progress(ae, false, 0, NULL);
    ae->rd.diff_pos++;
    next_range(ae);
}

static void next_peer(struct ae *ae)
{
    struct round *rd = &ae->rd;
    rd->pull.n = rd->push.n = rd->pull_pos = rd->push_pos = 0;
    rd->n_diff = rd->diff_pos = 0;
    if (rd->peer_pos == rd->n_peers) {
        if (ae->pending_writes) {
            rd->state = R_WAIT_WRITES;
            return;
        }
        ae_round_end(ae, 0, NULL);
        return;
    }
    rd->peer = rd->peers[rd->peer_pos++];
    rd->peer_done = 0;
    rd->peer_deadline = ae->env.now_ms(ae->env.ctx) + ae->cfg.step_timeout_ms;
    /* Corrupt records this peer also holds are pulled first. */
    for (size_t i = 0; i < ae->n_corrupt; i++)
        if (!ae->corrupt[i].fixed &&
            ae_shares(ae, be64_get(ae->corrupt[i].lkey), rd->peer) &&
            ae_lkeys_add(&rd->pull, ae->corrupt[i].lkey) != 0)
            break;
    rd->then = THEN_ROOTS;
    pull_loop(ae);
}

static void send_roots(struct ae *ae)
{
    struct round *rd = &ae->rd;
    uint32_t idx[AE_RANGES];
    uint8_t h[AE_RANGES][AE_HASH_BYTES];
    size_t n = 0;
    for (uint32_t r = 0; r < AE_RANGES; r++)
        if (rd->masks[rd->peer] & (1u << r)) {
            ae_root_hash(ae, rd->peer, r, h[n]);
            idx[n++] = r;
        }
    struct msg m = {0};
    m.u.ae.step = AE_STEP_ROOTS;
    m.u.ae.idx = idx;
    m.u.ae.n_idx = n;
    m.u.ae.hashes = &h[0][0];
    m.u.ae.hashes_len = n * AE_HASH_BYTES;
    rd->state = R_ROOTS;
    send_req(ae, &m);
}

static void next_range(struct ae *ae)
{
    struct round *rd = &ae->rd;
    if (rd->diff_pos == rd->n_diff) {
        next_peer(ae);
        return;
    }
    struct msg m = {0};
    m.u.ae.step = AE_STEP_BRANCHES;
    m.u.ae.range = rd->diff[rd->diff_pos];
    rd->state = R_BRANCHES;
    send_req(ae, &m);
}

/* Local keys of the chunk's segments that the peer also holds, after the
 * cursor, up to bound (inclusive) when given. */
struct collect {
    struct ae *ae;
    struct ae_key *keys;
    size_t n, cap;
    const uint8_t *bound;
    bool full; /* stopped at AE_MAX_KEYS */
    int err;
};

static int collect_key(void *arg, const uint8_t *lkey,
                       const struct storage_record *rec, bool sound)
{
    struct collect *c = arg;
    if (c->bound && memcmp(lkey, c->bound, LKEY) > 0)
        return 1;
    if (!sound || !ae_shares(c->ae, be64_get(lkey), c->ae->rd.peer))
        return 0;
    if (c->n == AE_MAX_KEYS) {
        c->full = true;
        return 1;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        void *p = realloc(c->keys, cap * sizeof(*c->keys));
        if (!p) {
            c->err = KV_ERR_NOMEM;
            return 1;
        }
        c->keys = p;
        c->cap = cap;
    }
    struct ae_key *k = &c->keys[c->n++];
    memcpy(k->lkey, lkey, LKEY);
    k->version = rec->version;
    memcpy(k->origin, rec->origin, ID_BYTES);
    k->tombstone = rec->tombstone;
    return 0;
}

static uint64_t seg_first(uint32_t range, uint32_t seg)
{
    return ((uint64_t)range * AE_SEGMENTS + seg) << SEG_SHIFT;
}

static uint64_t seg_last(uint32_t range, uint32_t seg)
{
    return seg_first(range, seg) | ((1ull << SEG_SHIFT) - 1);
}

/* Walks segments of the current chunk the way the peer does (serve_keys),
 * with fn on each record. */
static int scan_segments(struct ae *ae, uint32_t range, const uint32_t *segs,
                         size_t n, const uint8_t *after, storage_scan_fn fn,
                         void *arg)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t first = seg_first(range, segs[i]),
                 last = seg_last(range, segs[i]);
        const uint8_t *from = NULL;
        if (after) {
            uint64_t at = be64_get(after);
            if (at > last)
                continue;
            if (at >= first)
                from = after;
        }
        int rc = ae->env.store->scan(ae->env.store_ctx, first, last, from, fn,
                                     arg, NULL);
        if (rc)
            return rc;
    }
    return 0;
}

/* Compares the peer's keys with ours: what to pull and what to push. Both
 * sides stop at AE_MAX_KEYS; the comparison covers keys up to the first
 * side's last one, and the next KEYS request resumes after it. */
static int compare_keys(struct ae *ae, const struct msg_ae *a)
{
    struct round *rd = &ae->rd;
    uint32_t range = rd->diff[rd->diff_pos];
    struct collect c = {.ae = ae};
    const uint8_t *bound = NULL;
    if (a->more && a->n_keys)
        bound = c.bound = a->keys[a->n_keys - 1].lkey;
    int rc = scan_segments(ae, range, rd->segs + rd->seg_pos, rd->seg_chunk,
                           rd->has_after ? rd->after : NULL, collect_key, &c);
    if (rc == 0)
        rc = c.err;
    if (rc == 0 && c.full &&
        (!bound || memcmp(c.keys[c.n - 1].lkey, bound, LKEY) < 0))
        bound = c.keys[c.n - 1].lkey;
    size_t n_remote = a->n_keys;
    while (bound && n_remote &&
           memcmp(a->keys[n_remote - 1].lkey, bound, LKEY) > 0)
        n_remote--;
    size_t i = 0, j = 0;
    while (rc == 0 && (i < c.n || j < n_remote)) {
        int cmp = i == c.n ? 1
                  : j == n_remote
                      ? -1
                      : memcmp(c.keys[i].lkey, a->keys[j].lkey, LKEY);
        if (cmp < 0) {
            rc = ae_lkeys_add(&rd->push, c.keys[i++].lkey);
        } else if (cmp > 0) {
            rc = ae_lkeys_add(&rd->pull, a->keys[j++].lkey);
        } else {
            const struct ae_key *l = &c.keys[i++], *r = &a->keys[j++];
            if (storage_newer(r->version, r->origin, l->version, l->origin))
                rc = ae_lkeys_add(&rd->pull, r->lkey);
            else if (storage_newer(l->version, l->origin, r->version,
                                   r->origin))
                rc = ae_lkeys_add(&rd->push, l->lkey);
            else
                continue;
        }
        rd->differing++;
    }
    /* The next request starts after the bound, or at the next chunk. */
    if (rc == 0 && bound) {
        memmove(rd->after, bound, LKEY); /* bound may point at rd->after */
        rd->has_after = true;
    } else if (rc == 0) {
        rd->has_after = false;
        rd->seg_pos += rd->seg_chunk;
    }
    free(c.keys);
    return rc;
}

static void send_keys(struct ae *ae)
{
    struct round *rd = &ae->rd;
    rd->seg_chunk = rd->n_segs - rd->seg_pos < KEYS_SEGS
                        ? rd->n_segs - rd->seg_pos
                        : KEYS_SEGS;
    struct msg m = {0};
    m.u.ae.step = AE_STEP_KEYS;
    m.u.ae.range = rd->diff[rd->diff_pos];
    m.u.ae.idx = rd->segs + rd->seg_pos;
    m.u.ae.n_idx = rd->seg_chunk;
    m.u.ae.has_after = rd->has_after;
    memcpy(m.u.ae.after, rd->after, LKEY);
    rd->state = R_KEYS;
    send_req(ae, &m);
}

/* After the pull and push loops. */
static void loops_done(struct ae *ae)
{
    struct round *rd = &ae->rd;
    rd->pull.n = rd->push.n = rd->pull_pos = rd->push_pos = 0;
    if (rd->then == THEN_ROOTS) {
        send_roots(ae);
        return;
    }
    if (rd->has_after || rd->seg_pos < rd->n_segs)
        send_keys(ae);
    else
        range_done(ae);
}

/* A batch of whole records for a pull's answer or a push. */
struct batch {
    struct ae_record *recs;
    struct storage_record *held; /* what recs point into */
    size_t n;
};

/* Reads the records of up to n LMDB keys (key i at keys + i * stride) into
 * b, within one message's budget (at least one record); keys no longer
 * stored, or corrupt, are skipped, and with for >= 0 keys that node does
 * not share with this one (a PULL reads nothing else: security review
 * M3). Returns how many keys it went through.
 * @retval SIZE_MAX out of memory. */
static size_t batch_read(struct ae *ae, const uint8_t *keys, size_t stride,
                         size_t n, long for_peer, struct batch *b)
{
    size_t cap = n < AE_MAX_RECORDS ? n : AE_MAX_RECORDS, bytes = 0, i = 0;
    b->n = 0;
    b->recs = calloc(cap ? cap : 1, sizeof(*b->recs));
    b->held = calloc(cap ? cap : 1, sizeof(*b->held));
    if (!b->recs || !b->held)
        return SIZE_MAX;
    for (; i < n && b->n < cap; i++) {
        struct storage_record *r = &b->held[b->n];
        if (for_peer >= 0 &&
            !ae_shares(ae, be64_get(keys + i * stride), (size_t)for_peer))
            continue;
        if (ae->env.store->get_lkey(ae->env.store_ctx, keys + i * stride, r) !=
            0)
            continue;
        size_t sz = r->key_len + r->value_len + 64;
        if (b->n && bytes + sz > ae->cfg.max_message_bytes) {
            storage_record_free_all(r);
            break;
        }
        bytes += sz;
        b->recs[b->n] = (struct ae_record){r->key,       r->key_len, r->value,
                                           r->value_len, r->version, {0},
                                           r->tombstone};
        memcpy(b->recs[b->n].origin, r->origin, ID_BYTES);
        b->n++;
    }
    return i;
}

static void batch_free(struct batch *b)
{
    for (size_t k = 0; b->held && k < b->n; k++)
        storage_record_free_all(&b->held[k]);
    free(b->recs);
    free(b->held);
}

static void push_loop(struct ae *ae)
{
    struct round *rd = &ae->rd;
    if (rd->push_pos == rd->push.n) {
        loops_done(ae);
        return;
    }
    struct batch b;
    size_t used = batch_read(ae, rd->push.k[rd->push_pos], LKEY,
                             rd->push.n - rd->push_pos, -1, &b);
    if (used == SIZE_MAX) {
        batch_free(&b);
        fail_peer(ae, "out of memory");
        return;
    }
    rd->push_pos += used;
    size_t n = b.n;
    if (n) {
        struct msg m = {0};
        m.u.ae.step = AE_STEP_PUSH;
        m.u.ae.recs = b.recs;
        m.u.ae.n_recs = n;
        rd->state = R_PUSH;
        send_req(ae, &m);
        rd->pushed += n;
        ae->c.pushed += n;
    }
    batch_free(&b);
    if (n == 0)
        loops_done(ae); /* nothing left that could be read */
}

static void pull_loop(struct ae *ae)
{
    struct round *rd = &ae->rd;
    if (rd->pull_pos == rd->pull.n) {
        push_loop(ae);
        return;
    }
    size_t n = rd->pull.n - rd->pull_pos;
    if (n > PULL_KEYS)
        n = PULL_KEYS;
    struct ae_key *keys = calloc(n, sizeof(*keys));
    if (!keys) {
        fail_peer(ae, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++)
        memcpy(keys[i].lkey, rd->pull.k[rd->pull_pos + i], LKEY);
    struct msg m = {0};
    m.u.ae.step = AE_STEP_PULL;
    m.u.ae.keys = keys;
    m.u.ae.n_keys = n;
    rd->pull_sent = n;
    rd->state = R_PULL;
    send_req(ae, &m);
    free(keys);
}

static bool hashes_are(const struct msg_ae *a, size_t n)
{
    return a->hashes_len == n * AE_HASH_BYTES;
}

/* An answer to the step in flight. */
static void on_answer(struct ae *ae, const struct msg_ae *a)
{
    struct round *rd = &ae->rd;
    uint64_t now = ae->env.now_ms(ae->env.ctx);
    if ((a->code == KV_ERR_VERSION || a->code == KV_ERR_BUSY) &&
        rd->state == R_ROOTS && now + RING_RETRY_MS < rd->peer_deadline) {
        rd->state = R_RETRY_ROOTS;
        rd->retry_at = now + RING_RETRY_MS;
        return;
    }
    if (a->code) {
        fail_peer(ae, a->code == KV_ERR_VERSION
                          ? "its view of the ring differs from ours"
                      : a->code == KV_ERR_BUSY
                          ? "it is still building its trees"
                          : kv_strerror(a->code));
        return;
    }
    switch (rd->state) {
    case R_ROOTS: {
        uint32_t mine = rd->masks[rd->peer];
        size_t n = ae_popcount(mine), k = 0;
        if (!hashes_are(a, n)) {
            fail_peer(ae, "a malformed answer");
            return;
        }
        rd->n_diff = rd->diff_pos = 0;
        for (uint32_t r = 0; r < AE_RANGES; r++) {
            if (!(mine & (1u << r)))
                continue;
            uint8_t h[AE_HASH_BYTES];
            ae_root_hash(ae, rd->peer, r, h);
            if (memcmp(h, a->hashes + k++ * AE_HASH_BYTES, sizeof(h)) != 0) {
                rd->diff[rd->n_diff++] = r;
            } else {
                rd->done++;
                rd->peer_done++;
            }
        }
        progress(ae, false, 0, NULL);
        next_range(ae);
        return;
    }
    case R_BRANCHES: {
        uint32_t range = rd->diff[rd->diff_pos];
        if (!hashes_are(a, AE_BRANCHES)) {
            fail_peer(ae, "a malformed answer");
            return;
        }
        uint8_t br[AE_BRANCHES][AE_HASH_BYTES];
        ae_branches(ae, rd->peer, range, br);
        uint32_t idx[AE_BRANCHES];
        size_t n = 0;
        for (uint32_t b = 0; b < AE_BRANCHES; b++)
            if (memcmp(br[b], a->hashes + b * AE_HASH_BYTES, AE_HASH_BYTES) !=
                0)
                idx[n++] = b;
        if (n == 0) {
            range_done(ae);
            return;
        }
        struct msg m = {0};
        m.u.ae.step = AE_STEP_SEGS;
        m.u.ae.range = range;
        m.u.ae.idx = idx;
        m.u.ae.n_idx = n;
        rd->state = R_SEGS;
        send_req(ae, &m);
        return;
    }
    case R_SEGS: {
        /* The answer holds the segments of the branches asked for, in
         * order; which branches those were, the branch hashes say again. */
        uint32_t range = rd->diff[rd->diff_pos];
        size_t nb = a->hashes_len / (AE_FANOUT * AE_HASH_BYTES);
        if (a->n_idx != nb || !hashes_are(a, nb * AE_FANOUT)) {
            fail_peer(ae, "a malformed answer");
            return;
        }
        rd->n_segs = rd->seg_pos = 0;
        for (size_t i = 0; i < nb; i++) {
            uint32_t b = a->idx[i];
            if (b >= AE_BRANCHES) {
                fail_peer(ae, "a malformed answer");
                return;
            }
            for (uint32_t s = 0; s < AE_FANOUT; s++) {
                uint32_t seg = b * AE_FANOUT + s;
                const uint8_t *mine = ae_seg_hash(
                    ae, rd->peer, (size_t)range * AE_SEGMENTS + seg);
                if (memcmp(mine,
                           a->hashes + (i * AE_FANOUT + s) * AE_HASH_BYTES,
                           AE_HASH_BYTES) != 0)
                    rd->segs[rd->n_segs++] = seg;
            }
        }
        rd->has_after = false;
        if (rd->n_segs == 0)
            range_done(ae);
        else
            send_keys(ae);
        return;
    }
    case R_KEYS: {
        for (size_t i = 1; i < a->n_keys; i++)
            if (memcmp(a->keys[i - 1].lkey, a->keys[i].lkey, LKEY) >= 0) {
                fail_peer(ae, "keys out of order");
                return;
            }
        if (compare_keys(ae, a) != 0) {
            fail_peer(ae, "out of memory");
            return;
        }
        rd->then = THEN_KEYS;
        pull_loop(ae);
        return;
    }
    case R_PULL: {
        for (size_t i = 0; i < a->n_recs; i++) {
            const struct ae_record *r = &a->recs[i];
            /* Only keys both hold: an answer cannot plant others here. */
            if (!ae_shares(ae, storage_token(r->key, r->key_len), rd->peer))
                continue;
            if (!ae_store_record(ae, r, NULL))
                continue;
            rd->pulled++;
            ae->c.pulled++;
        }
        size_t used = rd->pull_sent;
        if (a->more && a->has_after) {
            /* The peer stopped at after: go on from the key past it. */
            for (size_t i = 0; i < rd->pull_sent; i++)
                if (memcmp(rd->pull.k[rd->pull_pos + i], a->after, LKEY) == 0) {
                    used = i + 1;
                    break;
                }
        }
        rd->pull_pos += used;
        pull_loop(ae);
        return;
    }
    case R_PUSH:
        push_loop(ae);
        return;
    }
}

void ae_round_end(struct ae *ae, int code, const char *why)
{
    struct round *rd = &ae->rd;
    uint64_t now = ae->env.wall_ms(ae->env.ctx);
    if (code == 0 && !why)
        for (uint32_t r = 0; r < AE_RANGES; r++)
            if ((rd->mask & (1u << r)) && !(rd->failed & (1u << r)))
                ae->converged[r] = now;
    if (code == 0 && rd->failed)
        code = KV_ERR_UNAVAILABLE;
    size_t unfixed = 0;
    for (size_t i = 0; i < ae->n_corrupt; i++)
        unfixed += !ae->corrupt[i].fixed;
    char text[200] = "";
    if (why)
        snprintf(text, sizeof(text), "%s", why);
    else if (rd->failed)
        snprintf(text, sizeof(text),
                 "%u of %u ranges did not converge: an exchange with a "
                 "replica did not finish (see the node's log)",
                 ae_popcount(rd->failed), ae_popcount(rd->mask));
    else if (unfixed)
        snprintf(text, sizeof(text),
                 "%zu corrupt record(s) could not be replaced: no replica "
                 "had them",
                 unfixed);
    if (code == 0 && unfixed)
        code = KV_ERR_CORRUPT;
    ae->c.rounds++;
    if (rd->differing || rd->corrupt || code)
        log_info(
            "anti-entropy: round over %u range(s) with %zu peer(s): %llu "
            "key(s) differed, %llu pulled, %llu pushed, %llu bytes sent, "
            "%llu received%s%s",
            ae_popcount(rd->mask), rd->n_peers,
            (unsigned long long)rd->differing, (unsigned long long)rd->pulled,
            (unsigned long long)rd->pushed, (unsigned long long)rd->bytes_sent,
            (unsigned long long)rd->bytes_received, text[0] ? ": " : "", text);
    progress(ae, true, code, text);
    free(rd->peers);
    free(rd->masks);
    free(rd->pull.k);
    free(rd->push.k);
    memset(rd, 0, sizeof(*rd));
    /* A round that ends while it scrubs (its ring changed, it failed)
     * leaves no scrub behind: the next one starts its own (the integration
     * teardown's leak check found one). */
    ae_scrub_free(ae);
    if (ae->queued.set) {
        struct queued q = ae->queued;
        ae->queued.set = false;
        ae_repair(ae, q.client, q.id, q.range, q.scrub);
    }
}

/* The round's peers, once the trees are ready (ae_round_peers). */
static void round_peers(struct ae *ae)
{
    if (ae_round_peers(ae) != 0) {
        ae_round_end(ae, KV_ERR_NOMEM, "out of memory");
        return;
    }
    progress(ae, false, 0, NULL);
    next_peer(ae);
}

/* After the scrub (if any): the trees, built a slice per tick if needed. */
static void round_trees(struct ae *ae)
{
    int rc = ae_ensure_trees(ae);
    if (rc == KV_ERR_BUSY) {
        ae->rd.state = R_WAIT_TREES;
        return;
    }
    if (rc) {
        ae_round_end(ae, rc, "the trees could not be built");
        return;
    }
    round_peers(ae);
}

static void round_start(struct ae *ae, uint32_t mask, bool scrub_first,
                        bool forced, void *client, uint64_t id)
{
    struct round *rd = &ae->rd;
    memset(rd, 0, sizeof(*rd));
    rd->active = true;
    rd->forced = forced;
    rd->client = client;
    rd->client_id = id;
    rd->mask = mask;
    if (!ae->have_ring || ae->self_idx < 0) {
        ae_round_end(ae, KV_ERR_UNAVAILABLE,
                     "this node has not joined a ring yet");
        return;
    }
    if (scrub_first) {
        int rc = ae_scrub_begin(ae);
        if (rc) {
            ae_round_end(ae, rc, "out of memory for the scrub");
            return;
        }
        rd->state = R_SCRUB;
        progress(ae, false, 0, NULL);
        return;
    }
    round_trees(ae);
}

int ae_repair(struct ae *ae, void *client, uint64_t id, int range, bool scrub)
{
    if (range < -1 || range >= (int)AE_RANGES)
        return KV_ERR_INVAL;
    if (ae->rd.active) {
        if (ae->queued.set)
            return KV_ERR_BUSY;
        ae->queued = (struct queued){true, client, id, range, scrub};
        return 0;
    }
    uint32_t mask =
        range < 0 ? (uint32_t)((1ull << AE_RANGES) - 1) : 1u << range;
    round_start(ae, mask, scrub, true, client, id);
    return 0;
}

void ae_client_gone(struct ae *ae, void *client)
{
    if (ae->rd.client == client)
        ae->rd.client = NULL;
    if (ae->queued.set && ae->queued.client == client)
        ae->queued.set = false;
}

/* ---- the exchange: responder ---- */

struct serve_keys {
    struct ae *ae;
    size_t peer;
    struct ae_key *keys;
    size_t n;
    bool more;
};

static int serve_key(void *arg, const uint8_t *lkey,
                     const struct storage_record *rec, bool sound)
{
    struct serve_keys *s = arg;
    if (!sound || !ae_shares(s->ae, be64_get(lkey), s->peer))
        return 0;
    if (s->n == AE_MAX_KEYS) {
        s->more = true;
        return 1;
    }
    struct ae_key *k = &s->keys[s->n++];
    memcpy(k->lkey, lkey, LKEY);
    k->version = rec->version;
    memcpy(k->origin, rec->origin, ID_BYTES);
    k->tombstone = rec->tombstone;
    return 0;
}

static void answer(struct ae *ae, const uint8_t to[ID_BYTES], uint64_t id,
                   struct msg *m)
{
    m->type = MSG_AE_ANSWER;
    m->id = id;
    memcpy(m->u.ae.ring, ae->fp, AE_RING_BYTES);
    ae->c.bytes_sent += ae->env.send(ae->env.ctx, to, m);
}

void ae_push_stored(struct ae *ae, struct push_wait *wait)
{
    if (--wait->left)
        return;
    struct msg m = {0};
    m.u.ae.step = AE_STEP_PUSH;
    answer(ae, wait->to, wait->id, &m);
    for (struct push_wait **p = &ae->waits; *p; p = &(*p)->next)
        if (*p == wait) {
            *p = wait->next;
            break;
        }
    free(wait);
}

static void serve(struct ae *ae, const uint8_t from[ID_BYTES],
                  const struct msg *req)
{
    const struct msg_ae *q = &req->u.ae;
    struct msg m = {0};
    struct msg_ae *a = &m.u.ae;
    a->step = q->step;
    long peer = ae->have_ring ? ae_node_index(ae, from) : -1;
    if (!ae->have_ring || ae->self_idx < 0 || peer < 0 ||
        memcmp(q->ring, ae->fp, AE_RING_BYTES) != 0) {
        a->code = KV_ERR_VERSION;
        answer(ae, from, req->id, &m);
        return;
    }
    if (q->step != AE_STEP_PUSH && q->step != AE_STEP_PULL &&
        (a->code = ae_ensure_trees(ae)) != 0) {
        answer(ae, from, req->id, &m);
        return;
    }
    size_t p = (size_t)peer;
    uint8_t h[AE_SEGMENTS][AE_HASH_BYTES];
    switch (q->step) {
    case AE_STEP_ROOTS:
        for (size_t i = 0; i < q->n_idx && !a->code; i++) {
            if (q->n_idx > AE_RANGES || q->idx[i] >= AE_RANGES)
                a->code = KV_ERR_INVAL;
            else
                ae_root_hash(ae, p, q->idx[i], h[i]);
        }
        a->hashes = &h[0][0];
        a->hashes_len = a->code ? 0 : q->n_idx * AE_HASH_BYTES;
        break;
    case AE_STEP_BRANCHES:
        ae_branches(ae, p, q->range, h);
        a->hashes = &h[0][0];
        a->hashes_len = AE_BRANCHES * AE_HASH_BYTES;
        break;
    case AE_STEP_SEGS: {
        size_t nb = q->n_idx;
        for (size_t i = 0; i < nb && !a->code; i++)
            if (nb > AE_BRANCHES || q->idx[i] >= AE_BRANCHES)
                a->code = KV_ERR_INVAL;
        if (a->code)
            break;
        for (size_t i = 0; i < nb; i++)
            for (size_t s = 0; s < AE_FANOUT; s++)
                memcpy(h[i * AE_FANOUT + s],
                       ae_seg_hash(ae, p,
                                   (size_t)q->range * AE_SEGMENTS +
                                       q->idx[i] * AE_FANOUT + s),
                       AE_HASH_BYTES);
        a->idx = q->idx;
        a->n_idx = nb;
        a->hashes = &h[0][0];
        a->hashes_len = nb * AE_FANOUT * AE_HASH_BYTES;
        break;
    }
    case AE_STEP_KEYS: {
        struct serve_keys s = {ae, p, calloc(AE_MAX_KEYS, sizeof(*s.keys)), 0,
                               false};
        if (!s.keys) {
            a->code = KV_ERR_NOMEM;
            break;
        }
        a->code = scan_segments(ae, q->range, q->idx, q->n_idx,
                                q->has_after ? q->after : NULL, serve_key, &s);
        a->keys = s.keys;
        a->n_keys = s.n;
        a->more = s.more;
        answer(ae, from, req->id, &m);
        free(s.keys);
        return;
    }
    case AE_STEP_PULL: {
        struct batch b;
        size_t i = batch_read(ae, q->n_keys ? q->keys[0].lkey : NULL,
                              sizeof(*q->keys), q->n_keys, (long)p, &b);
        if (i == SIZE_MAX) {
            a->code = KV_ERR_NOMEM;
            b.n = 0;
        } else if (i < q->n_keys) {
            a->more = true;
            a->has_after = true;
            memcpy(a->after, q->keys[i - 1].lkey, LKEY);
        }
        a->recs = b.recs;
        a->n_recs = b.n;
        answer(ae, from, req->id, &m);
        batch_free(&b);
        return;
    }
    case AE_STEP_PUSH: {
        /* Answered once the records are durable here, so that the pusher
         * reports a repair only when it took effect. */
        struct push_wait *wait = calloc(1, sizeof(*wait));
        for (size_t i = 0; i < q->n_recs; i++)
            if (ae_shares(ae, storage_token(q->recs[i].key, q->recs[i].key_len),
                          p))
                ae_store_record(ae, &q->recs[i], wait);
        if (wait && wait->left) {
            memcpy(wait->to, from, ID_BYTES);
            wait->id = req->id;
            wait->next = ae->waits;
            ae->waits = wait;
            return;
        }
        free(wait);
        break;
    }
    }
    answer(ae, from, req->id, &m);
}

void ae_on_peer_message(struct ae *ae, const uint8_t from[ID_BYTES],
                        const struct msg *m, size_t wire_len)
{
    ae->c.bytes_received += wire_len;
    if (m->type == MSG_AE) {
        serve(ae, from, m);
        return;
    }
    struct round *rd = &ae->rd;
    if (m->type != MSG_AE_ANSWER || !rd->active || rd->state == R_WAIT_WRITES ||
        rd->state == R_RETRY_ROOTS || m->id != rd->req ||
        memcmp(from, ae->ids[rd->peer], ID_BYTES) != 0 || m->u.ae.step == 0)
        return; /* late: its step timed out */
    rd->bytes_received += wire_len;
    on_answer(ae, &m->u.ae);
}

void ae_tick(struct ae *ae)
{
    uint64_t now = ae->env.now_ms(ae->env.ctx);
    struct round *rd = &ae->rd;
    /* Builds and scrubs move a few slices per tick. */
    if (ae->build) {
        int rc = ae_build_run(ae, ae->cfg.build_steps);
        if (rd->active && rd->state == R_WAIT_TREES) {
            if (rc)
                ae_round_end(ae, rc, "the trees could not be built");
            else if (ae->trees_valid)
                round_peers(ae);
        }
        return;
    }
    if (rd->active && rd->state == R_SCRUB) {
        int rc = 0;
        for (size_t i = 0; i < ae->cfg.build_steps && rc == 0; i++)
            rc = ae_scrub_step(ae);
        if (rc < 0) {
            ae_scrub_free(ae);
            ae_round_end(ae, rc, "the scrub could not read storage");
        } else if (rc == 1) {
            ae_scrub_free(ae);
            round_trees(ae);
        }
        return;
    }
    if (rd->active && rd->state == R_WAIT_TREES) {
        round_trees(ae); /* the build was dropped (a new ring): start over */
        return;
    }
    if (rd->active && rd->state == R_RETRY_ROOTS) {
        if (now >= rd->retry_at)
            send_roots(ae);
        return;
    }
    if (rd->active && rd->state != R_WAIT_WRITES && now > rd->deadline) {
        fail_peer(ae, "it did not answer in time");
        return;
    }
    if (rd->active || !ae->have_ring)
        return;
    bool round = ae->cfg.interval_ms && now >= ae->next_round_at;
    bool scrub_now = ae->cfg.scrub_interval_ms && now >= ae->next_scrub_at;
    if (round || scrub_now) {
        if (ae->cfg.interval_ms)
            ae->next_round_at = now + ae->cfg.interval_ms;
        if (scrub_now)
            ae->next_scrub_at = now + ae->cfg.scrub_interval_ms;
        round_start(ae, (uint32_t)((1ull << AE_RANGES) - 1), scrub_now, false,
                    NULL, 0);
    }
}

struct ae *ae_new(const struct ae_config *cfg, const struct env *env,
                  const uint8_t self[ID_BYTES])
{
    struct ae *ae = calloc(1, sizeof(*ae));
    if (!ae)
        return NULL;
    ae->corrupt = calloc(MAX_CORRUPT, sizeof(*ae->corrupt));
    if (!ae->corrupt) {
        free(ae);
        return NULL;
    }
    ae->cfg = *cfg;
    ae->env = *env;
    memcpy(ae->self, self, ID_BYTES);
    ae->self_idx = -1;
    /* As repl's: ids of this run never match answers to an earlier one. */
    ae->next_req = (env->random ? env->random(env->ctx) : 0) >> 2;
    uint64_t now = env->now_ms(env->ctx);
    ae->next_round_at = now + cfg->interval_ms;
    ae->next_scrub_at = now + cfg->scrub_interval_ms;
    return ae;
}

void ae_free(struct ae *ae)
{
    if (!ae)
        return;
    free(ae->rd.peers);
    free(ae->rd.masks);
    free(ae->rd.pull.k);
    free(ae->rd.push.k);
    ae_scrub_free(ae);
    ae_drop_ring(ae);
    free(ae->slices);
    free(ae->corrupt);
    while (ae->waits) {
        struct push_wait *w = ae->waits;
        ae->waits = w->next;
        free(w);
    }
    free(ae);
}

bool ae_busy(const struct ae *ae)
{
    return ae->pending_writes > 0;
}

const struct ae_counters *ae_counters(const struct ae *ae)
{
    return &ae->c;
}

void ae_converged(const struct ae *ae, uint64_t out[AE_RANGES])
{
    memcpy(out, ae->converged, sizeof(ae->converged));
}
