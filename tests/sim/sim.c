/* The simulator: the cluster harness over the fakes of tests/fake/ (the
 * event loop with virtual time, the network, the store). Each node is a
 * node/core.c core, the composition kvnode runs, acting through the env
 * below. */
#include "sim.h"

#include "../../node/core.h"
#include "../../node/ring.h"

#include "../../common/common.h"
#include "../fake/env.h"
#include "../fake/loop.h"
#include "../fake/net.h"
#include "../fake/store.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum ev_kind {
    EV_DELIVER,   /* a gossip message */
    EV_TIMER,     /* membership's timer */
    EV_REPL,      /* a replica or anti-entropy message */
    EV_LINK_DOWN, /* node learns its link to src failed */
    EV_STORED,    /* a storage write completes */
    EV_TICK,      /* core_tick */
};

/* Events are struct fake_event: gen is the node's life (or, for EV_TIMER,
 * its timer generation), ptr the storage write of EV_STORED. */

struct simnode {
    struct sim *s;
    size_t index;
    struct core *core; /* NULL while the node is down */
    struct env env;
    bool running;
    bool leaving;  /* stopping: exits once drained, as kvnode does */
    uint64_t life; /* bumped at each crash, so old timers die with it */
    struct wire_member self;
    struct timer *timer;
    uint64_t timer_gen;
    int64_t skew_ms;
    struct fake_store *store; /* durable: survives crashes */
};

struct sim {
    uint64_t seed;
    struct fake_loop loop;
    struct fake_net net;
    struct membership_config cfg;
    struct simnode *nodes;
    size_t n;
    bool repl;
    struct repl_config rc;
    uint64_t stream_rate; /* sim_set_stream (0: the defaults) */
    uint32_t stream_batch;
    bool ae;
    struct ae_config ac;
    struct sim_stats stats;
    /* region names, by fake_net region index */
    char regions[FAKE_NET_MAX_REGIONS][GOSSIP_NAME_MAX];
    size_t n_regions;
};

uint64_t sim_splitmix64(uint64_t *x)
{
    return fake_splitmix64(x);
}

static uint64_t next_rand(struct sim *s)
{
    return fake_loop_rand(&s->loop);
}

static void push(struct sim *s, struct fake_event e)
{
    fake_loop_push(&s->loop, e);
}

static void trace(struct sim *s, const void *p, size_t n)
{
    fake_loop_trace(&s->loop, p, n);
}

/* A delivery enters the trace: when, to whom, from whom, and the bytes. */
static void trace_delivery(struct sim *s, const struct fake_event *e)
{
    uint8_t hdr[24];
    be64_put(hdr, s->loop.now);
    be64_put(hdr + 8, e->node);
    be64_put(hdr + 16, e->src);
    trace(s, hdr, sizeof(hdr));
    trace(s, e->bytes, e->len);
}

/* ---- the environment each node's core acts through ---- */

static size_t addr_node(const char *addr)
{
    return (size_t)strtoul(addr + 4, NULL, 10); /* "sim:<index>" */
}

static uint64_t env_now(void *ctx)
{
    return ((struct simnode *)ctx)->s->loop.now;
}

static uint64_t env_random(void *ctx)
{
    return next_rand(((struct simnode *)ctx)->s);
}

static void env_timer(void *ctx, struct timer *t, uint64_t after)
{
    struct simnode *n = ctx;
    n->timer = t;
    n->timer_gen++;
    push(n->s, (struct fake_event){.at = n->s->loop.now + after,
                                   .kind = EV_TIMER,
                                   .node = n->index,
                                   .gen = n->timer_gen});
}

static bool is_udp(uint8_t type)
{
    return type != GOSSIP_SYNC && type != GOSSIP_SYNC_REPLY;
}

