/* The simulator: an event heap ordered by (virtual time, sequence number), so
 * events at the same millisecond run in the order they were scheduled and a
 * run depends on nothing but its seed. */
#include "sim.h"

#include "../../node/ae.h"
#include "../../node/ring.h"

#include "../../common/common.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ev_kind {
    EV_DELIVER,   /* a gossip message */
    EV_TIMER,     /* membership's timer */
    EV_STOP,      /* the end of a graceful leave */
    EV_REPL,      /* a replica message */
    EV_LINK_DOWN, /* node learns its link to src failed */
    EV_STORED,    /* a storage write completes */
    EV_TICK,      /* repl_tick */
    EV_NONE,      /* cancelled */
};

struct event {
    uint64_t at, seq;
    enum ev_kind kind;
    size_t node;
    size_t src;
    uint64_t gen; /* EV_TIMER: stale when the node's timer gen moved on */
    uint8_t *bytes;
    size_t len;
    struct storage_write *w; /* EV_STORED */
};

/* A record, or a hint held for owner, in a node's in-memory store. */
struct mrec {
    bool hint;
    uint8_t owner[16];
    uint8_t *key, *value; /* one allocation */
    size_t klen, vlen;
    uint64_t version;
    uint8_t origin[16];
    bool tombstone;
    uint8_t lkey[STORAGE_LKEY_BYTES];
    uint8_t checksum[STORAGE_CHECKSUM_BYTES];
};

struct memstore {
    struct mrec *recs;
    size_t n, cap;
    uint64_t txn; /* bumped by every applied write, as LMDB's txn ids */
};

struct simnode {
    struct sim *s;
    size_t index;
    struct membership *m;
    bool running;
    uint64_t life; /* bumped at each crash, so old timers die with it */
    struct wire_member self;
    struct timer *timer;
    uint64_t timer_gen;
    uint32_t slow_ms;
    int group;
    struct repl *r; /* with sim_enable_repl */
    struct hlc hlc;
    int64_t skew_ms;
    struct memstore store; /* durable: survives crashes */
    struct ae *ae;         /* with sim_enable_ae */
};

struct sim {
    uint64_t seed, rng, now, next_seq;
    struct membership_config cfg;
    struct simnode *nodes;
    size_t n;
    struct event *heap;
    size_t heap_n, heap_cap;
    double loss, dup;
    uint32_t delay_min, delay_jitter;
    bool partitioned;
    bool repl;
    struct repl_config rc;
    bool ae;
    struct ae_config ac;
    struct sim_stats stats;
    crypto_generichash_state trace;
};

/* splitmix64: small, fast, and good enough to drive a simulation. */
uint64_t sim_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t next_rand(uint64_t *x)
{
    return sim_splitmix64(x);
}

static double uniform(struct sim *s)
{
    return (double)(next_rand(&s->rng) >> 11) / 9007199254740992.0;
}

/* ---- the heap ---- */

