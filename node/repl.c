/* Replication, sans I/O: coordinator, replica, hinted handoff and read
 * repair (see repl.h). */
#include "repl.h"

#include "../common/common.h"
#include "ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_BYTES CRYPTO_NODE_ID_BYTES
/* Preferred replicas plus the fallbacks a write may try. */
#define MAX_TARGETS (2 * REPL_MAX_REPLICAS + 2)
#define BUCKETS 1024
#define REPLAY_BATCH 64
#define MAX_HINT_OWNERS 64

enum target_state { T_PENDING, T_OK, T_FAILED, T_DOWN };

struct target {
    uint8_t id[ID_BYTES];
    uint8_t owner[ID_BYTES]; /* the preferred replica it stands in for */
    bool hinted;
    uint8_t state; /* enum target_state */
    int32_t code;
    /* a read's answer */
    bool found, tombstone;
    uint64_t version;
    uint8_t origin[ID_BYTES];
};

/* A client request this node coordinates. */
struct creq {
    uint64_t id; /* of the replica messages it sends */
    void *client;
    uint64_t client_id;
    uint8_t type; /* MSG_PUT, MSG_DEL, MSG_GET or MSG_WHERE */
    uint8_t need; /* W or R */
    uint8_t n_pref;
    bool answered;
    uint64_t deadline;
    uint64_t token;
    uint8_t *key, *value; /* one allocation: key, then value */
    size_t key_len, value_len;
    /* a write's record, or a read's newest answer */
    uint64_t version;
    uint8_t origin[ID_BYTES];
    bool tombstone, have_newest;
    uint8_t *newest_value;
    size_t newest_len;
    /* the ring walk from the key, preferred replicas first */
    uint8_t (*walk)[ID_BYTES];
    size_t n_walk, next_fallback;
    size_t n_targets;
    struct target t[MAX_TARGETS];
    struct creq *prev, *next, *hnext;
};

/* A local storage write and what to do once it is durable. */
enum lw_kind {
    LW_COORD,
    LW_PEER,
    LW_REPAIR,
    LW_HINT_PUT,
    LW_HINT_DEL,
    LW_REHOME /* a hint whose owner is gone, written here as a replica */
};

struct local_write {
    struct storage_write w;
    uint8_t kind; /* enum lw_kind */
    uint64_t req_id;
    uint8_t peer[ID_BYTES];
    uint8_t data[]; /* key, then value */
};

/* Where one replayed hint went, and who has confirmed it. */
struct replay_item {
    bool done;
    uint8_t n_targets;
    uint16_t answered; /* bit i: targets[i] answered */
    uint8_t targets[REPL_MAX_REPLICAS][ID_BYTES];
};

/* One batch of hints being offered to their owner, or, when the owner has
 * left or been forgotten, to each key's replicas now. */
struct replay {
    bool active, rehome;
    uint8_t owner[ID_BYTES];
    uint64_t first_id, deadline;
    size_t n, open;
    struct storage_record *recs;
    struct replay_item *items;
};

struct repl {
    struct repl_config cfg;
    struct repl_env env;
    uint8_t self[ID_BYTES];
    struct hlc *hlc;
    struct ring *ring;
    struct wire_member *ring_info; /* by ring index */
    struct creq *reqs, *buckets[BUCKETS];
    uint64_t next_id;
    size_t local_inflight;
    struct replay replay;
    uint8_t last_owner[ID_BYTES];
    uint64_t next_replay_ms;
    bool ready;
    struct repl_counters counters;
};

void repl_config_defaults(struct repl_config *cfg)
{
    *cfg = (struct repl_config){.replicas = 3,
                                .vnodes = RING_DEFAULT_VNODES,
                                .max_clock_offset_ms = 500,
                                .request_timeout_ms = 5000,
                                .hint_replay_ms = 500};
}

struct repl *repl_new(const struct repl_config *cfg, const struct repl_env *env,
                      const uint8_t self[ID_BYTES], struct hlc *hlc)
{
    struct repl *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->cfg = *cfg;
    if (r->cfg.replicas < 1)
        r->cfg.replicas = 1;
    if (r->cfg.replicas > REPL_MAX_REPLICAS)
        r->cfg.replicas = REPL_MAX_REPLICAS;
    r->env = *env;
    memcpy(r->self, self, ID_BYTES);
    r->hlc = hlc;
    r->next_id = 1;
    return r;
}

