/* Replication's coordinator: a client request's targets on the ring,
 * fallbacks with hints, quorums, the answer, and read repair (repl_int.h). */
#include "repl_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the coordinator ---- */

struct creq *repl_creq_find(struct repl *r, uint64_t id)
{
    for (struct creq *c = r->buckets[id % BUCKETS]; c; c = c->hnext)
        if (c->id == id)
            return c;
    return NULL;
}

void repl_creq_free(struct repl *r, struct creq *c)
{
    struct creq **pp = &r->buckets[c->id % BUCKETS];
    while (*pp != c)
        pp = &(*pp)->hnext;
    *pp = c->hnext;
    if (c->prev)
        c->prev->next = c->next;
    else
        r->reqs = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->key);
    free(c->newest_value);
    free(c->walk);
    free(c);
}

bool repl_is_write(const struct creq *c)
{
    return c->type == MSG_PUT || c->type == MSG_DEL;
}

/* The record a request carries: a write's, or the newest a read found. */
static struct storage_record creq_record(const struct creq *c)
{
    struct storage_record rec = {.version = c->version,
                                 .tombstone = c->tombstone,
                                 .key = c->key,
                                 .key_len = c->key_len};
    memcpy(rec.origin, c->origin, ID_BYTES);
    rec.value = repl_is_write(c) ? c->value : c->newest_value;
    rec.value_len = repl_is_write(c) ? c->value_len : c->newest_len;
    return rec;
}

/* Counts, ring by ring, the replicas of its preference list that
 * confirmed and those still out. A fallback holding a hint keeps the write
 * durable but never counts toward W: only then does every quorum read meet
 * every quorum write (R + W > N), so a client never reads older than what
 * it was told is written. While a member's ring phase changes, a write
 * needs its quorum on every ring of the view (DESIGN §7b). */
void repl_tally(const struct creq *c, struct tally *t)
{
    memset(t, 0, sizeof(*t));
    t->met = true;
    t->region = REGION_ANY;
    /* The counts shown are the first hopeless quorum's, else the first one
     * short, else the read ring's first. */
    int rank = 3;
    for (size_t q = 0; q < c->n_groups; q++) {
        const struct quorum *g = &c->g[q];
        size_t ok = 0, could = 0;
        for (size_t i = 0; i < c->n_targets; i++) {
            const struct target *x = &c->t[i];
            if (x->hinted || !(x->rings & (1u << g->ring)) ||
                (g->region != REGION_ANY && x->region != g->region))
                continue;
            ok += x->state == T_OK;
            could += x->state == T_PENDING;
        }
        bool short_now = ok < g->need;
        bool hopeless = ok + could < g->need;
        t->met &= !short_now;
        t->hopeless |= hopeless;
        int r = hopeless ? 0 : short_now ? 1 : 2;
        if (r < rank) {
            rank = r;
            t->ok = ok;
            t->need = g->need;
            t->n = g->n;
            t->region = g->region;
        }
    }
    for (size_t i = 0; i < c->n_targets; i++) {
        t->pending += c->t[i].state == T_PENDING;
        /* A read answers with the newest record its replicas named: while
         * one that sent a newer digest sends the record, it waits. */
        t->met &= !(c->t[i].fetched && c->t[i].state == T_PENDING);
    }
}

void repl_reply_result(struct repl *r, struct creq *c, int code,
                       const char *text)
{
    c->answered = true;
    if (!c->client)
        return;
    struct msg m = {
        .type = MSG_RESULT, .id = c->client_id, .hlc = r->hlc->last};
    struct msg_result *res = &m.u.result;
    res->code = code;
    res->text = text ? text : "";
    res->text_len = text ? strlen(text) : 0;
    if (code == 0 && repl_is_write(c)) {
        res->version = c->version;
    } else if (c->type == MSG_GET && c->have_newest) {
        res->version = c->version;
        if (code == 0) {
            res->has_value = true;
            res->value = c->newest_value;
            res->value_len = c->newest_len;
        }
    }
    r->env.reply(r->env.ctx, c->client, &m);
}