static bool before(const struct event *a, const struct event *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void push(struct sim *s, struct event e)
{
    if (s->heap_n == s->heap_cap) {
        s->heap_cap = s->heap_cap ? 2 * s->heap_cap : 1024;
        s->heap = realloc(s->heap, s->heap_cap * sizeof(*s->heap));
        if (!s->heap)
            abort();
    }
    e.seq = s->next_seq++;
    size_t i = s->heap_n++;
    while (i > 0 && before(&e, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = e;
}

static struct event pop(struct sim *s)
{
    struct event top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n)
        s->heap[i] = last;
    return top;
}

static void trace(struct sim *s, const void *p, size_t n)
{
    crypto_generichash_update(&s->trace, p, n);
}

/* A delivery enters the trace: when, to whom, from whom, and the bytes. */
static void trace_delivery(struct sim *s, const struct event *e)
{
    uint8_t hdr[24];
    be64_put(hdr, s->now);
    be64_put(hdr + 8, e->node);
    be64_put(hdr + 16, e->src);
    trace(s, hdr, sizeof(hdr));
    trace(s, e->bytes, e->len);
}

/* ---- the environment each node's membership acts through ---- */

static size_t addr_node(const char *addr)
{
    return (size_t)strtoul(addr + 4, NULL, 10); /* "sim:<index>" */
}

static uint64_t env_now(void *ctx)
{
    return ((struct simnode *)ctx)->s->now;
}

static uint64_t env_random(void *ctx)
{
    return next_rand(&((struct simnode *)ctx)->s->rng);
}

static void env_timer(void *ctx, struct timer *t, uint64_t after)
{
    struct simnode *n = ctx;
    n->timer = t;
    n->timer_gen++;
    push(n->s, (struct event){.at = n->s->now + after,
                              .kind = EV_TIMER,
                              .node = n->index,
                              .gen = n->timer_gen});
}

static bool is_udp(uint8_t type)
{
    return type != GOSSIP_SYNC && type != GOSSIP_SYNC_REPLY;
}

static void env_send(void *ctx, const struct peer *to,
                     const struct gossip_msg *g)
{
    struct simnode *from = ctx;
    struct sim *s = from->s;
    size_t dst = addr_node(to->addr);
    bool udp = is_udp(g->type);
    if (!from->running)
        return;
    uint8_t *bytes;
    size_t len, n;
    if (dst >= s->n ||
        gossip_encode(g, udp ? GOSSIP_UDP_MAX : SIZE_MAX, &bytes, &len, &n))
        return;
    if (udp) {
        s->stats.udp_msgs++;
        s->stats.udp_bytes += len;
    } else {
        s->stats.sync_msgs++;
        s->stats.sync_bytes += len;
    }
    struct simnode *d = &s->nodes[dst];
    bool cut = s->partitioned && from->group != d->group;
    if (cut || (udp && uniform(s) < s->loss)) {
        s->stats.dropped++;
        free(bytes);
        return;
    }
    int copies = udp && uniform(s) < s->dup ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        uint64_t delay = s->delay_min + from->slow_ms + d->slow_ms;
        if (s->delay_jitter)
            delay += next_rand(&s->rng) % (s->delay_jitter + 1);
        uint8_t *copy = bytes;
        if (c == 1) {
            copy = malloc(len);
            memcpy(copy, bytes, len);
        }
        push(s, (struct event){.at = s->now + delay,
                               .kind = EV_DELIVER,
                               .node = dst,
                               .src = from->index,
                               .bytes = copy,
                               .len = len});
    }
}

static void observe(void *arg, const struct wire_member *w, uint8_t old)
{
    struct simnode *n = arg;
    struct sim *s = n->s;
    s->stats.status_changes++;
    uint8_t rec[8 + 8 + 16 + 8 + 2];
    be64_put(rec, s->now);
    be64_put(rec + 8, n->index);
    memcpy(rec + 16, w->id, 16);
    be64_put(rec + 32, w->incarnation);
    rec[40] = old;
    rec[41] = w->status;
    trace(s, rec, sizeof(rec));
    size_t who = s->n;
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->nodes[i].self.id, w->id, 16) == 0)
            who = i;
    if (w->status == MEMBER_DEAD && who < s->n && s->nodes[who].running)
        s->stats.false_dead++;
    if (getenv("SIM_DEBUG"))
        fprintf(stderr, "%8llu node %zu: node %zu %d -> %d inc %llu\n",
                (unsigned long long)s->now, n->index, who, old, w->status,
                (unsigned long long)w->incarnation);
}

/* ---- nodes ---- */

struct sim *sim_new(uint64_t seed, size_t n, const struct membership_config *c)
{
    struct sim *s = calloc(1, sizeof(*s));
    s->nodes = calloc(n, sizeof(*s->nodes));
    if (!s || !s->nodes)
        abort();
    s->seed = s->rng = seed;
    s->n = n;
    s->cfg = *c;
    crypto_generichash_init(&s->trace, NULL, 0, 32);
    for (size_t i = 0; i < n; i++) {
        struct simnode *x = &s->nodes[i];
        x->s = s;
        x->index = i;
        for (size_t k = 0; k < 32; k += 8)
            be64_put(x->self.pubkey + k, next_rand(&s->rng));
        crypto_node_id(x->self.id, x->self.pubkey);
        snprintf(x->self.addr, sizeof(x->self.addr), "sim:%zu", i);
        snprintf(x->self.region, sizeof(x->self.region), "r%zu", i % 2);
        snprintf(x->self.zone, sizeof(x->self.zone), "z%zu", i % 3);
        x->self.version = PROTO_VERSION;
    }
    return s;
}