static void env_gossip(void *ctx, const struct peer *to,
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
    if (s->net.region[from->index] != s->net.region[dst])
        s->stats.wan_bytes += len;
    if (udp) {
        s->stats.udp_msgs++;
        s->stats.udp_bytes += len;
    } else {
        s->stats.sync_msgs++;
        s->stats.sync_bytes += len;
    }
    struct fake_route r =
        fake_net_route(&s->net, &s->loop, from->index, dst, udp);
    if (r.lost) {
        s->stats.dropped++;
        free(bytes);
        return;
    }
    for (unsigned c = 0; c < r.copies; c++) {
        uint8_t *copy = bytes;
        if (c == 1) {
            copy = malloc(len);
            if (!copy)
                abort();
            memcpy(copy, bytes, len);
        }
        push(s, (struct fake_event){.at = s->loop.now + r.delay[c],
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
    be64_put(rec, s->loop.now);
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
    if (w->status == MEMBER_SUSPECT && who < s->n && s->nodes[who].running &&
        !sim_draining(s, who))
        s->stats.false_suspect++;
    if (getenv("SIM_DEBUG"))
        fprintf(stderr, "%8llu node %zu: node %zu %d -> %d inc %llu\n",
                (unsigned long long)s->loop.now, n->index, who, old, w->status,
                (unsigned long long)w->incarnation);
}

/* ---- nodes ---- */

#define SIM_EPOCH_MS 1700000000000ull

static void node_env(struct simnode *x);

struct sim *sim_new(uint64_t seed, size_t n, const struct membership_config *c)
{
    struct sim *s = calloc(1, sizeof(*s));
    s->nodes = calloc(n, sizeof(*s->nodes));
    if (!s || !s->nodes)
        abort();
    /* The nodes log what kvnode would; SIM_LOG=1 shows it. */
    log_set_level(getenv("SIM_LOG") ? LOG_DEBUG : LOG_ERROR);
    s->seed = seed;
    fake_loop_init(&s->loop, seed);
    fake_net_init(&s->net, n);
    s->n = n;
    s->cfg = *c;
    for (size_t i = 0; i < n; i++) {
        struct simnode *x = &s->nodes[i];
        x->s = s;
        x->index = i;
        for (size_t k = 0; k < 32; k += 8)
            be64_put(x->self.pubkey + k, next_rand(s));
        crypto_node_id(x->self.id, x->self.pubkey);
        snprintf(x->self.addr, sizeof(x->self.addr), "sim:%zu", i);
        char region[8], zone[8];
        snprintf(region, sizeof(region), "r%zu", i % 2);
        snprintf(zone, sizeof(zone), "z%zu", i % 3);
        sim_set_place(s, i, region, zone);
        x->self.version = PROTO_VERSION;
        x->store = fake_store_new();
        node_env(x);
    }
    return s;
}

void sim_free(struct sim *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->nodes[i].running)
            sim_crash(s, i);
    for (size_t i = 0; i < s->n; i++)
        fake_store_free(s->nodes[i].store);
    fake_loop_free(&s->loop);
    fake_net_free(&s->net);
    free(s->nodes);
    free(s);
}

void sim_set_loss(struct sim *s, double p)
{
    s->net.loss = p;
}

void sim_set_dup(struct sim *s, double p)
{
    s->net.dup = p;
}

static uint8_t region_index(struct sim *s, const char *name)
{
    for (size_t i = 0; i < s->n_regions; i++)
        if (strcmp(s->regions[i], name) == 0)
            return (uint8_t)i;
    if (s->n_regions == FAKE_NET_MAX_REGIONS)
        abort(); /* a test with more regions than the fake network has */
    snprintf(s->regions[s->n_regions], GOSSIP_NAME_MAX, "%s", name);
    return (uint8_t)s->n_regions++;
}

void sim_set_place(struct sim *s, size_t i, const char *region,
                   const char *zone)
{
    struct simnode *x = &s->nodes[i];
    snprintf(x->self.region, sizeof(x->self.region), "%s", region);
    snprintf(x->self.zone, sizeof(x->self.zone), "%s", zone);
    s->net.region[i] = region_index(s, region);
}

void sim_set_wan(struct sim *s, const char *a, const char *b,
                 uint32_t one_way_ms, uint32_t jitter_ms)
{
    uint8_t x = region_index(s, a), y = region_index(s, b);
    s->net.wan[x][y] = s->net.wan[y][x] = one_way_ms;
    s->net.wan_jitter[x][y] = s->net.wan_jitter[y][x] = jitter_ms;
}

void sim_set_delay(struct sim *s, uint32_t min_ms, uint32_t jitter_ms)
{
    s->net.delay_min = min_ms;
    s->net.jitter = jitter_ms;
}

void sim_set_slow(struct sim *s, size_t i, uint32_t extra_ms)
{
    s->net.slow_ms[i] = extra_ms;
}

void sim_add_filter(struct sim *s,
                    bool (*fn)(void *arg, size_t from, size_t to,
                               bool datagram),
                    void *arg)
{
    if (!fake_net_add_filter(&s->net, fn, arg))
        abort();
}

void sim_clear_filters(struct sim *s)
{
    fake_net_clear_filters(&s->net);
}

void sim_partition(struct sim *s, const int *group)
{
    fake_net_partition(&s->net, group);
}

static void push_tick(struct simnode *x)
{
    push(x->s, (struct fake_event){.at = x->s->loop.now + CORE_TICK_MS,
                                   .kind = EV_TICK,
                                   .node = x->index,
                                   .gen = x->life});
}

static struct core *node_core(struct simnode *x)
{
    struct sim *s = x->s;
    struct core_config cc;
    core_config_defaults(&cc);
    cc.membership = s->cfg;
    cc.repl = s->rc;
    cc.ae = s->ac;
    cc.with_repl = s->repl;
    cc.with_ae = s->ae;
    cc.join_warn_ms = 0;
    if (s->stream_rate) {
        cc.topo.stream_bytes_s = s->stream_rate;
        cc.topo.batch_bytes = s->stream_batch;
    }
    return core_new(&cc, &x->env, &x->self);
}

void sim_start(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds)
{
    struct simnode *x = &s->nodes[i];
    x->life++;
    x->leaving = false;
    x->core = node_core(x);
    if (!x->core)
        abort();
    core_set_observer(x->core, observe, x);
    x->running = true;
    const char *addrs[16];
    for (size_t k = 0; k < n_seeds && k < 16; k++)
        addrs[k] = s->nodes[seeds[k]].self.addr;
    core_start(x->core, addrs, n_seeds < 16 ? n_seeds : 16);
    if (s->repl)
        push_tick(x); /* membership alone keeps its own timer */
}

void sim_crash(struct sim *s, size_t i)
{
    struct simnode *x = &s->nodes[i];
    x->running = false;
    x->timer_gen++;
    /* Writes the store had not completed are lost with the process; the
     * core hears they failed (its sends go nowhere now) and frees them.
     * That may submit more, so go round until none is left. */
    for (bool more = true; more;) {
        more = false;
        for (size_t k = 0; k < fake_loop_pending(&s->loop); k++) {
            struct fake_event *e = fake_loop_event(&s->loop, k);
            if (e->kind != EV_STORED || e->node != i)
                continue;
            struct storage_write *w = e->ptr;
            e->kind = -1; /* cancelled */
            w->result = KV_ERR_IO;
            w->applied = false;
            core_on_stored(x->core, w); /* may grow the heap */
            more = true;
            break;
        }
    }
    x->life++;
    /* The ring phase survives, as DATA/ring-phase keeps it; a node that
     * left joins again as a new one. */
    uint8_t phase = membership_get(core_membership(x->core), 0)->info.ring;
    x->self.ring = phase == RING_LEFT ? RING_WAITING : phase;
    core_free(x->core);
    x->core = NULL;
}

void sim_restart(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds)
{
    sim_start(s, i, seeds, n_seeds);
}

/* A leaving node exits once its core has drained, as kvnode's loop does. */
static void exit_if_drained(struct sim *s, struct simnode *x)
{
    if (x->running && !x->leaving && core_gone(x->core)) {
        x->leaving = true; /* decommissioned: it stops, as kvnode does */
        core_stop(x->core);
    }
    if (x->running && x->leaving && core_drained(x->core))
        sim_crash(s, x->index);
}

void sim_leave(struct sim *s, size_t i)
{
    struct simnode *x = &s->nodes[i];
    x->leaving = true;
    core_stop(x->core);
    exit_if_drained(s, x);
}

bool sim_draining(const struct sim *s, size_t i)
{
    return s->nodes[i].running && s->nodes[i].leaving;
}

static void run_repl_event(struct sim *s, struct fake_event *e);

static void run_event(struct sim *s, struct fake_event *e)
{
    struct simnode *x = &s->nodes[e->node];
    if (e->kind >= EV_REPL) {
        run_repl_event(s, e);
    } else if (e->kind == EV_TIMER) {
        if (x->running && e->gen == x->timer_gen && x->timer)
            x->timer->fire(x->timer->arg);
    } else if (!x->running) {
        s->stats.dropped++;
        return;
    } else {
        trace_delivery(s, e);
        struct gossip_msg g;
        if (gossip_decode(e->bytes, e->len, &g) == 0) {
            core_on_gossip(x->core, s->nodes[e->src].self.addr, &g);
            gossip_msg_free(&g);
        }
    }
    exit_if_drained(s, x);
}

static void run_one(void *arg, struct fake_event *e)
{
    run_event(arg, e);
}

void sim_run_until(struct sim *s, uint64_t t)
{
    fake_loop_run_until(&s->loop, t, run_one, s);
}

void sim_run_for(struct sim *s, uint64_t ms)
{
    sim_run_until(s, s->loop.now + ms);
}

uint64_t sim_now(const struct sim *s)
{
    return s->loop.now;
}

bool sim_running(const struct sim *s, size_t i)
{
    return s->nodes[i].running;
}

struct membership *sim_node(struct sim *s, size_t i)
{
    return s->nodes[i].core ? core_membership(s->nodes[i].core) : NULL;
}

int sim_status(struct sim *s, size_t a, size_t b)
{
    struct core *c = s->nodes[a].core;
    const struct wire_member *w =
        c ? core_member(c, s->nodes[b].self.id) : NULL;
    return w ? w->status : -1;
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
    fake_loop_trace_hex(&s->loop, out);
}

/* ---- replication and anti-entropy traffic ---- */

static size_t node_by_id(struct sim *s, const uint8_t *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->nodes[i].self.id, id, CRYPTO_NODE_ID_BYTES) == 0)
            return i;
    return s->n;
}