void repl_reply_where(struct repl *r, struct creq *c)
{
    c->answered = true;
    if (!c->client)
        return;
    struct where_row rows[REPL_MAX_REPLICAS];
    struct msg m = {
        .type = MSG_WHERE_RESULT, .id = c->client_id, .hlc = r->hlc->last};
    memset(rows, 0, sizeof(rows));
    for (size_t i = 0; i < c->n_targets && i < REPL_MAX_REPLICAS; i++) {
        const struct target *t = &c->t[i];
        const struct wire_member *w = repl_member_info(r, t->id);
        if (w)
            rows[i].info = *w;
        else
            memcpy(rows[i].info.id, t->id, ID_BYTES);
        rows[i].state = t->state == T_OK       ? WHERE_ANSWERED
                        : t->state == T_DOWN   ? WHERE_DOWN
                        : t->state == T_FAILED ? WHERE_ERROR
                                               : WHERE_NO_ANSWER;
        rows[i].code = t->code;
        rows[i].found = t->found;
        rows[i].tombstone = t->tombstone;
        rows[i].version = t->version;
    }
    m.u.where.token = c->token;
    m.u.where.n = c->n_targets;
    m.u.where.rows = rows;
    r->env.reply(r->env.ctx, c->client, &m);
}

/* The error a failed request reports: when every replica that answered
 * failed the same way (a full disk, say), that error; else unavailable. */
static int shortfall_code(const struct creq *c)
{
    int code = 0;
    for (size_t i = 0; i < c->n_targets; i++) {
        int e = c->t[i].state == T_FAILED ? c->t[i].code : 0;
        if (e == 0 || e == KV_ERR_UNAVAILABLE)
            continue;
        if (code && e != code)
            return KV_ERR_UNAVAILABLE;
        code = e;
    }
    return code ? code : KV_ERR_UNAVAILABLE;
}

/* "2 of 3 replicas needed, 1 acknowledged" and what it means. */
void repl_shortfall_text(const struct repl *r, const struct creq *c,
                         const struct tally *tl, bool timed_out, char *buf,
                         size_t cap)
{
    size_t ok = tl->ok;
    int code = shortfall_code(c);
    /* "Not applied" only when nothing took the write: no replica or
     * fallback has it in flight or stored, none whose link failed after it
     * went out may have it, and no hint of it is kept anywhere (a hint is
     * replayed later, and then the write is applied). */
    bool took = c->held_hint;
    for (size_t i = 0; i < c->n_targets; i++) {
        const struct target *t = &c->t[i];
        took |= t->state == T_PENDING || t->state == T_OK ||
                (t->state == T_FAILED && t->code == KV_ERR_UNAVAILABLE);
    }
    bool maybe = repl_is_write(c) && (ok > 0 || timed_out || took);
    bool in = tl->region != REGION_ANY && tl->region < r->n_regions;
    snprintf(buf, cap, "%s: %u of %u replicas%s%s needed, %zu %s%s%s%s",
             timed_out ? "timed out" : "unavailable", (unsigned)tl->need,
             (unsigned)tl->n, in ? " in " : "",
             in ? r->regions[tl->region] : "", ok,
             repl_is_write(c) ? "acknowledged" : "answered",
             code != KV_ERR_UNAVAILABLE ? "; replicas said: " : "",
             code != KV_ERR_UNAVAILABLE ? kv_strerror(code) : "",
             maybe              ? "; the write may still have been applied"
             : repl_is_write(c) ? "; it was not applied"
                                : "");
}

/* Writes the newest version back to replicas that answered with less. */
static void read_repair(struct repl *r, struct creq *c)
{
    if (!c->have_newest)
        return;
    for (size_t i = 0; i < c->n_targets; i++) {
        struct target *t = &c->t[i];
        if (t->state != T_OK)
            continue;
        if (t->found
                ? !storage_newer(c->version, c->origin, t->version, t->origin)
                : c->tombstone)
            continue;
        r->counters.read_repairs++;
        struct storage_record rec = creq_record(c);
        if (repl_is_self(r, t->id))
            repl_local_submit(
                r, repl_local_write_new(&rec, LW_REPAIR, STORAGE_PUT, NULL));
        else
            repl_send_write(r, t->id, 0, &rec, NULL);
    }
}

/* Looks at the targets' states: answers the client once it can, and ends
 * the request once nothing is outstanding. */
static void plan(struct repl *r, struct creq *c);