void sim_free(struct sim *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->nodes[i].running)
            sim_crash(s, i);
    for (size_t i = 0; i < s->n; i++) {
        struct memstore *ms = &s->nodes[i].store;
        for (size_t k = 0; k < ms->n; k++)
            free(ms->recs[k].key);
        free(ms->recs);
    }
    for (size_t i = 0; i < s->heap_n; i++)
        free(s->heap[i].bytes);
    free(s->heap);
    free(s->nodes);
    free(s);
}

void sim_set_loss(struct sim *s, double p)
{
    s->loss = p;
}

void sim_set_dup(struct sim *s, double p)
{
    s->dup = p;
}

void sim_set_delay(struct sim *s, uint32_t min_ms, uint32_t jitter_ms)
{
    s->delay_min = min_ms;
    s->delay_jitter = jitter_ms;
}

void sim_set_slow(struct sim *s, size_t i, uint32_t extra_ms)
{
    s->nodes[i].slow_ms = extra_ms;
}

void sim_partition(struct sim *s, const int *group)
{
    s->partitioned = group != NULL;
    for (size_t i = 0; i < s->n; i++)
        s->nodes[i].group = group ? group[i] : 0;
}

static void repl_start(struct simnode *x);

void sim_start(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds)
{
    struct simnode *x = &s->nodes[i];
    struct env env = {env_now, env_send, env_timer, env_random, x};
    x->life++;
    x->m = membership_new(&s->cfg, &env, &x->self);
    if (!x->m)
        abort();
    membership_set_observer(x->m, observe, x);
    x->running = true;
    const char *addrs[16];
    for (size_t k = 0; k < n_seeds && k < 16; k++)
        addrs[k] = s->nodes[seeds[k]].self.addr;
    membership_start(x->m, addrs, n_seeds < 16 ? n_seeds : 16);
    if (s->repl)
        repl_start(x);
}

void sim_crash(struct sim *s, size_t i)
{
    struct simnode *x = &s->nodes[i];
    membership_free(x->m);
    x->m = NULL;
    x->running = false;
    x->timer_gen++;
    if (x->r) {
        /* Writes the store had not completed are lost with the process;
         * repl hears they failed (its sends go nowhere now) and frees them.
         * That may submit more, so go round until none is left. */
        for (bool more = true; more;) {
            more = false;
            for (size_t k = 0; k < s->heap_n; k++) {
                struct event *e = &s->heap[k];
                if (e->kind != EV_STORED || e->node != i)
                    continue;
                struct storage_write *w = e->w;
                e->kind = EV_NONE;
                w->result = KV_ERR_IO;
                w->applied = false;
                if (w->tag == AE_WRITE_TAG)
                    ae_on_stored(x->ae, w);
                else
                    repl_on_stored(x->r, w); /* may grow the heap */
                more = true;
                break;
            }
        }
    }
    x->life++;
    ae_free(x->ae);
    x->ae = NULL;
    if (!x->r)
        return;
    repl_free(x->r);
    x->r = NULL;
}

void sim_restart(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds)
{
    sim_start(s, i, seeds, n_seeds);
}

void sim_leave(struct sim *s, size_t i)
{
    membership_leave(s->nodes[i].m);
    push(s, (struct event){
                .at = s->now + s->cfg.period_ms, .kind = EV_STOP, .node = i});
}

static void run_repl_event(struct sim *s, struct event *e);

static void run_event(struct sim *s, struct event *e)
{
    struct simnode *x = &s->nodes[e->node];
    if (e->kind >= EV_REPL) {
        run_repl_event(s, e);
        return;
    }
    if (e->kind == EV_STOP) {
        if (x->running)
            sim_crash(s, e->node);
        return;
    }
    if (e->kind == EV_TIMER) {
        if (x->running && e->gen == x->timer_gen && x->timer)
            x->timer->fire(x->timer->arg);
        return;
    }
    if (!x->running) {
        s->stats.dropped++;
        return;
    }
    trace_delivery(s, e);
    struct gossip_msg g;
    if (gossip_decode(e->bytes, e->len, &g) == 0) {
        membership_on_message(x->m, s->nodes[e->src].self.addr, &g);
        gossip_msg_free(&g);
    }
}

