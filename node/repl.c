/* Replication: the view, peer messages, local writes, the replica side and
 * the tick. See repl.h and repl_int.h. */
#include "repl_int.h"

#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void repl_config_defaults(struct repl_config *cfg)
{
    *cfg = (struct repl_config){.vnodes = RING_DEFAULT_VNODES,
                                .max_clock_offset_ms = HLC_MAX_OFFSET_MS,
                                .request_timeout_ms = 5000,
                                .hint_replay_ms = 500};
    ring_placement_set_n(&cfg->placement, 3);
}

struct repl *repl_new(const struct repl_config *cfg, const struct env *env,
                      const uint8_t self[ID_BYTES], struct hlc *hlc)
{
    struct repl *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->cfg = *cfg;
    ring_placement_format(&r->cfg.placement, r->placement_text,
                          sizeof(r->placement_text));
    r->self_region = REGION_ANY;
    if (r->cfg.placement.n_regions == 0 && r->cfg.placement.n < 1)
        r->cfg.placement.n = 1;
    if (ring_placement_total(&r->cfg.placement) > REPL_MAX_REPLICAS)
        ring_placement_set_n(&r->cfg.placement, REPL_MAX_REPLICAS);
    r->env = *env;
    memcpy(r->self, self, ID_BYTES);
    r->hlc = hlc;
    /* Request ids start at a random point, so that an answer sent to this
     * node before it restarted never matches a request of the new run. */
    r->next_id = 1 + ((env->random ? env->random(env->ctx) : 0) >> 2);
    return r;
}

static void free_rings(struct repl *r);

void repl_free(struct repl *r)
{
    if (!r)
        return;
    while (r->reqs)
        repl_creq_free(r, r->reqs);
    repl_replay_end(r);
    free_rings(r);
    free(r->ring_info);
    free(r->view);
    free(r->view_region);
    free(r);
}

/* ---- the view ---- */

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, ID_BYTES);
}

/* Who a ring holds (DESIGN §7b): members that have not left, whose phase
 * is read (normal, joined, leaving). A change flips one member in or out. */
static bool phase_read(uint8_t phase)
{
    return phase == RING_NORMAL || phase == RING_JOINED ||
           phase == RING_LEAVING;
}

static bool phase_changing(uint8_t phase)
{
    return phase == RING_JOINING || phase == RING_JOINED ||
           phase == RING_LEAVING || phase == RING_LEFT;
}

/* Builds the ring of the members of in[0..n) (sorted by id) that `take`
 * says, flipping the one with index flip (SIZE_MAX: none).
 * @retval the ring; NULL when empty or out of memory (*nomem says). */
static struct ring *build_ring(const struct repl *r,
                               const struct wire_member *in, size_t n,
                               size_t flip, bool *nomem)
{
    struct ring_node *rn = calloc(n ? n : 1, sizeof(*rn));
    if (!rn) {
        *nomem = true;
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool take = in[i].status != MEMBER_LEFT && phase_read(in[i].ring);
        if (i == flip)
            take = !take;
        if (!take)
            continue;
        memcpy(rn[k].id, in[i].id, ID_BYTES);
        memcpy(rn[k].region, in[i].region, sizeof(rn[k].region));
        memcpy(rn[k].zone, in[i].zone, sizeof(rn[k].zone));
        k++;
    }
    struct ring *ring = k ? ring_build(rn, k, r->cfg.vnodes) : NULL;
    *nomem |= k && !ring;
    free(rn);
    return ring;
}

uint64_t repl_view_digest(const struct wire_member *sorted, size_t n)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 8);
    for (size_t i = 0; i < n; i++) {
        const struct wire_member *w = &sorted[i];
        if (w->status == MEMBER_LEFT || w->ring == RING_WAITING)
            continue;
        crypto_generichash_update(&st, w->id, ID_BYTES);
        crypto_generichash_update(&st, &w->ring, 1);
        crypto_generichash_update(&st, (const uint8_t *)w->region,
                                  strnlen(w->region, sizeof(w->region)) + 1);
        crypto_generichash_update(&st, (const uint8_t *)w->zone,
                                  strnlen(w->zone, sizeof(w->zone)) + 1);
    }
    uint8_t h[8];
    crypto_generichash_final(&st, h, sizeof(h));
    return be64_get(h);
}

static void free_rings(struct repl *r)
{
    ring_free(r->ring);
    r->ring = NULL;
    for (size_t i = 0; i < r->n_wrings; i++)
        ring_free(r->wring[i]);
    r->n_wrings = 0;
}