static void creq_free(struct repl *r, struct creq *c);
static void replay_end(struct repl *r);

void repl_free(struct repl *r)
{
    if (!r)
        return;
    while (r->reqs)
        creq_free(r, r->reqs);
    replay_end(r);
    ring_free(r->ring);
    free(r->ring_info);
    free(r);
}

/* ---- the view ---- */

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, ID_BYTES);
}

void repl_set_members(struct repl *r, const struct wire_member *members,
                      size_t n)
{
    /* The ring holds every member that has not left, sorted by id. */
    struct wire_member *in = calloc(n ? n : 1, sizeof(*in));
    if (!in)
        return; /* keep the old view */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (members[i].status != MEMBER_LEFT)
            in[k++] = members[i];
    qsort(in, k, sizeof(*in), cmp_id);
    bool same = r->ring && ring_size(r->ring) == k;
    for (size_t i = 0; same && i < k; i++)
        same = memcmp(ring_node_at(r->ring, i)->id, in[i].id, ID_BYTES) == 0;
    if (!same && k > 0) {
        struct ring_node *rn = calloc(k, sizeof(*rn));
        for (size_t i = 0; rn && i < k; i++) {
            memcpy(rn[i].id, in[i].id, ID_BYTES);
            memcpy(rn[i].region, in[i].region, sizeof(rn[i].region));
            memcpy(rn[i].zone, in[i].zone, sizeof(rn[i].zone));
        }
        struct ring *ring = rn ? ring_build(rn, k, r->cfg.vnodes) : NULL;
        free(rn);
        if (!ring) {
            free(in);
            return;
        }
        ring_free(r->ring);
        r->ring = ring;
    }
    if (k == 0) {
        ring_free(r->ring);
        r->ring = NULL;
    }
    /* The ring keeps its nodes in id order (ring.h), as in is sorted. */
    free(r->ring_info);
    r->ring_info = in;
}

void repl_set_ready(struct repl *r, bool ready)
{
    r->ready = ready;
}

/* The ring index of a node id, or -1. */
static long ring_find(const struct repl *r, const uint8_t id[ID_BYTES])
{
    if (!r->ring)
        return -1;
    const struct wire_member *w =
        bsearch(id, r->ring_info, ring_size(r->ring), sizeof(*w), cmp_id);
    return w ? (long)(w - r->ring_info) : -1;
}

static bool is_self(const struct repl *r, const uint8_t id[ID_BYTES])
{
    return memcmp(r->self, id, ID_BYTES) == 0;
}

/* Worth asking: alive or only suspected (it may well answer). */
static bool node_up(const struct repl *r, const uint8_t id[ID_BYTES])
{
    if (is_self(r, id))
        return true;
    long i = ring_find(r, id);
    return i >= 0 && (r->ring_info[i].status == MEMBER_ALIVE ||
                      r->ring_info[i].status == MEMBER_SUSPECT);
}

static const struct wire_member *member_info(const struct repl *r,
                                             const uint8_t id[ID_BYTES])
{
    long i = ring_find(r, id);
    return i >= 0 ? &r->ring_info[i] : NULL;
}

/* ---- messages ---- */