void sim_run_until(struct sim *s, uint64_t t)
{
    while (s->heap_n && s->heap[0].at <= t) {
        struct event e = pop(s);
        s->now = e.at;
        run_event(s, &e);
        free(e.bytes);
    }
    s->now = t;
}

void sim_run_for(struct sim *s, uint64_t ms)
{
    sim_run_until(s, s->now + ms);
}

uint64_t sim_now(const struct sim *s)
{
    return s->now;
}

bool sim_running(const struct sim *s, size_t i)
{
    return s->nodes[i].running;
}

struct membership *sim_node(struct sim *s, size_t i)
{
    return s->nodes[i].m;
}

int sim_status(struct sim *s, size_t a, size_t b)
{
    struct membership *m = s->nodes[a].m;
    const struct member_view *v =
        m ? membership_find(m, s->nodes[b].self.id) : NULL;
    return v ? v->info.status : -1;
}

bool sim_converged(struct sim *s)
{
    for (size_t a = 0; a < s->n; a++) {
        if (!s->nodes[a].running)
            continue;
        for (size_t b = 0; b < s->n; b++) {
            int st = sim_status(s, a, b);
            if (s->nodes[b].running
                    ? st != MEMBER_ALIVE
                    : (st == MEMBER_ALIVE || st == MEMBER_SUSPECT))
                return false;
        }
    }
    return true;
}

const struct sim_stats *sim_stats(const struct sim *s)
{
    return &s->stats;
}

void sim_trace_hex(struct sim *s, char out[65])
{
    crypto_generichash_state copy = s->trace;
    uint8_t h[32];
    crypto_generichash_final(&copy, h, sizeof(h));
    hex_encode(out, h, sizeof(h));
}

/* ---- replication ---- */

#define SIM_EPOCH_MS 1700000000000ull

static size_t node_by_id(struct sim *s, const uint8_t *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->nodes[i].self.id, id, 16) == 0)
            return i;
    return s->n;
}

static struct mrec *store_find(struct memstore *ms, bool hint,
                               const uint8_t *owner, const uint8_t *key,
                               size_t klen)
{
    for (size_t k = 0; k < ms->n; k++) {
        struct mrec *m = &ms->recs[k];
        if (m->hint == hint && m->klen == klen &&
            memcmp(m->key, key, klen) == 0 &&
            (!hint || memcmp(m->owner, owner, 16) == 0))
            return m;
    }
    return NULL;
}

static void store_apply(struct memstore *ms, struct storage_write *w)
{
    bool hint = w->op != STORAGE_PUT;
    struct mrec *m = store_find(ms, hint, w->owner, w->key, w->key_len);
    storage_lkey(w->lkey, w->key, w->key_len);
    w->result = 0;
    w->applied = false;
    if (w->op == STORAGE_DEL_HINT) {
        if (m && !storage_newer(m->version, m->origin, w->version, w->origin)) {
            free(m->key);
            *m = ms->recs[--ms->n];
            w->applied = true;
        }
        return;
    }
    if (m && !storage_newer(w->version, w->origin, m->version, m->origin)) {
        w->stored_version = m->version;
        return;
    }
    w->had_prev = m != NULL;
    if (m) {
        w->prev_version = m->version;
        memcpy(w->prev_origin, m->origin, 16);
        w->prev_tombstone = m->tombstone;
        memcpy(w->prev_checksum, m->checksum, STORAGE_CHECKSUM_BYTES);
    }
    if (!m) {
        if (ms->n == ms->cap) {
            ms->cap = ms->cap ? 2 * ms->cap : 64;
            ms->recs = realloc(ms->recs, ms->cap * sizeof(*ms->recs));
            if (!ms->recs)
                abort();
        }
        m = &ms->recs[ms->n++];
        memset(m, 0, sizeof(*m));
    }
    free(m->key);
    size_t vlen = w->tombstone ? 0 : w->value_len;
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
    memcpy(m->owner, w->owner, 16);
    m->version = w->version;
    memcpy(m->origin, w->origin, 16);
    m->tombstone = w->tombstone;
    memcpy(m->lkey, w->lkey, STORAGE_LKEY_BYTES);
    storage_checksum(m->checksum, m->value, m->vlen);
    memcpy(w->checksum, m->checksum, STORAGE_CHECKSUM_BYTES);
    w->txn = ++ms->txn;
    w->applied = true;
    w->stored_version = w->version;
}