static uint64_t env_wall(void *ctx)
{
    struct simnode *x = ctx;
    return (uint64_t)((int64_t)(x->s->loop.now + SIM_EPOCH_MS) + x->skew_ms);
}

static bool reachable(struct sim *s, struct simnode *a, struct simnode *b)
{
    return b->running && !fake_net_cut(&s->net, a->index, b->index, false);
}

/* A link failure is noticed a little later, as a reset or refused
 * connection would be. */
static void link_down(struct sim *s, size_t node, size_t peer)
{
    push(s, (struct fake_event){.at = s->loop.now + 2 * s->net.delay_min + 20,
                                .kind = EV_LINK_DOWN,
                                .node = node,
                                .src = peer});
}

/* env->send: a replica or anti-entropy message; returns its encoded size. */
static size_t env_send(void *ctx, const uint8_t *to, const struct msg *m)
{
    struct simnode *from = ctx;
    struct sim *s = from->s;
    size_t dst = node_by_id(s, to);
    uint8_t *bytes;
    size_t len;
    if (!from->running || dst == s->n || msg_encode(m, &bytes, &len) != 0)
        return 0;
    s->stats.repl_msgs++;
    if (s->net.region[from->index] != s->net.region[dst]) {
        s->stats.wan_bytes += len;
        s->stats.wan_node_bytes += len;
    }
    struct simnode *d = &s->nodes[dst];
    if (!reachable(s, from, d)) {
        free(bytes);
        s->stats.dropped++;
        link_down(s, from->index, dst);
        return len;
    }
    push(s, (struct fake_event){
                .at = s->loop.now +
                      fake_net_route(&s->net, &s->loop, from->index, dst, false)
                          .delay[0],
                .kind = EV_REPL,
                .node = dst,
                .src = from->index,
                .bytes = bytes,
                .len = len});
    return len;
}

