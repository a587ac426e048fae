/* One essaim node, sans I/O: the composition of membership, repl and ae
 * (core.h). */
#include "core.h"

#include "../common/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct core {
    struct core_config cfg;
    struct env env;
    struct hlc hlc;
    struct membership *m;
    struct repl *r;    /* NULL unless cfg.with_repl */
    struct ae *ae;     /* NULL unless cfg.with_ae */
    struct topo *topo; /* NULL unless cfg.with_repl */
    membership_observer_fn observer;
    void *observer_arg;
    struct wire_member *view; /* membership, as last given to repl */
    size_t view_cap;
    bool joined;           /* as last told to repl */
    bool view_dirty;       /* membership changed since repl last saw it */
    uint64_t join_warn_at; /* next "still joining" warning */
    bool stopping;
    bool closed; /* drained and about to exit: peers' messages are dropped */
};

void core_config_defaults(struct core_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    membership_config_defaults(&cfg->membership);
    repl_config_defaults(&cfg->repl);
    ae_config_defaults(&cfg->ae);
    topo_config_defaults(&cfg->topo);
    cfg->with_repl = cfg->with_ae = true;
    cfg->max_key = PROTO_MAX_KEY;
    cfg->max_value = PROTO_MAX_VALUE_LIMIT;
    cfg->join_warn_ms = 30000;
}

/* Every status change is logged here, whoever drives the node. */
static void observe(void *arg, const struct wire_member *w, uint8_t old)
{
    struct core *c = arg;
    static const char *const names[] = {"alive", "suspect", "dead", "left"};
    c->view_dirty = true;
    if (old != w->status) {
        char id[2 * CRYPTO_NODE_ID_BYTES + 1];
        hex_encode(id, w->id, sizeof(w->id));
        log_info("member %.12s %s (%s/%s): %s -> %s, incarnation %llu", id,
                 w->addr, w->region, w->zone,
                 old == MEMBER_NEW ? "new" : names[old & 3],
                 names[w->status & 3], (unsigned long long)w->incarnation);
    }
    if (c->observer)
        c->observer(c->observer_arg, w, old);
}

/* A member's smoothed round trip, for coordinators ordering replicas. */
static uint32_t member_rtt(void *arg, const uint8_t *id)
{
    const struct member_view *v = membership_find(arg, id);
    return v ? v->srtt_ms : 0;
}

struct core *core_new(const struct core_config *cfg, const struct env *env,
                      const struct wire_member *self)
{
    struct core *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->cfg = *cfg;
    /* Anti-entropy refuses records by the bound replication uses. */
    c->cfg.ae.max_clock_offset_ms = cfg->repl.max_clock_offset_ms;
    c->env = *env;
    /* The clock restarts above every version this node ever stored, so it
     * never stamps a write below one it stamped before, whatever its wall
     * clock did meanwhile (DESIGN §4). */
    if (env->store && env->store->max_version)
        c->hlc.last = env->store->max_version(env->store_ctx);
    c->m = membership_new(&c->cfg.membership, &c->env, self);
    if (!c->m)
        goto fail;
    membership_set_observer(c->m, observe, c);
    if (cfg->with_repl) {
        c->r = repl_new(&c->cfg.repl, &c->env, self->id, &c->hlc);
        if (!c->r)
            goto fail;
        repl_set_rtt_source(c->r, member_rtt, c->m);
        /* Streams place keys as replication does. */
        c->cfg.topo.placement = c->cfg.repl.placement;
        c->cfg.topo.vnodes = c->cfg.repl.vnodes;
        c->topo = topo_new(&c->cfg.topo, &c->env, self->id, c->m, c->r);
        if (!c->topo)
            goto fail;
    }
    if (cfg->with_repl && cfg->with_ae) {
        c->cfg.ae.placement = c->cfg.repl.placement; /* as replication */
        c->ae = ae_new(&c->cfg.ae, &c->env, self->id);
        if (!c->ae)
            goto fail;
    }
    return c;
fail:
    core_free(c);
    return NULL;
}