static uint64_t renv_now(void *ctx)
{
    return ((struct simnode *)ctx)->s->now;
}

static uint64_t renv_wall(void *ctx)
{
    struct simnode *x = ctx;
    return (uint64_t)((int64_t)(x->s->now + SIM_EPOCH_MS) + x->skew_ms);
}

static uint64_t net_delay(struct sim *s, struct simnode *a, struct simnode *b)
{
    uint64_t d = s->delay_min + a->slow_ms + b->slow_ms;
    if (s->delay_jitter)
        d += next_rand(&s->rng) % (s->delay_jitter + 1);
    return d;
}

static bool reachable(struct sim *s, struct simnode *a, struct simnode *b)
{
    return b->running && !(s->partitioned && a->group != b->group);
}

/* A link failure is noticed a little later, as a reset or refused
 * connection would be. */
static void link_down(struct sim *s, size_t node, size_t peer)
{
    push(s, (struct event){.at = s->now + 2 * s->delay_min + 20,
                           .kind = EV_LINK_DOWN,
                           .node = node,
                           .src = peer});
}

/* Sends a replica or anti-entropy message; returns its encoded size. */
static size_t sim_send_msg(struct simnode *from, const uint8_t *to,
                           const struct msg *m)
{
    struct sim *s = from->s;
    size_t dst = node_by_id(s, to);
    uint8_t *bytes;
    size_t len;
    if (!from->running || dst == s->n || msg_encode(m, &bytes, &len) != 0)
        return 0;
    s->stats.repl_msgs++;
    struct simnode *d = &s->nodes[dst];
    if (!reachable(s, from, d)) {
        free(bytes);
        s->stats.dropped++;
        link_down(s, from->index, dst);
        return len;
    }
    push(s, (struct event){.at = s->now + net_delay(s, from, d),
                           .kind = EV_REPL,
                           .node = dst,
                           .src = from->index,
                           .bytes = bytes,
                           .len = len});
    return len;
}

static void renv_send(void *ctx, const uint8_t *to, const struct msg *m)
{
    sim_send_msg(ctx, to, m);
}

static void renv_reply(void *ctx, void *client, const struct msg *m)
{
    (void)ctx;
    struct sim_op *op = client;
    op->done = true;
    if (m->hlc > op->session_hlc)
        op->session_hlc = m->hlc;
    if (m->type != MSG_RESULT) {
        op->code = 0;
        return;
    }
    op->code = m->u.result.code;
    op->version = m->u.result.version;
    op->value_len = m->u.result.value_len < sizeof(op->value)
                        ? m->u.result.value_len
                        : sizeof(op->value);
    if (op->value_len)
        memcpy(op->value, m->u.result.value, op->value_len);
}

static int renv_get(void *ctx, const uint8_t *key, size_t len,
                    struct storage_record *rec)
{
    struct simnode *x = ctx;
    struct mrec *m = store_find(&x->store, false, NULL, key, len);
    if (!m)
        return KV_ERR_NOT_FOUND;
    memset(rec, 0, sizeof(*rec));
    rec->version = m->version;
    memcpy(rec->origin, m->origin, 16);
    rec->tombstone = m->tombstone;
    rec->key = key;
    rec->key_len = len;
    rec->value = malloc(m->vlen + 1);
    if (!rec->value)
        return KV_ERR_NOMEM;
    memcpy(rec->value, m->value, m->vlen);
    rec->value_len = m->vlen;
    return 0;
}

static void renv_submit(void *ctx, struct storage_write *w)
{
    struct simnode *x = ctx;
    struct sim *s = x->s;
    push(s, (struct event){.at = s->now + 1 + next_rand(&s->rng) % 3,
                           .kind = EV_STORED,
                           .node = x->index,
                           .gen = x->life,
                           .w = w});
}