/* env->reply: a repair's outcome goes to its struct sim_repair, every other
 * answer to its struct sim_op. */
static void env_reply(void *ctx, void *client, const struct msg *m)
{
    (void)ctx;
    if (m->type == MSG_REPAIR_RESULT) {
        struct sim_repair *r = client;
        if (!m->u.repair_result.final)
            return;
        r->done = true;
        r->code = m->u.repair_result.code;
        r->pulled = m->u.repair_result.pulled;
        r->pushed = m->u.repair_result.pushed;
        r->bytes =
            m->u.repair_result.bytes_sent + m->u.repair_result.bytes_received;
        return;
    }
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
    snprintf(op->text, sizeof(op->text), "%.*s", (int)m->u.result.text_len,
             m->u.result.text);
}

/* The store's submit: the write commits 1 to 3 ms later. */
static void store_submitted(void *arg, struct storage_write *w)
{
    struct simnode *x = arg;
    struct sim *s = x->s;
    push(s, (struct fake_event){.at = s->loop.now + 1 + next_rand(s) % 3,
                                .kind = EV_STORED,
                                .node = x->index,
                                .gen = x->life,
                                .ptr = w});
}

static void node_env(struct simnode *x)
{
    x->env = (struct env){.now_ms = env_now,
                          .wall_ms = env_wall,
                          .random = env_random,
                          .timer = env_timer,
                          .gossip = env_gossip,
                          .send = env_send,
                          .reply = env_reply,
                          .hash = fake_env_hash,
                          .store = &fake_store_port,
                          .store_ctx = x->store,
                          .ctx = x};
    fake_store_set_submit_hook(x->store, store_submitted, x);
}