void repl_set_rtt_source(struct repl *r,
                         uint32_t (*fn)(void *arg, const uint8_t *id),
                         void *arg)
{
    r->rtt = fn;
    r->rtt_arg = arg;
}

static uint8_t intern_region(struct repl *r, const char *name)
{
    for (size_t i = 0; i < r->n_regions; i++)
        if (strcmp(r->regions[i], name) == 0)
            return (uint8_t)i;
    if (r->n_regions == MAX_REGION_NAMES)
        return REGION_ANY;
    snprintf(r->regions[r->n_regions], GOSSIP_NAME_MAX, "%s", name);
    return (uint8_t)r->n_regions++;
}

uint8_t repl_region_of(struct repl *r, const uint8_t id[ID_BYTES])
{
    const struct wire_member *w = repl_member_info(r, id);
    return w ? r->view_region[w - r->view] : REGION_ANY;
}

/* The --replicas setting most live members hold (ties: the first in text
 * order, so that every node picks the same), and whether this node's
 * differs; members that do not say are not counted. Logged on change. */
static void check_placement(struct repl *r)
{
    const char *best = r->placement_text;
    size_t best_n = 0, live = 0;
    for (size_t i = 0; i < r->n_view; i++) {
        const struct wire_member *a = &r->view[i];
        if (a->status >= MEMBER_DEAD || !a->replicas[0])
            continue;
        live++;
        size_t same = 0;
        for (size_t j = 0; j < r->n_view; j++)
            same += r->view[j].status < MEMBER_DEAD &&
                    strcmp(r->view[j].replicas, a->replicas) == 0;
        if (same > best_n ||
            (same == best_n && strcmp(a->replicas, best) < 0)) {
            best = a->replicas;
            best_n = same;
        }
    }
    bool mismatch = live > 0 && strcmp(best, r->placement_text) != 0;
    if (mismatch && (!r->mismatch || strcmp(best, r->cluster_text) != 0))
        log_warn("this node's --replicas %s differs from the cluster's %s "
                 "(held by %zu of %zu live members): it coordinates nothing "
                 "until restarted with --replicas %s",
                 r->placement_text, best, best_n, live, best);
    else if (!mismatch && r->mismatch)
        log_info("--replicas %s is the cluster's again: coordinating",
                 r->placement_text);
    snprintf(r->cluster_text, sizeof(r->cluster_text), "%s", best);
    r->mismatch = mismatch;
    r->counters.placement_mismatch = mismatch;

    /* A region short of nodes, said once the ring is settled (not while
     * nodes join one by one). */
    if (!r->ring || !r->ready || r->n_wrings)
        return;
    char text[sizeof(r->short_text)] = "";
    ring_placement_short(r->ring, &r->cfg.placement, text, sizeof(text));
    if (text[0] && strcmp(text, r->short_text) != 0)
        log_warn("%s", text);
    snprintf(r->short_text, sizeof(r->short_text), "%s", text);
}