void repl_progress(struct repl *r, struct creq *c)
{
    struct tally t;
    repl_tally(c, &t);
    /* A write is acknowledged under the view it reached its quorums in:
     * when the rings changed since it was planned (a phase moved), it
     * first reaches the new rings' replicas too (DESIGN §7b). */
    if (!c->answered && t.met && repl_is_write(c) && c->digest != r->digest) {
        plan(r, c);
        repl_tally(c, &t);
    }
    if (!c->answered) {
        char text[160];
        if (c->type == MSG_WHERE) {
            if (t.pending == 0)
                repl_reply_where(r, c);
        } else if (t.met) {
            bool gone = c->type == MSG_GET && (!c->have_newest || c->tombstone);
            repl_reply_result(r, c, gone ? KV_ERR_NOT_FOUND : 0, NULL);
        } else if (t.hopeless) {
            repl_shortfall_text(r, c, &t, false, text, sizeof(text));
            repl_reply_result(r, c, shortfall_code(c), text);
        }
    }
    if (t.pending == 0) {
        if (c->type == MSG_GET)
            read_repair(r, c);
        repl_creq_free(r, c);
    }
}

static void send_to_target(struct repl *r, struct creq *c, size_t i);

/* Keeps a hint for owner in this node's own storage. */
void repl_hold_hint(struct repl *r, const struct creq *c,
                    const uint8_t owner[ID_BYTES])
{
    if (repl_is_self(r, owner))
        return;
    struct storage_record rec = creq_record(c);
    repl_local_submit(
        r, repl_local_write_new(&rec, LW_HINT_PUT, STORAGE_PUT_HINT, owner));
}

/* Walks the ring from the key: its preference list, or with full every
 * node, the list first (ring_walk). @retval 0, or KV_ERR_NOMEM. */
static int walk_ring(struct repl *r, struct creq *c, bool full)
{
    size_t n_ring = r->ring ? ring_size(r->ring) : 0;
    size_t cap = full ? n_ring : ring_placement_total(&r->cfg.placement);
    if (cap > n_ring)
        cap = n_ring;
    size_t *idx = malloc((cap ? cap : 1) * sizeof(*idx));
    uint8_t(*walk)[ID_BYTES] = malloc((cap ? cap : 1) * sizeof(*walk));
    if (!idx || !walk) {
        free(idx);
        free(walk);
        return KV_ERR_NOMEM;
    }
    size_t n = !r->ring ? 0
               : full   ? ring_walk(r->ring, c->token, &r->cfg.placement, idx)
                        : ring_preference_list(r->ring, c->token,
                                               &r->cfg.placement, idx);
    for (size_t i = 0; i < n; i++)
        memcpy(walk[i], r->ring_info[idx[i]].id, ID_BYTES);
    free(idx);
    free(c->walk);
    c->walk = walk;
    c->n_walk = n;
    return 0;
}

/* A write target failed: its copy goes to the next healthy node past the
 * preference list, in the owner's region when one is up there (a hint
 * then crosses no WAN), with a hint naming the owner, or stays here as a
 * hint when there is none. The walk past the list is only taken now,
 * when a fallback is needed (the list is its prefix). */
static void add_fallback(struct repl *r, struct creq *c,
                         const uint8_t owner[ID_BYTES])
{
    /* No ring (a node alone that left, while stopping): no fallback, and
     * the hint stays here (correctness review M4). */
    if (r->ring && c->n_walk == c->n_pref && ring_size(r->ring) > c->n_walk)
        walk_ring(r, c, true); /* out of memory: no fallback */
    uint8_t home = repl_region_of(r, owner);
    for (int pass = 0; pass < 2 && c->n_targets < MAX_TARGETS; pass++)
        for (size_t k = c->n_pref; k < c->n_walk; k++) {
            const uint8_t *id = c->walk[k];
            bool used = false;
            for (size_t i = 0; i < c->n_targets; i++)
                used |= memcmp(c->t[i].id, id, ID_BYTES) == 0;
            if (used || !repl_node_up(r, id) ||
                (pass == 0 && repl_region_of(r, id) != home))
                continue;
            struct target *t = &c->t[c->n_targets++];
            memset(t, 0, sizeof(*t));
            memcpy(t->id, id, ID_BYTES);
            memcpy(t->owner, owner, ID_BYTES);
            t->hinted = true;
            t->region = REGION_ANY; /* a hint counts in no quorum */
            send_to_target(r, c, c->n_targets - 1);
            return;
        }
    /* No node past the list can take it (a ring of N nodes, or all of them
     * down): the coordinator keeps the hint itself. */
    c->held_hint |= !repl_is_self(r, owner);
    repl_hold_hint(r, c, owner);
}

void repl_target_done(struct repl *r, struct creq *c, size_t i, int code)
{
    struct target *t = &c->t[i];
    if (t->state != T_PENDING)
        return;
    t->code = code;
    t->state = code == 0 ? T_OK : T_FAILED;
    /* Even once the client has its answer, the copy must land somewhere. */
    if (code != 0 && repl_is_write(c))
        add_fallback(r, c, t->hinted ? t->owner : t->id);
}

