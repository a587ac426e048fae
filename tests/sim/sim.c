/* The simulator: an event heap ordered by (virtual time, sequence number), so
 * events at the same millisecond run in the order they were scheduled and a
 * run depends on nothing but its seed. */
#include "sim.h"

#include "../../common/common.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ev_kind { EV_DELIVER, EV_TIMER, EV_STOP };

struct event {
    uint64_t at, seq;
    enum ev_kind kind;
    size_t node;
    size_t src;
    uint64_t gen; /* EV_TIMER: stale when the node's timer gen moved on */
    uint8_t *bytes;
    size_t len;
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
    struct sim_stats stats;
    crypto_generichash_state trace;
};

/* splitmix64: small, fast, and good enough to drive a simulation. */
static uint64_t next_rand(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
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
        membership_free(s->nodes[i].m);
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

void sim_start(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds)
{
    struct simnode *x = &s->nodes[i];
    struct env env = {env_now, env_send, env_timer, env_random, x};
    x->m = membership_new(&s->cfg, &env, &x->self);
    if (!x->m)
        abort();
    membership_set_observer(x->m, observe, x);
    x->running = true;
    const char *addrs[16];
    for (size_t k = 0; k < n_seeds && k < 16; k++)
        addrs[k] = s->nodes[seeds[k]].self.addr;
    membership_start(x->m, addrs, n_seeds < 16 ? n_seeds : 16);
}

void sim_crash(struct sim *s, size_t i)
{
    struct simnode *x = &s->nodes[i];
    membership_free(x->m);
    x->m = NULL;
    x->running = false;
    x->timer_gen++;
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

static void run_event(struct sim *s, struct event *e)
{
    struct simnode *x = &s->nodes[e->node];
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
    uint8_t hdr[24];
    be64_put(hdr, s->now);
    be64_put(hdr + 8, e->node);
    be64_put(hdr + 16, e->src);
    trace(s, hdr, sizeof(hdr));
    trace(s, e->bytes, e->len);
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