/* A record of the store as storage hands it out: key and value in one
 * allocation at r->key. @retval false: out of memory. */
static bool mrec_copy(const struct mrec *m, struct storage_record *r)
{
    uint8_t *blob = malloc(m->klen + m->vlen + 1);
    if (!blob)
        return false;
    memcpy(blob, m->key, m->klen + m->vlen);
    memset(r, 0, sizeof(*r));
    r->key = blob;
    r->key_len = m->klen;
    r->value = blob + m->klen;
    r->value_len = m->vlen;
    r->version = m->version;
    memcpy(r->origin, m->origin, 16);
    r->tombstone = m->tombstone;
    memcpy(r->checksum, m->checksum, STORAGE_CHECKSUM_BYTES);
    return true;
}

static int renv_hints(void *ctx, const uint8_t *owner, size_t max,
                      struct storage_record **out, size_t *n)
{
    struct simnode *x = ctx;
    struct storage_record *recs = calloc(max ? max : 1, sizeof(*recs));
    if (!recs)
        return KV_ERR_NOMEM;
    size_t got = 0;
    for (size_t k = 0; k < x->store.n && got < max; k++) {
        struct mrec *m = &x->store.recs[k];
        if (!m->hint || memcmp(m->owner, owner, 16) != 0)
            continue;
        if (!mrec_copy(m, &recs[got++]))
            abort();
    }
    *out = recs;
    *n = got;
    return 0;
}

/* The owners of hints, in id order as storage gives them. */
static int renv_hint_owners(void *ctx, uint8_t (*out)[16], size_t max,
                            size_t *n)
{
    struct simnode *x = ctx;
    *n = 0;
    for (size_t k = 0; k < x->store.n; k++) {
        struct mrec *m = &x->store.recs[k];
        size_t j = 0;
        while (m->hint && j < *n && memcmp(out[j], m->owner, 16) < 0)
            j++;
        if (!m->hint || (j < *n && memcmp(out[j], m->owner, 16) == 0) ||
            *n == max)
            continue;
        memmove(out[j + 1], out[j], (*n - j) * 16);
        memcpy(out[j], m->owner, 16);
        (*n)++;
    }
    return 0;
}

static void push_tick(struct simnode *x)
{
    push(x->s, (struct event){.at = x->s->now + 100,
                              .kind = EV_TICK,
                              .node = x->index,
                              .gen = x->life});
}

static void repl_view(struct simnode *x)
{
    size_t n = membership_size(x->m);
    struct wire_member *v = calloc(n, sizeof(*v));
    if (!v)
        abort();
    for (size_t k = 0; k < n; k++)
        v[k] = membership_get(x->m, k)->info;
    repl_set_members(x->r, v, n);
    repl_set_ready(x->r, membership_joined(x->m));
    free(v);
}

/* ---- anti-entropy ---- */

static size_t aenv_send(void *ctx, const uint8_t *to, const struct msg *m)
{
    return sim_send_msg(ctx, to, m);
}

static void aenv_reply(void *ctx, void *client, const struct msg *m)
{
    (void)ctx;
    struct sim_repair *r = client;
    if (m->type != MSG_REPAIR_RESULT || !m->u.repair_result.final)
        return;
    r->done = true;
    r->code = m->u.repair_result.code;
    r->pulled = m->u.repair_result.pulled;
    r->pushed = m->u.repair_result.pushed;
    r->bytes =
        m->u.repair_result.bytes_sent + m->u.repair_result.bytes_received;
}

static int cmp_mrec_lkey(const void *a, const void *b)
{
    const struct mrec *const *x = a, *const *y = b;
    return memcmp((*x)->lkey, (*y)->lkey, STORAGE_LKEY_BYTES);
}