void core_free(struct core *c)
{
    if (!c)
        return;
    ae_free(c->ae);
    topo_free(c->topo);
    repl_free(c->r);
    membership_free(c->m);
    free(c->view);
    free(c);
}

void core_set_observer(struct core *c, membership_observer_fn fn, void *arg)
{
    c->observer = fn;
    c->observer_arg = arg;
}

/* While joining, says every join_warn_ms which seeds have not answered. */
static void warn_joining(struct core *c, uint64_t now)
{
    if (c->cfg.join_warn_ms == 0)
        return;
    if (c->join_warn_at == 0)
        c->join_warn_at = now + c->cfg.join_warn_ms;
    if (now < c->join_warn_at)
        return;
    char unheard[256];
    size_t k = membership_unheard_seeds(c->m, unheard, sizeof(unheard));
    if (k)
        log_warn("still joining: no member that has joined answered, and %zu "
                 "seed(s) have not answered (%s); check --join and that "
                 "those nodes are up and reachable",
                 k, unheard);
    else
        log_warn("still joining: no member that has joined answered");
    c->join_warn_at = now + c->cfg.join_warn_ms;
}

/* Gives repl (and through its ring, ae) the current membership view. */
static void refresh_view(struct core *c)
{
    c->view_dirty = false;
    bool joined = membership_joined(c->m);
    if (joined && !c->joined)
        log_info("joined the cluster: %zu members known",
                 membership_size(c->m));
    if (!joined)
        warn_joining(c, c->env.now_ms(c->env.ctx));
    c->joined = joined;
    if (!c->r)
        return;
    size_t n = membership_size(c->m);
    if (n > c->view_cap) {
        void *p = realloc(c->view, n * sizeof(*c->view));
        if (!p)
            return; /* the next tick tries again */
        c->view = p;
        c->view_cap = n;
    }
    for (size_t i = 0; i < n; i++)
        c->view[i] = membership_get(c->m, i)->info;
    repl_set_members(c->r, c->view, n);
    repl_set_ready(c->r, joined);
    if (c->ae)
        ae_set_ring(c->ae, repl_ring(c->r));
}

void core_start(struct core *c, const char *const *seeds, size_t n_seeds)
{
    membership_start(c->m, seeds, n_seeds);
    refresh_view(c); /* a node with no seed coordinates at once */
}

void core_on_gossip(struct core *c, const char *src_addr,
                    const struct gossip_msg *m)
{
    if (!c->closed)
        membership_on_message(c->m, src_addr, m);
}

int core_on_peer_message(struct core *c,
                         const uint8_t from[CRYPTO_NODE_ID_BYTES],
                         const uint8_t *buf, size_t len)
{
    /* The transport routes by the same rule; a client's message on a node
     * link is refused here too, never handled (fuzz_peer found one answered
     * with a replica answer that did not decode). */
    if (proto_peer_kind(buf, len) != PROTO_PEER_NODE)
        return KV_ERR_PROTO;
    if (c->closed)
        return 0; /* its sender times out, as if the node had gone */
    struct msg_limits lim = {c->cfg.max_key, c->cfg.max_value};
    struct msg m;
    int rc = msg_decode(buf, len, &lim, &m);
    if (rc)
        return rc;
    if (m.type == MSG_AE || m.type == MSG_AE_ANSWER) {
        if (c->ae)
            ae_on_peer_message(c->ae, from, &m, len);
    } else if (m.type == MSG_STREAM || m.type == MSG_STREAM_ANSWER) {
        if (c->topo)
            topo_on_peer_message(c->topo, from, &m);
    } else if (c->r) {
        repl_on_peer_message(c->r, from, &m);
    }
    msg_free(&m);
    return 0;
}

void core_on_peer_down(struct core *c, const uint8_t id[CRYPTO_NODE_ID_BYTES])
{
    if (c->r)
        repl_on_peer_down(c->r, id);
    if (c->topo)
        topo_on_peer_down(c->topo, id);
}