/* A read answer: keep it, and the newest value seen. */
void repl_take_read(struct creq *c, struct target *t,
                    const struct msg_replica *a, const uint8_t *value,
                    size_t value_len)
{
    t->found = a->found;
    if (!a->found)
        return;
    t->version = a->version;
    t->tombstone = a->tombstone;
    memcpy(t->origin, a->origin, ID_BYTES);
    memcpy(t->checksum, a->checksum, sizeof(t->checksum));
    if (a->digest)
        return; /* repl.c fetches the record when it is newer */
    if (c->have_newest &&
        !storage_newer(a->version, a->origin, c->version, c->origin))
        return;
    uint8_t *copy = malloc(value_len ? value_len : 1);
    if (!copy)
        return;    /* an older answer stays the newest known */
    if (value_len) /* an empty value may come as no pointer at all */
        memcpy(copy, value, value_len);
    free(c->newest_value);
    c->newest_value = copy;
    c->newest_len = value_len;
    c->version = a->version;
    memcpy(c->origin, a->origin, ID_BYTES);
    c->tombstone = a->tombstone;
    c->have_newest = true;
}

static void local_read(struct repl *r, struct creq *c, size_t i)
{
    struct storage_record rec;
    struct msg_replica a = {0};
    int rc = r->env.store->get(r->env.store_ctx, c->key, c->key_len, &rec);
    if (rc == 0) {
        a.found = true;
        a.version = rec.version;
        a.tombstone = rec.tombstone;
        memcpy(a.origin, rec.origin, ID_BYTES);
        repl_take_read(c, &c->t[i], &a, rec.value, rec.value_len);
        storage_record_free(&rec);
    }
    repl_target_done(r, c, i, rc == KV_ERR_NOT_FOUND ? 0 : rc);
}

static void send_to_target(struct repl *r, struct creq *c, size_t i)
{
    struct target *t = &c->t[i];
    t->state = T_PENDING;
    if (repl_is_self(r, t->id)) {
        if (!repl_is_write(c)) {
            local_read(r, c, i);
            return;
        }
        struct storage_record rec = creq_record(c);
        struct local_write *lw = repl_local_write_new(
            &rec, LW_COORD, t->hinted ? STORAGE_PUT_HINT : STORAGE_PUT,
            t->hinted ? t->owner : NULL);
        if (!lw) {
            repl_target_done(r, c, i, KV_ERR_NOMEM);
            return;
        }
        lw->req_id = c->id;
        repl_local_submit(r, lw);
        return;
    }
    if (repl_is_write(c)) {
        struct storage_record rec = creq_record(c);
        repl_send_write(r, t->id, c->id, &rec, t->hinted ? t->owner : NULL);
        return;
    }
    struct msg m = {.type = MSG_REPLICA_READ, .id = c->id};
    m.u.replica.key = c->key;
    m.u.replica.key_len = c->key_len;
    m.u.replica.digest = t->digest;
    r->counters.digest_reads += t->digest;
    repl_send_msg(r, t->id, &m);
}

void repl_fetch_record(struct repl *r, struct creq *c, size_t i)
{
    struct target *t = &c->t[i];
    t->digest = false;
    t->fetched = true;
    r->counters.digest_fetches++;
    send_to_target(r, c, i);
}

static uint8_t need_for(int consistency, size_t n)
{
    switch (consistency) {
    case CONS_ONE:
    case CONS_LOCAL_ONE:
        return 1;
    case CONS_ALL:
        return (uint8_t)n;
    default:
        return (uint8_t)(n / 2 + 1);
    }
}

static void add_group(struct creq *c, size_t ring, uint8_t region, size_t n)
{
    if (c->n_groups < MAX_GROUPS)
        c->g[c->n_groups++] = (struct quorum){
            (uint8_t)ring, region, need_for(c->consistency, n), (uint8_t)n};
}

/* The quorums ring k's preference list (targets with bit k) must meet:
 * one over all of it, one over this node's region, or one per region. */