/* storage_scan over the in-memory store. */
static int aenv_scan(void *ctx, uint64_t first, uint64_t last,
                     const uint8_t *after, storage_scan_fn fn, void *arg,
                     uint64_t *snapshot)
{
    struct simnode *x = ctx;
    struct memstore *ms = &x->store;
    if (snapshot)
        *snapshot = ms->txn;
    struct mrec **sel = malloc((ms->n ? ms->n : 1) * sizeof(*sel));
    if (!sel)
        return KV_ERR_NOMEM;
    size_t n = 0;
    for (size_t k = 0; k < ms->n; k++) {
        struct mrec *m = &ms->recs[k];
        uint64_t t = be64_get(m->lkey);
        if (!m->hint && t >= first && t <= last &&
            (!after || memcmp(m->lkey, after, STORAGE_LKEY_BYTES) > 0))
            sel[n++] = m;
    }
    qsort(sel, n, sizeof(*sel), cmp_mrec_lkey);
    for (size_t k = 0; k < n; k++) {
        struct storage_record rec = {
            .version = sel[k]->version,
            .tombstone = sel[k]->tombstone,
            .key = sel[k]->key,
            .key_len = sel[k]->klen,
            .value = sel[k]->value,
            .value_len = sel[k]->vlen,
        };
        memcpy(rec.origin, sel[k]->origin, 16);
        memcpy(rec.checksum, sel[k]->checksum, STORAGE_CHECKSUM_BYTES);
        if (fn(arg, sel[k]->lkey, &rec, true))
            break;
    }
    free(sel);
    return 0;
}

static int aenv_get_lkey(void *ctx, const uint8_t *lkey,
                         struct storage_record *rec)
{
    struct simnode *x = ctx;
    for (size_t k = 0; k < x->store.n; k++) {
        struct mrec *m = &x->store.recs[k];
        if (m->hint || memcmp(m->lkey, lkey, STORAGE_LKEY_BYTES) != 0)
            continue;
        return mrec_copy(m, rec) ? 0 : KV_ERR_NOMEM;
    }
    return KV_ERR_NOT_FOUND;
}

static int aenv_hash(void *ctx, const uint8_t *data, const uint64_t *off,
                     size_t n, size_t outlen, uint8_t *out)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        crypto_generichash(out + i * outlen, outlen, data + off[i],
                           off[i + 1] - off[i], NULL, 0);
    return 0;
}

static struct ae *sim_ae_new(struct simnode *x)
{
    struct ae_env env = {renv_now,    renv_wall, aenv_send,
                         aenv_reply,  aenv_scan, aenv_get_lkey,
                         renv_submit, aenv_hash, x};
    struct ae *ae = ae_new(&x->s->ac, &env, x->self.id);
    if (ae && x->r)
        ae_set_ring(ae, repl_ring(x->r));
    return ae;
}

static void ae_start(struct simnode *x)
{
    x->ae = sim_ae_new(x);
    if (!x->ae)
        abort();
}

static void repl_start(struct simnode *x)
{
    struct repl_env env = {renv_now,   renv_wall,        renv_send,
                           renv_reply, renv_get,         renv_submit,
                           renv_hints, renv_hint_owners, x};
    x->hlc.last = 0;
    x->r = repl_new(&x->s->rc, &env, x->self.id, &x->hlc);
    if (!x->r)
        abort();
    repl_view(x);
    if (x->s->ae)
        ae_start(x);
    push_tick(x);
}

static void run_repl_event(struct sim *s, struct event *e)
{
    struct simnode *x = &s->nodes[e->node];
    switch (e->kind) {
    case EV_REPL: {
        struct simnode *from = &s->nodes[e->src];
        if (!reachable(s, from, x)) {
            s->stats.dropped++;
            link_down(s, e->src, e->node);
            return;
        }
        trace_delivery(s, e);
        struct msg_limits lim = {PROTO_MAX_KEY, PROTO_MAX_VALUE_LIMIT};
        struct msg m;
        if (msg_decode(e->bytes, e->len, &lim, &m) == 0) {
            if (m.type == MSG_AE || m.type == MSG_AE_ANSWER) {
                if (x->ae)
                    ae_on_peer_message(x->ae, from->self.id, &m, e->len);
            } else {
                repl_on_peer_message(x->r, from->self.id, &m);
            }
            msg_free(&m);
        }
        return;
    }
    case EV_LINK_DOWN:
        if (x->running && x->r)
            repl_on_peer_down(x->r, s->nodes[e->src].self.id);
        return;
    case EV_STORED:
        if (!x->running || e->gen != x->life)
            return; /* handled at the crash */
        store_apply(&x->store, e->w);
        if (e->w->tag == AE_WRITE_TAG) {
            ae_on_stored(x->ae, e->w); /* frees it */
            return;
        }
        if (x->ae)
            ae_on_stored(x->ae, e->w);
        repl_on_stored(x->r, e->w);
        return;
    case EV_TICK:
        if (!x->running || e->gen != x->life)
            return;
        repl_view(x);
        repl_tick(x->r);
        if (x->ae) {
            ae_set_ring(x->ae, repl_ring(x->r));
            ae_tick(x->ae);
        }
        push_tick(x);
        return;
    default:
        return;
    }
}