static void send_msg(struct repl *r, const uint8_t to[ID_BYTES], struct msg *m)
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
    if (hlc_physical_ms(hlc) > wall + r->cfg.max_clock_offset_ms) {
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
static struct local_write *local_write_new(const struct storage_record *rec,
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

static void local_submit(struct repl *r, struct local_write *lw)
{
    if (!lw)
        return; /* out of memory: as if the write was lost */
    r->local_inflight++;
    r->env.submit(r->env.ctx, &lw->w);
}

/* Sends rec as a replica write (a hint for owner when owner is set). */
static void send_write(struct repl *r, const uint8_t to[ID_BYTES], uint64_t id,
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
    send_msg(r, to, &m);
}

/* ---- the coordinator ---- */

static struct creq *creq_find(struct repl *r, uint64_t id)
{
    for (struct creq *c = r->buckets[id % BUCKETS]; c; c = c->hnext)
        if (c->id == id)
            return c;
    return NULL;
}

static void creq_free(struct repl *r, struct creq *c)
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

static bool is_write(const struct creq *c)
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
    rec.value = is_write(c) ? c->value : c->newest_value;
    rec.value_len = is_write(c) ? c->value_len : c->newest_len;
    return rec;
}

/* ok: replicas of the preference list that confirmed; pending: targets
 * still out, fallbacks included; could: those of them that would count.
 * A fallback holding a hint keeps the write durable but never counts toward
 * W: only then does every quorum read meet every quorum write (R + W > N),
 * so a client never reads older than what it was told is written. */
static void count_targets(const struct creq *c, size_t *ok, size_t *pending,
                          size_t *could)
{
    *ok = *pending = *could = 0;
    for (size_t i = 0; i < c->n_targets; i++) {
        bool counts = !c->t[i].hinted;
        *ok += counts && c->t[i].state == T_OK;
        *pending += c->t[i].state == T_PENDING;
        *could += counts && c->t[i].state == T_PENDING;
    }
}

static void reply_result(struct repl *r, struct creq *c, int code,
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
    if (code == 0 && is_write(c)) {
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

static void reply_where(struct repl *r, struct creq *c)
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
        const struct wire_member *w = member_info(r, t->id);
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
static void shortfall_text(const struct creq *c, size_t ok, bool timed_out,
                           char *buf, size_t cap)
{
    int code = shortfall_code(c);
    /* A replica whose link failed after the write went out may have it. */
    bool lost = false;
    for (size_t i = 0; i < c->n_targets; i++)
        lost |= c->t[i].state == T_FAILED && c->t[i].code == KV_ERR_UNAVAILABLE;
    bool maybe = is_write(c) && (ok > 0 || timed_out || lost);
    snprintf(buf, cap, "%s: %u of %u replicas needed, %zu %s%s%s%s",
             timed_out ? "timed out" : "unavailable", c->need, c->n_pref, ok,
             is_write(c) ? "acknowledged" : "answered",
             code != KV_ERR_UNAVAILABLE ? "; replicas said: " : "",
             code != KV_ERR_UNAVAILABLE ? kv_strerror(code) : "",
             maybe         ? "; the write may still have been applied"
             : is_write(c) ? "; it was not applied"
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
        if (is_self(r, t->id))
            local_submit(r,
                         local_write_new(&rec, LW_REPAIR, STORAGE_PUT, NULL));
        else
            send_write(r, t->id, 0, &rec, NULL);
    }
}

/* Looks at the targets' states: answers the client once it can, and ends
 * the request once nothing is outstanding. */
static void progress(struct repl *r, struct creq *c)
{
    size_t ok, pending, could;
    count_targets(c, &ok, &pending, &could);
    if (!c->answered) {
        char text[160];
        if (c->type == MSG_WHERE) {
            if (pending == 0)
                reply_where(r, c);
        } else if (ok >= c->need) {
            bool gone = c->type == MSG_GET && (!c->have_newest || c->tombstone);
            reply_result(r, c, gone ? KV_ERR_NOT_FOUND : 0, NULL);
        } else if (ok + could < c->need) {
            shortfall_text(c, ok, false, text, sizeof(text));
            reply_result(r, c, shortfall_code(c), text);
        }
    }
    if (pending == 0) {
        if (c->type == MSG_GET)
            read_repair(r, c);
        creq_free(r, c);
    }
}

static void send_to_target(struct repl *r, struct creq *c, size_t i);

/* Keeps a hint for owner in this node's own storage. */
static void hold_hint(struct repl *r, const struct creq *c,
                      const uint8_t owner[ID_BYTES])
{
    if (is_self(r, owner))
        return;
    struct storage_record rec = creq_record(c);
    local_submit(r,
                 local_write_new(&rec, LW_HINT_PUT, STORAGE_PUT_HINT, owner));
}

/* Walks the ring from the key (the preference list's order, ring.h),
 * keeping at most cap node ids. @retval 0, or KV_ERR_NOMEM. */
static int walk_ring(struct repl *r, struct creq *c, size_t cap)
{
    size_t n_ring = r->ring ? ring_size(r->ring) : 0;
    if (cap > n_ring)
        cap = n_ring;
    size_t *idx = malloc((cap ? cap : 1) * sizeof(*idx));
    uint8_t(*walk)[ID_BYTES] = malloc((cap ? cap : 1) * sizeof(*walk));
    if (!idx || !walk) {
        free(idx);
        free(walk);
        return KV_ERR_NOMEM;
    }
    size_t n = ring_preference_list(r->ring, c->token, cap, idx);
    for (size_t i = 0; i < n; i++)
        memcpy(walk[i], r->ring_info[idx[i]].id, ID_BYTES);
    free(idx);
    free(c->walk);
    c->walk = walk;
    c->n_walk = n;
    return 0;
}

/* A write target failed: its copy goes to the next healthy node past the
 * preference list, with a hint naming the owner, or stays here as a hint
 * when there is none. The walk past the list is
 * only taken now, when a fallback is needed (the list is its prefix). */
static void add_fallback(struct repl *r, struct creq *c,
                         const uint8_t owner[ID_BYTES])
{
    if (c->n_walk == c->n_pref && (!r->ring || ring_size(r->ring) > c->n_walk))
        walk_ring(r, c, SIZE_MAX); /* out of memory: no fallback */
    while (c->next_fallback < c->n_walk && c->n_targets < MAX_TARGETS) {
        const uint8_t *id = c->walk[c->next_fallback++];
        bool used = false;
        for (size_t i = 0; i < c->n_targets; i++)
            used |= memcmp(c->t[i].id, id, ID_BYTES) == 0;
        if (used || !node_up(r, id))
            continue;
        struct target *t = &c->t[c->n_targets++];
        memset(t, 0, sizeof(*t));
        memcpy(t->id, id, ID_BYTES);
        memcpy(t->owner, owner, ID_BYTES);
        t->hinted = true;
        send_to_target(r, c, c->n_targets - 1);
        return;
    }
    /* No node past the list can take it (a ring of N nodes, or all of them
     * down): the coordinator keeps the hint itself. */
    hold_hint(r, c, owner);
}

static void target_done(struct repl *r, struct creq *c, size_t i, int code)
{
    struct target *t = &c->t[i];
    if (t->state != T_PENDING)
        return;
    t->code = code;
    t->state = code == 0 ? T_OK : T_FAILED;
    /* Even once the client has its answer, the copy must land somewhere. */
    if (code != 0 && is_write(c))
        add_fallback(r, c, t->hinted ? t->owner : t->id);
}

/* A read answer: keep it, and the newest value seen. */
static void take_read(struct creq *c, struct target *t,
                      const struct msg_replica *a, const uint8_t *value,
                      size_t value_len)
{
    t->found = a->found;
    if (!a->found)
        return;
    t->version = a->version;
    t->tombstone = a->tombstone;
    memcpy(t->origin, a->origin, ID_BYTES);
    if (c->have_newest &&
        !storage_newer(a->version, a->origin, c->version, c->origin))
        return;
    uint8_t *copy = malloc(value_len ? value_len : 1);
    if (!copy)
        return; /* an older answer stays the newest known */
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
    int rc = r->env.get(r->env.ctx, c->key, c->key_len, &rec);
    if (rc == 0) {
        a.found = true;
        a.version = rec.version;
        a.tombstone = rec.tombstone;
        memcpy(a.origin, rec.origin, ID_BYTES);
        take_read(c, &c->t[i], &a, rec.value, rec.value_len);
        storage_record_free(&rec);
    }
    target_done(r, c, i, rc == KV_ERR_NOT_FOUND ? 0 : rc);
}

static void send_to_target(struct repl *r, struct creq *c, size_t i)
{
    struct target *t = &c->t[i];
    t->state = T_PENDING;
    if (is_self(r, t->id)) {
        if (!is_write(c)) {
            local_read(r, c, i);
            return;
        }
        struct storage_record rec = creq_record(c);
        struct local_write *lw = local_write_new(
            &rec, LW_COORD, t->hinted ? STORAGE_PUT_HINT : STORAGE_PUT,
            t->hinted ? t->owner : NULL);
        if (!lw) {
            target_done(r, c, i, KV_ERR_NOMEM);
            return;
        }
        lw->req_id = c->id;
        local_submit(r, lw);
        return;
    }
    if (is_write(c)) {
        struct storage_record rec = creq_record(c);
        send_write(r, t->id, c->id, &rec, t->hinted ? t->owner : NULL);
        return;
    }
    struct msg m = {.type = MSG_REPLICA_READ, .id = c->id};
    m.u.replica.key = c->key;
    m.u.replica.key_len = c->key_len;
    send_msg(r, t->id, &m);
}

static int need_for(int consistency, unsigned n)
{
    switch (consistency) {
    case CONS_ONE:
        return 1;
    case CONS_ALL:
        return (int)n;
    default:
        return (int)n / 2 + 1;
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
    struct creq *c = calloc(1, sizeof(*c));
    size_t vlen = m->type == MSG_PUT ? q->value_len : 0;
    if (c)
        c->key = malloc(q->key_len + vlen);
    if (c && c->key)
        c->token = storage_token(q->key, q->key_len);
    /* The preference list only; add_fallback walks further if need be. */
    if (!c || !c->key || walk_ring(r, c, r->cfg.replicas) != 0) {
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
    c->next_fallback = c->n_pref;
    c->need = (uint8_t)need_for(
        m->type == MSG_WHERE ? CONS_ALL : q->consistency, c->n_pref);
    if (is_write(c)) {
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
    c->n_targets = c->n_pref;
    for (size_t i = 0; i < c->n_pref; i++) {
        memcpy(c->t[i].id, c->walk[i], ID_BYTES);
        c->t[i].state = node_up(r, c->t[i].id) ? T_PENDING : T_DOWN;
    }
    for (size_t i = 0; i < c->n_pref; i++) {
        if (c->t[i].state == T_PENDING)
            send_to_target(r, c, i);
        else if (is_write(c))
            add_fallback(r, c, c->t[i].id);
    }
    progress(r, c);
    return 0;
}

void repl_client_gone(struct repl *r, void *client)
{
    for (struct creq *c = r->reqs; c; c = c->next)
        if (c->client == client)
            c->client = NULL;
}

/* Which target of c a node is; -1 when none is pending. */
static long pending_target(const struct creq *c, const uint8_t id[ID_BYTES])
{
    for (size_t i = 0; i < c->n_targets; i++)
        if (c->t[i].state == T_PENDING && memcmp(c->t[i].id, id, ID_BYTES) == 0)
            return (long)i;
    return -1;
}

/* ---- hint replay ---- */

static void replay_end(struct repl *r)
{
    if (!r->replay.active)
        return;
    storage_hints_free(r->replay.recs, r->replay.n);
    free(r->replay.items);
    memset(&r->replay, 0, sizeof(r->replay));
}

/* A target of the replayed hint with this request id answered. Once every
 * target has the record durably the hint can go; one failure keeps it for
 * a later round. */
static void replay_answer(struct repl *r, const uint8_t from[ID_BYTES],
                          uint64_t id, int code)
{
    struct replay *rp = &r->replay;
    if (!rp->active || id < rp->first_id || id - rp->first_id >= rp->n)
        return;
    size_t i = (size_t)(id - rp->first_id);
    struct replay_item *it = &rp->items[i];
    size_t j = 0;
    while (j < it->n_targets && memcmp(it->targets[j], from, ID_BYTES) != 0)
        j++;
    if (it->done || j == it->n_targets || (it->answered & (1u << j)))
        return;
    it->answered |= (uint16_t)(1u << j);
    if (code == 0 && it->answered != (1u << it->n_targets) - 1)
        return;
    it->done = true;
    rp->open--;
    if (code == 0) {
        /* The hint can go (unless a newer one arrived meanwhile; storage
         * checks). */
        struct storage_record h = rp->recs[i];
        h.value_len = 0; /* a deletion needs the key, version and origin */
        local_submit(
            r, local_write_new(&h, LW_HINT_DEL, STORAGE_DEL_HINT, rp->owner));
        r->counters.hints_replayed++;
    }
    if (rp->open == 0)
        replay_end(r);
}

/* Sends one hinted record to its targets: the owner, or, when the owner is
 * gone, the key's replicas now (all of them up, or it waits for a later
 * round). */
static void replay_send(struct repl *r, size_t i)
{
    struct replay *rp = &r->replay;
    struct replay_item *it = &rp->items[i];
    const struct storage_record *rec = &rp->recs[i];
    uint64_t id = rp->first_id + i;
    if (!rp->rehome) {
        it->n_targets = 1;
        memcpy(it->targets[0], rp->owner, ID_BYTES);
    } else {
        size_t idx[REPL_MAX_REPLICAS];
        size_t n =
            ring_preference_list(r->ring, storage_token(rec->key, rec->key_len),
                                 r->cfg.replicas, idx);
        bool all_up = n > 0;
        for (size_t k = 0; k < n; k++) {
            memcpy(it->targets[k], r->ring_info[idx[k]].id, ID_BYTES);
            all_up &= node_up(r, it->targets[k]);
        }
        it->n_targets = (uint8_t)n;
        if (!all_up) {
            it->done = true;
            rp->open--;
            return;
        }
    }
    for (size_t k = 0; k < it->n_targets; k++) {
        if (!is_self(r, it->targets[k])) {
            send_write(r, it->targets[k], id, rec, NULL);
            continue;
        }
        struct local_write *lw =
            local_write_new(rec, LW_REHOME, STORAGE_PUT, NULL);
        if (lw)
            lw->req_id = id;
        local_submit(r, lw);
    }
}

/* Offers a batch of hints to the next owner (round robin) that is alive,
 * or to the keys' replicas now when the owner has left the ring. */
static void replay_start(struct repl *r)
{
    uint8_t owners[MAX_HINT_OWNERS][ID_BYTES];
    size_t n = 0;
    if (!r->env.hint_owners ||
        r->env.hint_owners(r->env.ctx, owners, MAX_HINT_OWNERS, &n) || n == 0)
        return;
    size_t start = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(owners[i], r->last_owner, ID_BYTES) > 0) {
            start = i;
            break;
        }
    for (size_t k = 0; k < n; k++) {
        const uint8_t *owner = owners[(start + k) % n];
        long ri = ring_find(r, owner);
        /* Until this node has joined, an owner missing from its view may
         * only be unknown to it yet. */
        bool gone = ri < 0;
        if (is_self(r, owner) ||
            (gone ? !r->ready || !r->ring
                  : r->ring_info[ri].status != MEMBER_ALIVE))
            continue;
        struct replay *rp = &r->replay;
        if (r->env.hints(r->env.ctx, owner, REPLAY_BATCH, &rp->recs, &rp->n) ||
            rp->n == 0) {
            if (rp->recs)
                storage_hints_free(rp->recs, rp->n);
            rp->recs = NULL;
            rp->n = 0;
            continue;
        }
        rp->items = calloc(rp->n, sizeof(*rp->items));
        if (!rp->items) {
            storage_hints_free(rp->recs, rp->n);
            rp->recs = NULL;
            rp->n = 0;
            return;
        }
        rp->active = true;
        rp->rehome = gone;
        memcpy(rp->owner, owner, ID_BYTES);
        memcpy(r->last_owner, owner, ID_BYTES);
        rp->first_id = r->next_id;
        r->next_id += rp->n;
        rp->open = rp->n;
        rp->deadline = r->env.now_ms(r->env.ctx) + r->cfg.request_timeout_ms;
        for (size_t i = 0; i < rp->n; i++)
            replay_send(r, i);
        if (rp->open == 0)
            replay_end(r);
        return;
    }
}

/* ---- the replica ---- */

static void answer_peer(struct repl *r, const uint8_t to[ID_BYTES], uint64_t id,
                        int code)
{
    struct msg m = {.type = MSG_REPLICA_ANSWER, .id = id};
    m.u.replica.code = code;
    send_msg(r, to, &m);
}

static void serve_read(struct repl *r, const uint8_t from[ID_BYTES],
                       const struct msg *m)
{
    struct storage_record rec;
    struct msg a = {.type = MSG_REPLICA_ANSWER, .id = m->id};
    r->counters.replica_reads++;
    int rc =
        r->env.get(r->env.ctx, m->u.replica.key, m->u.replica.key_len, &rec);
    if (rc == KV_ERR_NOT_FOUND) {
        send_msg(r, from, &a);
        return;
    }
    if (rc) {
        answer_peer(r, from, m->id, rc);
        return;
    }
    a.u.replica.found = true;
    a.u.replica.version = rec.version;
    memcpy(a.u.replica.origin, rec.origin, ID_BYTES);
    a.u.replica.tombstone = rec.tombstone;
    a.u.replica.value = rec.value;
    a.u.replica.value_len = rec.value_len;
    send_msg(r, from, &a);
    storage_record_free(&rec);
}

static void serve_write(struct repl *r, const uint8_t from[ID_BYTES],
                        const struct msg *m)
{
    const struct msg_replica *q = &m->u.replica;
    r->counters.replica_writes++;
    struct storage_record rec = {.version = q->version,
                                 .tombstone = q->tombstone,
                                 .key = q->key,
                                 .key_len = q->key_len,
                                 .value = (uint8_t *)q->value,
                                 .value_len = q->value_len};
    memcpy(rec.origin, q->origin, ID_BYTES);
    /* A hint naming this node (its coordinator thought it down) is simply
     * its own copy. */
    bool hint = q->hinted && !is_self(r, q->owner);
    struct local_write *lw =
        local_write_new(&rec, LW_PEER, hint ? STORAGE_PUT_HINT : STORAGE_PUT,
                        hint ? q->owner : NULL);
    if (!lw) {
        answer_peer(r, from, m->id, KV_ERR_NOMEM);
        return;
    }
    lw->req_id = m->id;
    memcpy(lw->peer, from, ID_BYTES);
    local_submit(r, lw);
}

static void on_answer(struct repl *r, const uint8_t from[ID_BYTES],
                      const struct msg *m)
{
    const struct msg_replica *a = &m->u.replica;
    if (r->replay.active && m->id >= r->replay.first_id &&
        m->id < r->replay.first_id + r->replay.n) {
        replay_answer(r, from, m->id, a->code);
        return;
    }
    struct creq *c = creq_find(r, m->id);
    long i = c ? pending_target(c, from) : -1;
    if (i < 0)
        return; /* late, or for a request already ended */
    if (a->code == 0 && !is_write(c))
        take_read(c, &c->t[i], a, a->value, a->value_len);
    target_done(r, c, (size_t)i, a->code);
    progress(r, c);
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
            answer_peer(r, from, m->id, KV_ERR_CLOCK);
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
        long i = pending_target(c, id);
        if (i < 0)
            continue;
        target_done(r, c, (size_t)i, KV_ERR_UNAVAILABLE);
        progress(r, c);
    }
    if (r->replay.active && !r->replay.rehome &&
        memcmp(r->replay.owner, id, ID_BYTES) == 0)
        replay_end(r);
}

void repl_on_stored(struct repl *r, struct storage_write *w)
{
    struct local_write *lw = w->ctx;
    r->local_inflight--;
    switch (lw->kind) {
    case LW_COORD: {
        struct creq *c = creq_find(r, lw->req_id);
        long i = c ? pending_target(c, r->self) : -1;
        if (i >= 0) {
            target_done(r, c, (size_t)i, w->result);
            progress(r, c);
        }
        break;
    }
    case LW_PEER:
        if (w->result == 0 && w->op == STORAGE_PUT_HINT && w->applied)
            r->counters.hints_stored++;
        answer_peer(r, lw->peer, lw->req_id, w->result);
        break;
    case LW_REHOME:
        replay_answer(r, r->self, lw->req_id, w->result);
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
            if (is_write(c) && !is_self(r, t->id))
                hold_hint(r, c, t->hinted ? t->owner : t->id);
        }
        if (!c->answered) {
            r->counters.timeouts++;
            if (c->type == MSG_WHERE) {
                reply_where(r, c);
            } else {
                size_t ok, pending, could;
                char text[160];
                count_targets(c, &ok, &pending, &could);
                shortfall_text(c, ok, true, text, sizeof(text));
                reply_result(r, c, KV_ERR_TIMEOUT, text);
            }
        }
        progress(r, c);
    }
    if (r->replay.active && now >= r->replay.deadline)
        replay_end(r);
    if (!r->replay.active && now >= r->next_replay_ms) {
        r->next_replay_ms = now + r->cfg.hint_replay_ms;
        replay_start(r);
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
    out->replicas = r->cfg.replicas;
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