void repl_set_members(struct repl *r, const struct wire_member *members,
                      size_t n)
{
    struct wire_member *view = calloc(n ? n : 1, sizeof(*view));
    struct wire_member *in = calloc(n ? n : 1, sizeof(*in));
    uint8_t *regions = malloc(n ? n : 1);
    if (!view || !in || !regions) {
        free(view);
        free(in);
        free(regions);
        return; /* keep the old view */
    }
    memcpy(view, members, n * sizeof(*view));
    qsort(view, n, sizeof(*view), cmp_id);
    /* The rings are rebuilt when a member's phase, region or zone changes,
     * or one comes or goes: placement depends on all of them. */
    uint64_t digest = repl_view_digest(view, n);
    if (digest != r->digest || (!r->ring && n)) {
        bool nomem = false;
        struct ring *ring = build_ring(r, view, n, SIZE_MAX, &nomem);
        struct ring *w[MAX_RINGS - 1];
        size_t nw = 0;
        for (size_t i = 0; i < n && nw < MAX_RINGS - 1; i++)
            if (view[i].status != MEMBER_LEFT && phase_changing(view[i].ring)) {
                struct ring *x = build_ring(r, view, n, i, &nomem);
                if (x)
                    w[nw++] = x;
            }
        if (nomem) {
            ring_free(ring);
            for (size_t i = 0; i < nw; i++)
                ring_free(w[i]);
            free(view);
            free(in);
            free(regions);
            return; /* the next tick tries again */
        }
        free_rings(r);
        r->ring = ring;
        memcpy(r->wring, w, nw * sizeof(*w));
        r->n_wrings = nw;
        r->digest = digest;
    }
    /* ring_info: the read ring's members, in its (id) order. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (view[i].status != MEMBER_LEFT && phase_read(view[i].ring))
            in[k++] = view[i];
    free(r->ring_info);
    r->ring_info = in;
    for (size_t i = 0; i < n; i++)
        regions[i] = intern_region(r, view[i].region);
    free(r->view);
    free(r->view_region);
    r->view = view;
    r->view_region = regions;
    r->n_view = n;
    r->self_region = repl_region_of(r, r->self);
    check_placement(r);
}

uint64_t repl_digest(const struct repl *r)
{
    return r->digest;
}

size_t repl_write_rings(const struct repl *r, const struct ring **out,
                        size_t cap)
{
    size_t n = 0;
    if (r->ring && n < cap)
        out[n++] = r->ring;
    for (size_t i = 0; i < r->n_wrings && n < cap; i++)
        out[n++] = r->wring[i];
    return n;
}

void repl_set_ready(struct repl *r, bool ready)
{
    r->ready = ready;
}

bool repl_is_self(const struct repl *r, const uint8_t id[ID_BYTES])
{
    return memcmp(r->self, id, ID_BYTES) == 0;
}

/* Worth asking: alive or only suspected (it may well answer). */
bool repl_node_up(const struct repl *r, const uint8_t id[ID_BYTES])
{
    if (repl_is_self(r, id))
        return true;
    const struct wire_member *w = repl_member_info(r, id);
    return w && (w->status == MEMBER_ALIVE || w->status == MEMBER_SUSPECT);
}

/* Any member of the view, on a ring or not. */
const struct wire_member *repl_member_info(const struct repl *r,
                                           const uint8_t id[ID_BYTES])
{
    if (!r->view)
        return NULL;
    return bsearch(id, r->view, r->n_view, sizeof(*r->view), cmp_id);
}

/* ---- messages ---- */

void repl_send_msg(struct repl *r, const uint8_t to[ID_BYTES], struct msg *m)
{
    m->hlc = hlc_now(r->hlc, r->env.wall_ms(r->env.ctx));
    r->env.send(r->env.ctx, to, m);
}

/* Merges a peer's clock, unless it runs further ahead than any honest
 * clock may (DESIGN §4). @retval false: refused. */
static bool observe_peer_clock(struct repl *r, const uint8_t from[ID_BYTES],
                               uint64_t hlc)
{
    uint64_t wall = r->env.wall_ms(r->env.ctx);
    if (hlc_too_far_ahead(hlc, wall, r->cfg.max_clock_offset_ms)) {
        char hex[2 * ID_BYTES + 1];
        hex_encode(hex, from, ID_BYTES);
        if (r->counters.clock_refused++ % 100 == 0)
            log_warn("refused a message from node %.12s: its clock is %llu ms "
                     "ahead of ours (max %u; %llu refused so far)",
                     hex, (unsigned long long)(hlc_physical_ms(hlc) - wall),
                     r->cfg.max_clock_offset_ms,
                     (unsigned long long)r->counters.clock_refused);
        return false;
    }
    hlc_observe(r->hlc, hlc, wall);
    return true;
}

/* ---- local storage writes ---- */

/* A local write of rec (copied), for owner when op is a hint operation;
 * local_submit hands it to storage.
 * @retval the write, or NULL when out of memory. */
struct local_write *repl_local_write_new(const struct storage_record *rec,
                                         uint8_t kind, uint8_t op,
                                         const uint8_t *owner)
{
    size_t vlen = rec->tombstone ? 0 : rec->value_len;
    struct local_write *lw = calloc(1, sizeof(*lw) + rec->key_len + vlen);
    if (!lw)
        return NULL;
    memcpy(lw->data, rec->key, rec->key_len);
    if (vlen)
        memcpy(lw->data + rec->key_len, rec->value, vlen);
    lw->w.key = lw->data;
    lw->w.key_len = rec->key_len;
    lw->w.value = lw->data + rec->key_len;
    lw->w.value_len = vlen;
    lw->w.version = rec->version;
    memcpy(lw->w.origin, rec->origin, ID_BYTES);
    lw->w.tombstone = rec->tombstone;
    lw->w.op = op;
    if (owner)
        memcpy(lw->w.owner, owner, ID_BYTES);
    lw->w.ctx = lw;
    lw->kind = kind;
    return lw;
}

void repl_local_submit(struct repl *r, struct local_write *lw)
{
    if (!lw)
        return; /* out of memory: as if the write was lost */
    r->local_inflight++;
    r->env.store->submit(r->env.store_ctx, &lw->w);
}

/* Sends rec as a replica write (a hint for owner when owner is set). */
void repl_send_write(struct repl *r, const uint8_t to[ID_BYTES], uint64_t id,
                     const struct storage_record *rec, const uint8_t *owner)
{
    struct msg m = {.type = MSG_REPLICA_WRITE, .id = id};
    struct msg_replica *q = &m.u.replica;
    q->key = rec->key;
    q->key_len = rec->key_len;
    q->value = rec->value;
    q->value_len = rec->value_len;
    q->version = rec->version;
    memcpy(q->origin, rec->origin, ID_BYTES);
    q->tombstone = rec->tombstone;
    q->hinted = owner != NULL;
    if (owner)
        memcpy(q->owner, owner, ID_BYTES);
    repl_send_msg(r, to, &m);
}

/* ---- the replica ---- */

static void answer_peer(struct repl *r, const uint8_t to[ID_BYTES], uint64_t id,
                        const uint8_t *key, size_t key_len, int code)
{
    struct msg m = {.type = MSG_REPLICA_ANSWER, .id = id};
    m.u.replica.key = key;
    m.u.replica.key_len = key_len;
    m.u.replica.code = code;
    repl_send_msg(r, to, &m);
}

static void serve_read(struct repl *r, const uint8_t from[ID_BYTES],
                       const struct msg *m)
{
    struct storage_record rec;
    struct msg a = {.type = MSG_REPLICA_ANSWER, .id = m->id};
    a.u.replica.key = m->u.replica.key;
    a.u.replica.key_len = m->u.replica.key_len;
    a.u.replica.digest = m->u.replica.digest;
    /* Only members read replicas: a process that holds the cluster secret
     * but never joined gets nothing (security review M3). A member this
     * view has not heard of yet is refused the same way; "unavailable"
     * lets its coordinator count the answer as missing, as it would a
     * replica down, and the client try again. */
    if (!repl_member_info(r, from)) {
        answer_peer(r, from, m->id, m->u.replica.key, m->u.replica.key_len,
                    KV_ERR_UNAVAILABLE);
        return;
    }
    r->counters.replica_reads++;
    int rc = r->env.store->get(r->env.store_ctx, m->u.replica.key,
                               m->u.replica.key_len, &rec);
    if (rc == KV_ERR_NOT_FOUND) {
        repl_send_msg(r, from, &a);
        return;
    }
    if (rc) {
        answer_peer(r, from, m->id, m->u.replica.key, m->u.replica.key_len, rc);
        return;
    }
    a.u.replica.found = true;
    a.u.replica.version = rec.version;
    memcpy(a.u.replica.origin, rec.origin, ID_BYTES);
    a.u.replica.tombstone = rec.tombstone;
    memcpy(a.u.replica.checksum, rec.checksum, sizeof(a.u.replica.checksum));
    if (!a.u.replica.digest) {
        a.u.replica.value = rec.value;
        a.u.replica.value_len = rec.value_len;
    }
    repl_send_msg(r, from, &a);
    storage_record_free(&rec);
}

static void serve_write(struct repl *r, const uint8_t from[ID_BYTES],
                        const struct msg *m)
{
    const struct msg_replica *q = &m->u.replica;
    /* Only members write replicas, as only members read them (security
     * review M3): a process that holds the cluster secret but never joined
     * cannot plant records. */
    if (!repl_member_info(r, from)) {
        answer_peer(r, from, m->id, q->key, q->key_len, KV_ERR_UNAVAILABLE);
        return;
    }
    r->counters.replica_writes++;
    /* A record stamped further ahead of this node's clock than peers may
     * be is refused, whoever relays it (a hint replay, read repair): it
     * would win every later write (DESIGN §4). */
    uint64_t wall = r->env.wall_ms(r->env.ctx);
    if (hlc_too_far_ahead(q->version, wall, r->cfg.max_clock_offset_ms)) {
        if (r->counters.clock_refused++ % 100 == 0)
            log_warn("refused a record stamped %llu ms ahead of our clock",
                     (unsigned long long)(hlc_physical_ms(q->version) - wall));
        answer_peer(r, from, m->id, m->u.replica.key, m->u.replica.key_len,
                    KV_ERR_CLOCK);
        return;
    }
    struct storage_record rec = {.version = q->version,
                                 .tombstone = q->tombstone,
                                 .key = q->key,
                                 .key_len = q->key_len,
                                 .value = (uint8_t *)q->value,
                                 .value_len = q->value_len};
    memcpy(rec.origin, q->origin, ID_BYTES);
    /* A hint naming this node (its coordinator thought it down) is simply
     * its own copy. */
    bool hint = q->hinted && !repl_is_self(r, q->owner);
    struct local_write *lw = repl_local_write_new(
        &rec, LW_PEER, hint ? STORAGE_PUT_HINT : STORAGE_PUT,
        hint ? q->owner : NULL);
    if (!lw) {
        answer_peer(r, from, m->id, m->u.replica.key, m->u.replica.key_len,
                    KV_ERR_NOMEM);
        return;
    }
    lw->req_id = m->id;
    memcpy(lw->peer, from, ID_BYTES);
    repl_local_submit(r, lw);
}

static void on_answer(struct repl *r, const uint8_t from[ID_BYTES],
                      const struct msg *m)
{
    const struct msg_replica *a = &m->u.replica;
    if (r->replay.active && m->id >= r->replay.first_id &&
        m->id < r->replay.first_id + r->replay.n) {
        const struct storage_record *rec =
            &r->replay.recs[m->id - r->replay.first_id];
        if (rec->key_len == a->key_len &&
            memcmp(rec->key, a->key, a->key_len) == 0)
            repl_replay_answer(r, from, m->id, a->code);
        return;
    }
    struct creq *c = repl_creq_find(r, m->id);
    long i = c ? repl_pending_target(c, from) : -1;
    if (i < 0 || c->key_len != a->key_len ||
        memcmp(c->key, a->key, a->key_len) != 0)
        return; /* late, or for another request (a reused id) */
    int code = a->code;
    uint64_t wall = r->env.wall_ms(r->env.ctx);
    if (code == 0 && !repl_is_write(c) && a->found &&
        hlc_too_far_ahead(a->version, wall, r->cfg.max_clock_offset_ms))
        code = KV_ERR_CLOCK; /* a record from a clock running ahead */
    if (code == 0 && !repl_is_write(c)) {
        struct target *t = &c->t[i];
        if (a->found && a->digest != t->digest)
            return; /* not the answer this target was asked for */
        repl_take_read(c, t, a, a->value, a->value_len);
        /* Versions read are merged into the clock too (F7): a write after
         * this read is stamped above what it read. */
        if (a->found)
            hlc_observe(r->hlc, a->version, wall);
        if (a->digest && a->found &&
            (!c->have_newest ||
             storage_newer(a->version, a->origin, c->version, c->origin))) {
            repl_fetch_record(r, c, (size_t)i);
            repl_progress(r, c);
            return;
        }
    }
    repl_target_done(r, c, (size_t)i, code);
    repl_progress(r, c);
}

void repl_on_peer_message(struct repl *r, const uint8_t from[ID_BYTES],
                          const struct msg *m)
{
    if (!observe_peer_clock(r, from, m->hlc)) {
        if (m->type == MSG_REPLICA_ANSWER) {
            struct msg refused = *m;
            refused.u.replica.code = KV_ERR_CLOCK;
            on_answer(r, from, &refused);
        } else {
            answer_peer(r, from, m->id, m->u.replica.key, m->u.replica.key_len,
                        KV_ERR_CLOCK);
        }
        return;
    }
    switch (m->type) {
    case MSG_REPLICA_READ:
        serve_read(r, from, m);
        break;
    case MSG_REPLICA_WRITE:
        serve_write(r, from, m);
        break;
    case MSG_REPLICA_ANSWER:
        on_answer(r, from, m);
        break;
    }
}

void repl_on_peer_down(struct repl *r, const uint8_t id[ID_BYTES])
{
    for (struct creq *c = r->reqs, *next; c; c = next) {
        next = c->next;
        long i = repl_pending_target(c, id);
        if (i < 0)
            continue;
        repl_target_done(r, c, (size_t)i, KV_ERR_UNAVAILABLE);
        repl_progress(r, c);
    }
    if (r->replay.active && !r->replay.rehome &&
        memcmp(r->replay.owner, id, ID_BYTES) == 0)
        repl_replay_end(r);
}

void repl_on_stored(struct repl *r, struct storage_write *w)
{
    struct local_write *lw = w->ctx;
    r->local_inflight--;
    if (w->result == KV_ERR_FULL)
        r->counters.store_full++;
    switch (lw->kind) {
    case LW_COORD: {
        struct creq *c = repl_creq_find(r, lw->req_id);
        long i = c ? repl_pending_target(c, r->self) : -1;
        if (i >= 0) {
            repl_target_done(r, c, (size_t)i, w->result);
            repl_progress(r, c);
        }
        break;
    }
    case LW_PEER:
        if (w->result == 0 && w->op == STORAGE_PUT_HINT && w->applied)
            r->counters.hints_stored++;
        answer_peer(r, lw->peer, lw->req_id, w->key, w->key_len, w->result);
        break;
    case LW_REHOME:
        repl_replay_answer(r, r->self, lw->req_id, w->result);
        break;
    default: /* repairs and hints kept here need no answer */
        if (w->result)
            log_warn("storage: a %s failed: %s",
                     lw->kind == LW_REPAIR     ? "read repair"
                     : lw->kind == LW_HINT_PUT ? "hint"
                                               : "hint deletion",
                     kv_strerror(w->result));
        break;
    }
    if (lw->kind != LW_PEER && w->op == STORAGE_PUT_HINT && w->result == 0 &&
        w->applied)
        r->counters.hints_stored++;
    free(lw);
}

void repl_tick(struct repl *r)
{
    uint64_t now = r->env.now_ms(r->env.ctx);
    for (struct creq *c = r->reqs, *next; c; c = next) {
        next = c->next;
        if (now < c->deadline)
            continue;
        /* Outstanding targets will not count any more. A write this node
         * cannot confirm on a replica becomes a hint held here, replayed
         * (harmlessly, if the replica had it) once the replica is alive. */
        for (size_t i = 0; i < c->n_targets; i++) {
            struct target *t = &c->t[i];
            if (t->state != T_PENDING)
                continue;
            t->state = T_FAILED;
            t->code = KV_ERR_TIMEOUT;
            if (repl_is_write(c) && !repl_is_self(r, t->id))
                repl_hold_hint(r, c, t->hinted ? t->owner : t->id);
        }
        if (!c->answered) {
            r->counters.timeouts++;
            if (c->type == MSG_WHERE) {
                repl_reply_where(r, c);
            } else {
                struct tally t;
                char text[160];
                repl_tally(c, &t);
                repl_shortfall_text(r, c, &t, true, text, sizeof(text));
                repl_reply_result(r, c, KV_ERR_TIMEOUT, text);
            }
        }
        repl_progress(r, c);
    }
    if (r->replay.active && now >= r->replay.deadline)
        repl_replay_end(r);
    if (!r->replay.active && now >= r->next_replay_ms) {
        r->next_replay_ms = now + r->cfg.hint_replay_ms;
        repl_replay_start(r);
    }
}

bool repl_busy(const struct repl *r)
{
    return r->local_inflight > 0 || r->reqs != NULL;
}

const struct repl_counters *repl_counters(const struct repl *r)
{
    return &r->counters;
}

const struct ring *repl_ring(const struct repl *r)
{
    return r->ring;
}

int repl_ring_info(struct repl *r, struct msg_ring *out)
{
    memset(out, 0, sizeof(*out));
    out->replicas = ring_placement_total(&r->cfg.placement);
    if (!r->ring)
        return 0;
    size_t n = ring_size(r->ring);
    double *share = calloc(n, sizeof(*share));
    out->rows = calloc(n, sizeof(*out->rows));
    if (!share || !out->rows) {
        free(share);
        free(out->rows);
        out->rows = NULL;
        return KV_ERR_NOMEM;
    }
    ring_ownership(r->ring, share);
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        struct ring_row *row = &out->rows[i];
        row->info = r->ring_info[i];
        row->share_ppm = (uint32_t)(share[i] * 1e6 + 0.5);
        row->tokens = calloc(r->cfg.vnodes, sizeof(uint64_t));
        if (!row->tokens) {
            free(share);
            repl_ring_free(out);
            return KV_ERR_NOMEM;
        }
        row->n_tokens = r->cfg.vnodes;
        for (uint32_t t = 0; t < r->cfg.vnodes; t++)
            row->tokens[t] = ring_vnode_token(row->info.id, t);
    }
    free(share);
    return 0;
}

void repl_ring_free(struct msg_ring *ring)
{
    for (size_t i = 0; ring->rows && i < ring->n; i++)
        free(ring->rows[i].tokens);
    free(ring->rows);
    ring->rows = NULL;
    ring->n = 0;
}