void sim_enable_repl(struct sim *s, const struct repl_config *rc)
{
    s->repl = true;
    s->rc = *rc;
}

bool sim_request(struct sim *s, size_t i, uint8_t type, const char *key,
                 const char *value, int consistency, struct sim_op *op)
{
    struct simnode *x = &s->nodes[i];
    if (!x->running || !x->r)
        return false;
    /* As the service does: merge the session clock first. */
    hlc_observe(&x->hlc, op->session_hlc, renv_wall(x));
    op->done = false;
    struct msg m = {.type = type, .hlc = op->session_hlc};
    m.u.req.key = (const uint8_t *)key;
    m.u.req.key_len = strlen(key);
    m.u.req.value = (const uint8_t *)value;
    m.u.req.value_len = value ? strlen(value) : 0;
    m.u.req.consistency = (uint8_t)consistency;
    if (repl_client_request(x->r, op, &m) != 0)
        abort();
    return true;
}

void sim_set_skew(struct sim *s, size_t i, int64_t skew_ms)
{
    s->nodes[i].skew_ms = skew_ms;
}

bool sim_stored(struct sim *s, size_t i, const char *key, uint64_t *version)
{
    struct mrec *m = store_find(&s->nodes[i].store, false, NULL,
                                (const uint8_t *)key, strlen(key));
    if (m)
        *version = m->version;
    return m != NULL;
}

size_t sim_hints(struct sim *s, size_t i)
{
    size_t n = 0;
    for (size_t k = 0; k < s->nodes[i].store.n; k++)
        n += s->nodes[i].store.recs[k].hint;
    return n;
}

const struct wire_member *sim_member(struct sim *s, size_t i)
{
    return &s->nodes[i].self;
}

void sim_start_all(struct sim *s)
{
    size_t seed0 = 0;
    sim_start(s, 0, NULL, 0);
    for (size_t i = 1; i < s->n; i++) {
        sim_run_for(s, 10);
        sim_start(s, i, &seed0, 1);
    }
    sim_run_for(s, 20000);
}

void sim_enable_ae(struct sim *s, const struct ae_config *ac)
{
    s->ae = true;
    s->ac = *ac;
}

void sim_wipe(struct sim *s, size_t i)
{
    struct memstore *ms = &s->nodes[i].store;
    for (size_t k = 0; k < ms->n; k++)
        free(ms->recs[k].key);
    ms->n = 0;
}

bool sim_repair(struct sim *s, size_t i, int range, struct sim_repair *r)
{
    struct simnode *x = &s->nodes[i];
    memset(r, 0, sizeof(*r));
    return x->running && x->ae && ae_repair(x->ae, r, 0, range, false) == 0;
}

struct ae *sim_ae(struct sim *s, size_t i)
{
    return s->nodes[i].ae;
}

struct ae *sim_ae_fresh(struct sim *s, size_t i)
{
    return sim_ae_new(&s->nodes[i]);
}

size_t sim_replicas_of(struct sim *s, size_t i, const char *key, size_t *out,
                       size_t max)
{
    const struct ring *ring = s->nodes[i].r ? repl_ring(s->nodes[i].r) : NULL;
    if (!ring)
        return 0;
    size_t idx[REPL_MAX_REPLICAS];
    size_t n = ring_preference_list(
        ring, storage_token((const uint8_t *)key, strlen(key)),
        max < REPL_MAX_REPLICAS ? max : REPL_MAX_REPLICAS, idx);
    for (size_t k = 0; k < n; k++)
        out[k] = node_by_id(s, ring_node_at(ring, idx[k])->id);
    return n;
}