static void add_groups(struct repl *r, struct creq *c, size_t k)
{
    uint8_t seen[RING_MAX_REPLICAS];
    size_t n = 0, n_seen = 0, local = 0;
    for (size_t i = 0; i < c->n_targets; i++) {
        const struct target *t = &c->t[i];
        if (t->hinted || !(t->rings & (1u << k)))
            continue;
        n++;
        local += t->region == r->self_region;
        bool known = false;
        for (size_t j = 0; j < n_seen; j++)
            known |= seen[j] == t->region;
        if (!known && n_seen < RING_MAX_REPLICAS)
            seen[n_seen++] = t->region;
    }
    switch (c->consistency) {
    case CONS_LOCAL_ONE:
    case CONS_LOCAL_QUORUM:
        add_group(c, k, r->self_region, local);
        break;
    case CONS_EACH_QUORUM:
        for (size_t j = 0; j < n_seen; j++) {
            size_t m = 0;
            for (size_t i = 0; i < c->n_targets; i++)
                m += !c->t[i].hinted && (c->t[i].rings & (1u << k)) &&
                     c->t[i].region == seen[j];
            add_group(c, k, seen[j], m);
        }
        break;
    default:
        add_group(c, k, REGION_ANY, n);
    }
}

static bool is_local_level(int consistency)
{
    return consistency == CONS_LOCAL_ONE || consistency == CONS_LOCAL_QUORUM;
}

/* A read's order: the nearest replica (by smoothed round trip; this node
 * first) is asked for the record, the others for a digest (DESIGN §6). */
static void choose_reader(struct repl *r, struct creq *c, size_t first_new)
{
    size_t best = SIZE_MAX;
    uint64_t best_rtt = UINT64_MAX;
    for (size_t i = first_new; i < c->n_targets; i++) {
        struct target *t = &c->t[i];
        if (t->state != T_PENDING)
            continue;
        t->digest = true;
        uint64_t rtt = repl_is_self(r, t->id) ? 0
                       : r->rtt               ? r->rtt(r->rtt_arg, t->id)
                                              : 0;
        if (rtt == 0 && !repl_is_self(r, t->id))
            rtt = 1u << 30; /* not measured yet: after those that are */
        if (rtt < best_rtt) {
            best_rtt = rtt;
            best = i;
        }
    }
    if (best == SIZE_MAX)
        return;
    c->t[best].digest = false;
    /* The record is asked for first: it is the answer most likely needed. */
    if (best != first_new) {
        struct target x = c->t[first_new];
        c->t[first_new] = c->t[best];
        c->t[best] = x;
    }
}

/* Puts the key's preference list on each ring of the view as targets,
 * keeping those already there, and says what each ring needs: a read asks
 * the read ring; a write (and where) every ring, so that while a member's
 * phase changes a quorum read under either phase meets it (DESIGN §7b). */
static void plan(struct repl *r, struct creq *c)
{
    const struct ring *rings[MAX_RINGS];
    size_t nr = 0;
    if (repl_is_write(c) || c->type == MSG_WHERE)
        nr = repl_write_rings(r, rings, MAX_RINGS);
    else if (r->ring)
        rings[nr++] = r->ring;
    c->n_rings = (uint8_t)nr;
    c->digest = r->digest;
    c->n_groups = 0;
    for (size_t i = 0; i < c->n_targets; i++)
        c->t[i].rings = 0;
    size_t first_new = c->n_targets;
    for (size_t k = 0; k < nr; k++) {
        size_t idx[REPL_MAX_REPLICAS];
        size_t n =
            ring_preference_list(rings[k], c->token, &r->cfg.placement, idx);
        for (size_t j = 0; j < n; j++) {
            const uint8_t *id = ring_node_at(rings[k], idx[j])->id;
            /* A local read asks only the replicas of its region. */
            if (c->type == MSG_GET && is_local_level(c->consistency) &&
                repl_region_of(r, id) != r->self_region)
                continue;
            size_t i = 0;
            while (i < c->n_targets &&
                   (c->t[i].hinted || memcmp(c->t[i].id, id, ID_BYTES) != 0))
                i++;
            if (i == c->n_targets) {
                if (c->n_targets == MAX_TARGETS)
                    continue; /* counts as missing: the write fails */
                struct target *t = &c->t[c->n_targets++];
                memset(t, 0, sizeof(*t));
                memcpy(t->id, id, ID_BYTES);
                t->region = repl_region_of(r, id);
                t->state = repl_node_up(r, id) ? T_PENDING : T_DOWN;
            }
            c->t[i].rings |= (uint8_t)(1u << k);
        }
        add_groups(r, c, k);
    }
    if (c->type == MSG_GET)
        choose_reader(r, c, first_new);
    for (size_t i = first_new; i < c->n_targets; i++) {
        if (c->t[i].state == T_PENDING)
            send_to_target(r, c, i);
        else if (repl_is_write(c))
            add_fallback(r, c, c->t[i].id);
    }
}