static void run_repl_event(struct sim *s, struct fake_event *e)
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
        (void)core_on_peer_message(x->core, from->self.id, e->bytes, e->len);
        return;
    }
    case EV_LINK_DOWN:
        if (x->running)
            core_on_peer_down(x->core, s->nodes[e->src].self.id);
        return;
    case EV_STORED:
        if (!x->running || e->gen != x->life)
            return; /* handled at the crash */
        fake_store_apply(x->store, e->ptr);
        core_on_stored(x->core, e->ptr);
        return;
    case EV_TICK:
        if (!x->running || e->gen != x->life)
            return;
        core_tick(x->core);
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
    if (!x->running || !core_repl(x->core))
        return false;
    /* As the service does: merge the session clock first. */
    hlc_observe(core_hlc(x->core), op->session_hlc, env_wall(x));
    op->done = false;
    struct msg m = {.type = type, .hlc = op->session_hlc};
    m.u.req.key = (const uint8_t *)key;
    m.u.req.key_len = strlen(key);
    m.u.req.value = (const uint8_t *)value;
    m.u.req.value_len = value ? strlen(value) : 0;
    m.u.req.consistency = (uint8_t)consistency;
    int rc = core_client_request(x->core, op, &m);
    if (rc == KV_ERR_UNAVAILABLE) { /* stopping: the service's answer */
        op->done = true;
        op->code = rc;
        return true;
    }
    if (rc != 0)
        abort();
    return true;
}

void sim_set_skew(struct sim *s, size_t i, int64_t skew_ms)
{
    s->nodes[i].skew_ms = skew_ms;
}