void core_on_stored(struct core *c, struct storage_write *w)
{
    uint8_t tag = w->tag;
    if (c->ae)
        ae_on_stored(c->ae, w); /* keeps its trees current; frees its own */
    if (tag == TOPO_WRITE_TAG && c->topo)
        topo_on_stored(c->topo, w);
    else if (tag != AE_WRITE_TAG && c->r)
        repl_on_stored(c->r, w);
}

void core_tick(struct core *c)
{
    refresh_view(c);
    if (c->r)
        repl_tick(c->r);
    if (c->topo && !c->stopping) {
        topo_tick(c->topo, c->joined);
        if (c->view_dirty)
            refresh_view(c); /* a phase it moved places keys at once */
    }
    if (c->ae && !c->stopping)
        ae_tick(c->ae);
}

int core_client_request(struct core *c, void *client, const struct msg *m)
{
    if (c->stopping || !c->r)
        return KV_ERR_UNAVAILABLE;
    /* A request is placed on the view as it is now, not as of the last
     * tick: a member back from a restart takes its writes at once. */
    if (c->view_dirty)
        refresh_view(c);
    return repl_client_request(c->r, client, m);
}

int core_repair(struct core *c, void *client, uint64_t id, int range,
                bool scrub)
{
    if (!c->ae || c->stopping)
        return KV_ERR_UNAVAILABLE;
    /* A round runs on the view as it is now: one started on the last
     * tick's would end as soon as the tick brought it up to date. */
    if (c->view_dirty)
        refresh_view(c);
    return ae_repair(c->ae, client, id, range, scrub);
}

int core_topo_request(struct core *c, void *client, uint64_t id,
                      const struct msg_topo *q, char *why, size_t cap)
{
    if (!c->topo || c->stopping) {
        snprintf(why, cap, "this node is stopping");
        return KV_ERR_UNAVAILABLE;
    }
    if (!c->joined) {
        snprintf(why, cap, "this node is still joining the cluster");
        return KV_ERR_UNAVAILABLE;
    }
    return topo_request(c->topo, client, id, q, why, cap);
}

bool core_gone(const struct core *c)
{
    return c->topo && topo_gone(c->topo);
}

const char *core_failed(const struct core *c)
{
    return c->topo ? topo_failed(c->topo) : NULL;
}

void core_client_gone(struct core *c, void *client)
{
    if (c->r)
        repl_client_gone(c->r, client);
    if (c->ae)
        ae_client_gone(c->ae, client);
    if (c->topo)
        topo_client_gone(c->topo, client);
}

void core_stop(struct core *c)
{
    if (c->stopping)
        return;
    c->stopping = true;
    /* DESIGN §7: a stop is announced; the node keeps its ranges (a
     * decommission has already left). */
    membership_stop(c->m);
}

void core_close(struct core *c)
{
    c->closed = true;
}

bool core_stopping(const struct core *c)
{
    return c->stopping;
}

bool core_drained(const struct core *c)
{
    return c->stopping && !(c->r && repl_busy(c->r)) &&
           !(c->ae && ae_busy(c->ae)) && !(c->topo && topo_busy(c->topo));
}

bool core_joined(const struct core *c)
{
    return membership_joined(c->m);
}

const struct wire_member *core_member(struct core *c,
                                      const uint8_t id[CRYPTO_NODE_ID_BYTES])
{
    const struct member_view *v = membership_find(c->m, id);
    return v ? &v->info : NULL;
}

const struct ring *core_ring(const struct core *c)
{
    return c->r ? repl_ring(c->r) : NULL;
}

struct hlc *core_hlc(struct core *c)
{
    return &c->hlc;
}

struct membership *core_membership(struct core *c)
{
    return c->m;
}

struct repl *core_repl(struct core *c)
{
    return c->r;
}

struct ae *core_ae(struct core *c)
{
    return c->ae;
}

struct topo *core_topo(struct core *c)
{
    return c->topo;
}