static void reply_early_error(struct repl *r, void *client, uint64_t id,
                              int code, const char *text)
{
    struct msg m = {.type = MSG_RESULT, .id = id, .hlc = r->hlc->last};
    m.u.result.code = code;
    m.u.result.text = text;
    m.u.result.text_len = strlen(text);
    if (client)
        r->env.reply(r->env.ctx, client, &m);
}

int repl_client_request(struct repl *r, void *client, const struct msg *m)
{
    const struct msg_req *q = &m->u.req;
    if (!r->ring || !r->ready) {
        reply_early_error(r, client, m->id, KV_ERR_UNAVAILABLE,
                          "this node is still joining the cluster; try "
                          "again or ask another node");
        return 0;
    }
    if (r->mismatch) {
        char text[320];
        snprintf(text, sizeof(text),
                 "this node's --replicas %s differs from the cluster's %s: "
                 "it coordinates nothing until restarted with the "
                 "cluster's setting; ask another node",
                 r->placement_text, r->cluster_text);
        reply_early_error(r, client, m->id, KV_ERR_UNAVAILABLE, text);
        return 0;
    }
    struct creq *c = calloc(1, sizeof(*c));
    size_t vlen = m->type == MSG_PUT ? q->value_len : 0;
    if (c)
        c->key = malloc(q->key_len + vlen);
    if (c && c->key)
        c->token = storage_token(q->key, q->key_len);
    /* The preference list only; add_fallback walks further if need be. */
    if (!c || !c->key || walk_ring(r, c, false) != 0) {
        if (c)
            free(c->key);
        free(c);
        return KV_ERR_NOMEM;
    }
    memcpy(c->key, q->key, q->key_len);
    if (vlen)
        memcpy(c->key + q->key_len, q->value, vlen);
    c->key_len = q->key_len;
    c->value = c->key + q->key_len;
    c->value_len = vlen;
    c->id = r->next_id++;
    c->client = client;
    c->client_id = m->id;
    c->type = m->type;
    uint32_t timeout =
        q->timeout_ms ? q->timeout_ms : r->cfg.request_timeout_ms;
    c->deadline = r->env.now_ms(r->env.ctx) + timeout;
    c->n_pref = (uint8_t)c->n_walk;
    c->consistency = m->type == MSG_WHERE ? CONS_ALL : q->consistency;
    if (is_local_level(c->consistency)) {
        size_t local = 0;
        for (size_t i = 0; i < c->n_pref; i++)
            local += repl_region_of(r, c->walk[i]) == r->self_region;
        if (local == 0) {
            char text[200];
            snprintf(text, sizeof(text),
                     "no replica of this key is in region %s, this node's: "
                     "%s counts only replicas there; use quorum, or ask a "
                     "node in a region that holds the key",
                     r->self_region < r->n_regions ? r->regions[r->self_region]
                                                   : "(unknown)",
                     consistency_name(c->consistency));
            reply_early_error(r, client, m->id, KV_ERR_INVAL, text);
            free(c->walk);
            free(c->key);
            free(c);
            return 0;
        }
    }
    if (repl_is_write(c)) {
        c->version = hlc_now(r->hlc, r->env.wall_ms(r->env.ctx));
        memcpy(c->origin, r->self, ID_BYTES);
        c->tombstone = m->type == MSG_DEL;
    }
    c->next = r->reqs;
    if (r->reqs)
        r->reqs->prev = c;
    r->reqs = c;
    c->hnext = r->buckets[c->id % BUCKETS];
    r->buckets[c->id % BUCKETS] = c;

    /* One target per preferred replica; a write to one that is down goes to
     * a fallback with a hint instead; a read or where skips it. */
    plan(r, c);
    repl_progress(r, c);
    return 0;
}

void repl_client_gone(struct repl *r, void *client)
{
    for (struct creq *c = r->reqs; c; c = c->next)
        if (c->client == client)
            c->client = NULL;
}

/* Which target of c a node is; -1 when none is pending. */
long repl_pending_target(const struct creq *c, const uint8_t id[ID_BYTES])
{
    for (size_t i = 0; i < c->n_targets; i++)
        if (c->t[i].state == T_PENDING && memcmp(c->t[i].id, id, ID_BYTES) == 0)
            return (long)i;
    return -1;
}