bool sim_stored(struct sim *s, size_t i, const char *key, uint64_t *version)
{
    return fake_store_lookup(s->nodes[i].store, (const uint8_t *)key,
                             strlen(key), version, NULL);
}

size_t sim_hints(struct sim *s, size_t i)
{
    return fake_store_hint_count(s->nodes[i].store);
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

void sim_store_fail(struct sim *s, size_t i, int code)
{
    fake_store_fail(s->nodes[i].store, code);
}

void sim_wipe(struct sim *s, size_t i)
{
    fake_store_wipe(s->nodes[i].store);
}

bool sim_repair(struct sim *s, size_t i, int range, struct sim_repair *r)
{
    struct simnode *x = &s->nodes[i];
    memset(r, 0, sizeof(*r));
    return x->running && core_repair(x->core, r, 0, range, false) == 0;
}

bool sim_corrupt(struct sim *s, size_t i, const char *key)
{
    return fake_store_corrupt(s->nodes[i].store, (const uint8_t *)key,
                              strlen(key));
}

size_t sim_value(struct sim *s, size_t i, const char *key, uint8_t *out,
                 size_t cap)
{
    return fake_store_value(s->nodes[i].store, (const uint8_t *)key,
                            strlen(key), out, cap);
}

void sim_set_stream(struct sim *s, uint64_t bytes_s, uint32_t batch)
{
    s->stream_rate = bytes_s;
    s->stream_batch = batch;
}

void sim_join(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds)
{
    s->nodes[i].self.ring = RING_WAITING;
    sim_start(s, i, seeds, n_seeds);
}

static bool topo(struct sim *s, size_t i, uint8_t op, size_t victim, bool force,
                 struct sim_repair *r)
{
    struct simnode *x = &s->nodes[i];
    memset(r, 0, sizeof(*r));
    struct msg_topo q = {.op = op, .force = force};
    if (op == TOPO_REMOVENODE)
        memcpy(q.node, s->nodes[victim].self.id, sizeof(q.node));
    char why[320];
    if (!x->running)
        return false;
    r->code = core_topo_request(x->core, r, 0, &q, why, sizeof(why));
    r->done = r->code != 0;
    if (r->code && getenv("SIM_LOG"))
        fprintf(stderr, "sim: node %zu refused: %s\n", i, why);
    return true;
}

bool sim_decommission(struct sim *s, size_t i, bool force, struct sim_repair *r)
{
    return topo(s, i, TOPO_DECOMMISSION, 0, force, r);
}

bool sim_removenode(struct sim *s, size_t i, size_t victim,
                    struct sim_repair *r)
{
    return topo(s, i, TOPO_REMOVENODE, victim, false, r);
}

int sim_phase(struct sim *s, size_t a, size_t b)
{
    struct core *c = s->nodes[a].core;
    const struct wire_member *w =
        c ? core_member(c, s->nodes[b].self.id) : NULL;
    return w ? w->ring : -1;
}

struct ae *sim_ae(struct sim *s, size_t i)
{
    return s->nodes[i].core ? core_ae(s->nodes[i].core) : NULL;
}

struct core *sim_core(struct sim *s, size_t i)
{
    return s->nodes[i].core;
}

const struct env *sim_env(struct sim *s, size_t i)
{
    return &s->nodes[i].env;
}

size_t sim_replicas_of(struct sim *s, size_t i, const char *key, size_t *out,
                       size_t max)
{
    struct core *c = s->nodes[i].core;
    const struct ring *ring = c ? core_ring(c) : NULL;
    if (!ring)
        return 0;
    size_t idx[REPL_MAX_REPLICAS];
    size_t n = ring_preference_list(
        ring, storage_token((const uint8_t *)key, strlen(key)),
        &s->rc.placement, idx);
    if (n > max)
        n = max;
    for (size_t k = 0; k < n; k++)
        out[k] = node_by_id(s, ring_node_at(ring, idx[k])->id);
    return n;
}
