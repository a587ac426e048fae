/* SWIM with Lifeguard, sans I/O. See membership.h for the protocol and the
 * papers; comments here cite their sections.
 *
 * Data: the view is an array of members (index 0 is this node) with an
 * open-addressing index by id; a broadcast queue holds the members whose
 * latest record still has retransmissions left; one timer is armed at the
 * earliest pending deadline (next probe, ack timeout, relay timeouts,
 * suspicion timeouts, push-pull). */
#include "membership_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void membership_config_defaults(struct membership_config *c)
{
    c->period_ms = 1000;
    c->ack_timeout_ms = 500;
    c->indirect_probes = 3;
    c->retransmit_mult = 4;
    c->suspicion_mult = 4;
    c->suspicion_max_mult = 6;
    c->lhm_max = 8;
    c->push_pull_ms = 30000;
    c->reap_ms = 24u * 3600 * 1000;
    c->join_timeout_ms = 30000;
    c->max_members = MEMBERSHIP_MAX_MEMBERS;
}

/* ---- the index by id ---- */

size_t membership_id_hash(const uint8_t *id)
{
    /* Ids are hashes of public keys: their bytes are already uniform. */
    uint64_t h;
    memcpy(&h, id, sizeof(h));
    return (size_t)h;
}

void membership_index_rebuild(struct membership *m)
{
    memset(m->slots, 0, m->nslots * sizeof(*m->slots));
    for (size_t i = 0; i < m->n; i++) {
        size_t s = membership_id_hash(m->mem[i].v.info.id) & (m->nslots - 1);
        while (m->slots[s])
            s = (s + 1) & (m->nslots - 1);
        m->slots[s] = i + 1;
    }
}

struct member *membership_member(struct membership *m, const uint8_t *id)
{
    size_t s = membership_id_hash(id) & (m->nslots - 1);
    for (size_t k = m->slots[s]; k; k = m->slots[s]) {
        if (memcmp(m->mem[k - 1].v.info.id, id, CRYPTO_NODE_ID_BYTES) == 0)
            return &m->mem[k - 1];
        s = (s + 1) & (m->nslots - 1);
    }
    return NULL;
}

/* ---- dissemination (SWIM §4.1) ---- */

static unsigned retransmit_limit(struct membership *m)
{
    double n = (double)membership_live_count(m) + 1;
    return m->cfg.retransmit_mult * (unsigned)ceil(log10(n));
}

void membership_broadcast(struct membership *m, struct member *x)
{
    x->bcast_left = retransmit_limit(m);
    if (x->in_bq)
        return;
    if (m->bq_n == m->bq_cap) {
        size_t cap = m->bq_cap ? 2 * m->bq_cap : 64;
        size_t *p = realloc(m->bq, cap * sizeof(*p));
        if (!p)
            return; /* the periodic push-pull still spreads it */
        m->bq = p;
        m->bq_cap = cap;
    }
    m->bq[m->bq_n++] = (size_t)(x - m->mem);
    x->in_bq = true;
}

/* Fills out[] with up to MAX_PIGGYBACK records, fewest transmissions first,
 * and counts one transmission for each. */
static size_t piggyback(struct membership *m, struct wire_member *out)
{
    size_t n = 0;
    for (size_t round = 0; round < MAX_PIGGYBACK; round++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < m->bq_n; i++) {
            struct member *x = &m->mem[m->bq[i]];
            bool taken = false;
            for (size_t j = 0; j < n; j++)
                taken |= memcmp(out[j].id, x->v.info.id, 16) == 0;
            if (!taken && x->bcast_left > 0 &&
                (best == SIZE_MAX ||
                 x->bcast_left > m->mem[m->bq[best]].bcast_left))
                best = i;
        }
        if (best == SIZE_MAX)
            break;
        struct member *x = &m->mem[m->bq[best]];
        out[n++] = x->v.info;
        if (--x->bcast_left == 0) {
            x->in_bq = false;
            m->bq[best] = m->bq[--m->bq_n];
        }
    }
    return n;
}

/* Sends a datagram with piggybacked updates. target is the member a
 * ping-req asks about; about, when set, is the member this message goes to,
 * so that a suspicion of it rides first (Lifeguard's buddy system, §4.3). */
static void send_msg(struct membership *m, const char *addr, uint8_t type,
                     uint32_t seq, const struct member *target,
                     const struct member *about)
{
    struct wire_member pb[MAX_RECORDS];
    struct gossip_msg g = {.type = type, .seq = seq, .members = pb};
    memcpy(g.from, m->mem[0].v.info.id, sizeof(g.from));
    if (target) {
        memcpy(g.target, target->v.info.id, sizeof(g.target));
        memcpy(g.target_addr, target->v.info.addr, sizeof(g.target_addr));
    }
    /* A suspicion of the receiver rides first, then the sender's own record:
     * answering a probe refutes any suspicion the prober holds about us, and
     * a probe from a member restarted under a new incarnation brings the
     * news to each member it probes even when every retransmission of it
     * has missed that member. */
    size_t first = 0;
    if (type == GOSSIP_PING && about && about->v.info.status == MEMBER_SUSPECT)
        pb[first++] = about->v.info;
    if (type == GOSSIP_ACK || type == GOSSIP_PING)
        pb[first++] = m->mem[0].v.info;
    g.n_members = first + piggyback(m, pb + first);
    struct peer to = {.addr = addr};
    m->env.gossip(m->env.ctx, &to, &g);
}

/* A push-pull message carries every member (DESIGN §7). pubkey is the
 * receiver's, when known, so that the stream channel can check it. */
/* Whether a SYNC from addr gets this node's full state now: one a second
 * per address at most, however many arrive. */
static bool sync_reply_due(struct membership *m, const char *addr, uint64_t t)
{
    size_t oldest = 0;
    for (size_t i = 0; i < SYNC_REPLY_SLOTS; i++) {
        if (strcmp(m->synced[i].addr, addr) == 0) {
            if (m->synced[i].at && t - m->synced[i].at < SYNC_REPLY_MIN_MS) {
                m->sync_replies_skipped++;
                return false;
            }
            m->synced[i].at = t;
            return true;
        }
        if (m->synced[i].at < m->synced[oldest].at)
            oldest = i;
    }
    snprintf(m->synced[oldest].addr, sizeof(m->synced[oldest].addr), "%s",
             addr);
    m->synced[oldest].at = t;
    return true;
}

static void send_state(struct membership *m, const char *addr,
                       const uint8_t *pubkey, uint8_t type)
{
    struct wire_member *all = malloc(m->n * sizeof(*all));
    if (!all)
        return;
    for (size_t i = 0; i < m->n; i++)
        all[i] = m->mem[i].v.info;
    struct gossip_msg g = {.type = type,
                           .flags = m->joined ? GOSSIP_FLAG_JOINED : 0,
                           .n_members = m->n,
                           .members = all};
    memcpy(g.from, m->mem[0].v.info.id, sizeof(g.from));
    struct peer to = {.addr = addr, .pubkey = pubkey};
    m->env.gossip(m->env.ctx, &to, &g);
    free(all);
}

/* ---- local health (Lifeguard §4.1) ---- */

void membership_health_add(struct membership *m, int delta)
{
    int v = (int)m->lhm + delta;
    int max = (int)m->cfg.lhm_max - 1;
    m->lhm = (unsigned)(v < 0 ? 0 : v > max ? max : v);
}

static uint64_t scaled(struct membership *m, uint64_t ms)
{
    return ms * (m->lhm + 1);
}

uint64_t membership_ack_timeout(const struct membership *m,
                                const struct member_view *v)
{
    uint64_t t = m->cfg.ack_timeout_ms;
    if (v && v->srtt_ms) {
        uint64_t rto = (uint64_t)v->srtt_ms + 4 * (uint64_t)v->rttvar_ms;
        /* Half the period at most: the ping-reqs need the other half. */
        if (rto > m->cfg.period_ms / 2)
            rto = m->cfg.period_ms / 2;
        if (rto > t)
            t = rto;
    }
    return t;
}

/* Folds one round trip into the member's estimate (RFC 6298 §2). */
static void rtt_sample(struct member_view *v, uint64_t sample)
{
    uint32_t r = sample > UINT32_MAX / 8 ? UINT32_MAX / 8 : (uint32_t)sample;
    v->last_rtt_ms = r;
    if (!v->srtt_ms) {
        v->srtt_ms = r ? r : 1;
        v->rttvar_ms = r / 2;
        return;
    }
    uint32_t dev = r > v->srtt_ms ? r - v->srtt_ms : v->srtt_ms - r;
    v->rttvar_ms = (3 * v->rttvar_ms + dev) / 4;
    v->srtt_ms = (7 * v->srtt_ms + r) / 8;
    if (!v->srtt_ms)
        v->srtt_ms = 1;
}

/* ---- probing (SWIM §3.1, §4.3) ---- */

static struct member *random_live(struct membership *m, size_t skip)
{
    size_t live = 0;
    for (size_t i = 1; i < m->n; i++)
        live += is_live(&m->mem[i]) && i != skip;
    if (!live)
        return NULL;
    size_t pick = (size_t)(rnd(m) % live);
    for (size_t i = 1; i < m->n; i++)
        if (is_live(&m->mem[i]) && i != skip && pick-- == 0)
            return &m->mem[i];
    return NULL;
}

static struct member *random_dead(struct membership *m)
{
    size_t dead = m->n - m->n_live;
    if (!dead)
        return NULL;
    size_t pick = (size_t)(rnd(m) % dead);
    for (size_t i = 1; i < m->n; i++)
        if (!is_live(&m->mem[i]) && pick-- == 0)
            return m->mem[i].v.info.status == MEMBER_DEAD ? &m->mem[i] : NULL;
    return NULL;
}

/* Ends the probe of the last period: an unanswered one makes its target
 * suspect and lowers our own health score. */
static void finish_probe(struct membership *m)
{
    if (!m->probe.active)
        return;
    m->probe.active = false;
    if (m->probe.acked) {
        membership_health_add(m, -1);
        return;
    }
    /* Lifeguard §4.3: a failed probe counts once, each missing nack once
     * more, since missing nacks point at our own network. */
    unsigned missing = m->probe.nacks_expected - m->probe.nacks_got;
    membership_health_add(m, 1 + (int)missing);
    /* Our own failed probe is an independent suspicion, also of a member
     * that others already suspect (Lifeguard 4.2). */
    struct member *x = &m->mem[m->probe.target];
    if (is_live(x))
        membership_suspect(m, x, x->v.info.incarnation, m->mem[0].v.info.id);
}

static void start_probe(struct membership *m, uint64_t t)
{
    struct member *x = NULL;
    for (size_t tries = 0; tries <= m->order_n && !x; tries++) {
        if (m->order_pos >= m->order_n)
            membership_shuffle(m);
        if (m->order_n == 0)
            break;
        struct member *c = &m->mem[m->order[m->order_pos++]];
        if (is_live(c))
            x = c;
    }
    if (!x)
        return;
    m->probe.active = true;
    m->probe.acked = false;
    m->probe.indirect_sent = false;
    m->probe.seq = m->next_seq++;
    m->probe.target = (size_t)(x - m->mem);
    m->probe.start = t;
    m->probe.direct_deadline = t + scaled(m, membership_ack_timeout(m, &x->v));
    m->probe.nacks_expected = m->probe.nacks_got = 0;
    send_msg(m, x->v.info.addr, GOSSIP_PING, m->probe.seq, NULL, x);
}

/* Asks k distinct members other than the target to ping it (SWIM §3.1);
 * returns how many were asked. */
static unsigned ask_others(struct membership *m, struct member *target,
                           uint32_t seq)
{
    size_t chosen[16], nc = 0;
    unsigned k = m->cfg.indirect_probes < 16 ? m->cfg.indirect_probes : 16;
    for (unsigned tries = 0; nc < k && tries < 4 * k; tries++) {
        struct member *x = random_live(m, m->probe.target);
        if (!x)
            break;
        size_t idx = (size_t)(x - m->mem);
        bool dup = false;
        for (size_t j = 0; j < nc; j++)
            dup |= chosen[j] == idx;
        if (dup)
            continue;
        chosen[nc++] = idx;
        send_msg(m, x->v.info.addr, GOSSIP_PING_REQ, seq, target, NULL);
    }
    return (unsigned)nc;
}

static void send_ping_reqs(struct membership *m)
{
    m->probe.indirect_sent = true;
    m->probe.nacks_expected =
        ask_others(m, &m->mem[m->probe.target], m->probe.seq);
}

/* Before a suspicion becomes dead, the suspecting node probes the member
 * itself once more, directly and through k others; each ping carries the
 * suspicion, and each ack the member's own record, so a live member refutes
 * even when its earlier refutation missed us. */
static void last_chance(struct membership *m, struct member *x)
{
    uint32_t seq = m->next_seq++;
    send_msg(m, x->v.info.addr, GOSSIP_PING, seq, NULL, x);
    ask_others(m, x, seq);
}

/* ---- the timer ---- */

static void reap(struct membership *m, uint64_t t)
{
    size_t w = 1;
    bool removed = false;
    for (size_t i = 1; i < m->n; i++) {
        struct member *x = &m->mem[i];
        /* Only members that left are forgotten. A dead one stays, and is
         * push-pulled now and then, until it comes back or an operator
         * removes it: forgetting it would give its ranges to the others,
         * and a partition longer than reap_ms would leave two clusters
         * that each acknowledge writes for every key (correctness review
         * F3). */
        bool gone = x->v.info.status == MEMBER_LEFT &&
                    t - x->v.changed_ms >= m->cfg.reap_ms;
        if (gone) {
            removed = true;
            continue;
        }
        if (w != i)
            m->mem[w] = *x;
        w++;
    }
    if (!removed)
        return;
    m->n = w;
    membership_index_rebuild(m);
    /* Indices moved: rebuild the queues that hold them. */
    m->bq_n = 0;
    for (size_t i = 0; i < m->n; i++) {
        m->mem[i].in_bq = false;
        if (m->mem[i].bcast_left) {
            unsigned left = m->mem[i].bcast_left;
            membership_broadcast(m, &m->mem[i]);
            m->mem[i].bcast_left = left;
        }
    }
    m->probe.active = false;
    membership_shuffle(m);
}

static void arm(struct membership *m, uint64_t t)
{
    uint64_t next = m->next_probe_at;
    if (m->probe.active && !m->probe.acked && !m->probe.indirect_sent &&
        m->probe.direct_deadline < next)
        next = m->probe.direct_deadline;
    if (m->next_sync_at < next)
        next = m->next_sync_at;
    if (!m->joined && m->next_join_at < next)
        next = m->next_join_at;
    for (size_t i = 0; i < MAX_RELAYS; i++)
        if (m->relays[i].used && m->relays[i].deadline < next)
            next = m->relays[i].deadline;
    if (m->n_suspect)
        for (size_t i = 1; i < m->n; i++)
            if (m->mem[i].v.info.status == MEMBER_SUSPECT &&
                m->mem[i].suspect_deadline < next)
                next = m->mem[i].suspect_deadline;
    m->env.timer(m->env.ctx, &m->timer, next > t ? next - t : 0);
}

/* Whether every seed has sent its state. */
static bool all_seeds_heard(const struct membership *m)
{
    for (size_t i = 0; i < m->n_seeds; i++)
        if (!m->seed_heard[i])
            return false;
    return true;
}

/* A full state came: it makes this node joined if its sender had joined.
 * Otherwise it only counts as a seed's answer: once every seed has answered
 * and none has joined by the join timeout, the whole cluster is restarting,
 * and the union of their states is the view. A seed that cannot be reached
 * (down, or across a partition) keeps this node joining: a fragment of the
 * cluster taken for the whole would place keys where no one else looks. */
static void join_by_state(struct membership *m, const struct gossip_msg *g,
                          const char *src_addr, const struct member *from,
                          uint64_t t)
{
    if (g->flags & GOSSIP_FLAG_JOINED) {
        m->joined = true;
        return;
    }
    for (size_t i = 0; i < m->n_seeds; i++)
        if (strcmp(m->seeds[i], src_addr) == 0 ||
            (from && strcmp(m->seeds[i], from->v.info.addr) == 0))
            m->seed_heard[i] = true;
    m->joined = t >= m->join_deadline && all_seeds_heard(m);
}

static void on_timer(void *arg)
{
    struct membership *m = arg;
    if (m->leaving)
        return;
    uint64_t t = now(m);
    if (!m->joined && t >= m->join_deadline && all_seeds_heard(m))
        m->joined = true; /* every seed answered, none had joined */
    if (!m->joined && t >= m->next_join_at) {
        for (size_t i = 0; i < m->n_seeds; i++)
            send_state(m, m->seeds[i], NULL, GOSSIP_SYNC);
        m->next_join_at = t + m->cfg.period_ms;
    }
    if (m->probe.active && !m->probe.acked && !m->probe.indirect_sent &&
        t >= m->probe.direct_deadline)
        send_ping_reqs(m);
    for (size_t i = 0; i < MAX_RELAYS; i++) {
        struct relay *r = &m->relays[i];
        if (r->used && t >= r->deadline) {
            struct gossip_msg g = {.type = GOSSIP_NACK, .seq = r->their_seq};
            memcpy(g.from, m->mem[0].v.info.id, sizeof(g.from));
            memcpy(g.target, r->target, sizeof(g.target));
            struct peer to = {.addr = r->requester};
            m->env.gossip(m->env.ctx, &to, &g);
            r->used = false;
        }
    }
    if (m->n_suspect)
        for (size_t i = 1; i < m->n; i++) {
            struct member *x = &m->mem[i];
            if (x->v.info.status != MEMBER_SUSPECT || t < x->suspect_deadline)
                continue;
            if (!x->last_chance) {
                /* A refutation can miss us once its retransmissions are
                 * spent: ask the member once more before declaring it. */
                x->last_chance = true;
                x->suspect_deadline = t + scaled(m, m->cfg.period_ms);
                last_chance(m, x);
                continue;
            }
            membership_set_status(m, x, MEMBER_DEAD, x->v.info.incarnation);
        }
    if (t >= m->next_probe_at) {
        finish_probe(m);
        start_probe(m, t);
        m->next_probe_at = t + scaled(m, m->cfg.period_ms);
    }
    if (t >= m->next_sync_at) {
        struct member *x = random_live(m, 0);
        if (x)
            send_state(m, x->v.info.addr, x->v.info.pubkey, GOSSIP_SYNC);
        /* Also try one member we hold dead: after a partition heals this is
         * how the two sides find each other again (as Serf reconnects). */
        if ((x = random_dead(m)))
            send_state(m, x->v.info.addr, x->v.info.pubkey, GOSSIP_SYNC);
        m->next_sync_at = t + m->cfg.push_pull_ms;
    }
    if (t >= m->next_reap_at) {
        reap(m, t);
        m->next_reap_at = t + m->cfg.period_ms * 10;
    }
    arm(m, t);
}

/* ---- messages ---- */

static struct relay *relay_by_seq(struct membership *m, uint32_t seq)
{
    for (size_t i = 0; i < MAX_RELAYS; i++)
        if (m->relays[i].used && m->relays[i].my_seq == seq)
            return &m->relays[i];
    return NULL;
}

void membership_on_message(struct membership *m, const char *src_addr,
                           const struct gossip_msg *g)
{
    if (m->leaving)
        return;
    membership_apply_all(m, g);
    /* Answer where the sender says it lives, if we know it. */
    struct member *from = membership_member(m, g->from);
    const char *reply_to = from ? from->v.info.addr : src_addr;
    uint64_t t = now(m);
    switch (g->type) {
    case GOSSIP_PING:
        send_msg(m, reply_to, GOSSIP_ACK, g->seq, NULL, NULL);
        break;
    case GOSSIP_ACK: {
        if (m->probe.active && g->seq == m->probe.seq && !m->probe.acked) {
            m->probe.acked = true;
            struct member *x = &m->mem[m->probe.target];
            if (memcmp(g->from, x->v.info.id, CRYPTO_NODE_ID_BYTES) == 0)
                rtt_sample(&x->v, t - m->probe.start);
        }
        struct relay *r = relay_by_seq(m, g->seq);
        if (r) {
            /* Pass the answer on with the target's record, as its own ack
             * would carry it. */
            struct member *tx = membership_member(m, g->from);
            struct gossip_msg a = {.type = GOSSIP_ACK,
                                   .seq = r->their_seq,
                                   .members = tx ? &tx->v.info : NULL,
                                   .n_members = tx ? 1 : 0};
            memcpy(a.from, g->from, sizeof(a.from)); /* the target answered */
            struct peer to = {.addr = r->requester};
            m->env.gossip(m->env.ctx, &to, &a);
            r->used = false;
        }
        break;
    }
    case GOSSIP_PING_REQ: {
        struct member *tx = membership_member(m, g->target);
        if (!tx || tx == &m->mem[0])
            break; /* not a member: no ping (and no nack) for it */
        struct relay *r = NULL;
        for (size_t i = 0; i < MAX_RELAYS && !r; i++)
            if (!m->relays[i].used)
                r = &m->relays[i];
        if (!r)
            break; /* busy: the requester will hear no nack and learn */
        r->used = true;
        r->my_seq = m->next_seq++;
        r->their_seq = g->seq;
        memcpy(r->target, g->target, sizeof(r->target));
        memcpy(r->requester, reply_to, sizeof(r->requester));
        r->requester[sizeof(r->requester) - 1] = '\0';
        r->deadline = t + scaled(m, membership_ack_timeout(m, &tx->v));
        /* At the address this view holds: a relay pings members only, never
         * an address a request names (security review L8). */
        send_msg(m, tx->v.info.addr, GOSSIP_PING, r->my_seq, NULL, tx);
        break;
    }
    case GOSSIP_NACK:
        if (m->probe.active && g->seq == m->probe.seq)
            m->probe.nacks_got++;
        break;
    case GOSSIP_SYNC:
    case GOSSIP_SYNC_REPLY:
        if (g->type == GOSSIP_SYNC && sync_reply_due(m, reply_to, t))
            send_state(m, reply_to, from ? from->v.info.pubkey : NULL,
                       GOSSIP_SYNC_REPLY);
        /* A newcomer's state lists only itself: that is no full view. */
        if (g->n_members > 1 && !m->joined)
            join_by_state(m, g, src_addr, from, t);
        break;
    }
    if (m->started)
        arm(m, t);
}

/* ---- life cycle ---- */

struct membership *membership_new(const struct membership_config *cfg,
                                  const struct env *env,
                                  const struct wire_member *self)
{
    struct membership *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cfg = *cfg;
    m->env = *env;
    m->cap = 16;
    m->nslots = 64;
    m->mem = calloc(m->cap, sizeof(*m->mem));
    m->order = calloc(m->cap, sizeof(*m->order));
    m->slots = calloc(m->nslots, sizeof(*m->slots));
    if (!m->mem || !m->order || !m->slots) {
        membership_free(m);
        return NULL;
    }
    m->mem[0].v.info = *self;
    m->mem[0].v.info.status = MEMBER_ALIVE;
    m->n = 1;
    m->n_live = 1;
    m->new_left = SIZE_MAX;
    membership_index_rebuild(m);
    m->timer.fire = on_timer;
    m->timer.arg = m;
    m->next_seq = (uint32_t)rnd(m);
    return m;
}

void membership_free(struct membership *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_seeds; i++)
        free(m->seeds[i]);
    free(m->seed_heard);
    free(m->seeds);
    free(m->mem);
    free(m->order);
    free(m->slots);
    free(m->bq);
    free(m);
}

void membership_set_observer(struct membership *m, membership_observer_fn fn,
                             void *arg)
{
    m->observer = fn;
    m->observer_arg = arg;
}

void membership_start(struct membership *m, const char *const *seeds,
                      size_t n_seeds)
{
    uint64_t t = now(m);
    m->seeds = calloc(n_seeds ? n_seeds : 1, sizeof(*m->seeds));
    m->seed_heard = calloc(n_seeds ? n_seeds : 1, sizeof(*m->seed_heard));
    if (!m->seed_heard) {
        free(m->seeds);
        m->seeds = NULL;
    }
    for (size_t i = 0; m->seeds && i < n_seeds; i++)
        if ((m->seeds[i] = strdup(seeds[i])))
            m->n_seeds++;
    m->joined = m->n_seeds == 0;
    m->started = true;
    membership_broadcast(m, &m->mem[0]); /* announce ourselves */
    m->next_join_at = t;
    m->join_deadline = t + m->cfg.join_timeout_ms;
    /* Spread the first probe over one period so that nodes started together
     * do not probe in lockstep. */
    m->next_probe_at = t + rnd(m) % m->cfg.period_ms;
    m->next_sync_at =
        t + m->cfg.push_pull_ms / 2 + rnd(m) % (m->cfg.push_pull_ms / 2 + 1);
    m->next_reap_at = t + m->cfg.period_ms * 10;
    on_timer(m);
}

/* Tells every live member x's record now, one datagram each; gossip and
 * push-pull carry it past any loss. Done on leaves, stops and ring phase
 * changes: they are rare, and N datagrams once is cheap. */
static void announce(struct membership *m, struct member *x)
{
    struct member *self = &m->mem[0];
    struct gossip_msg g = {
        .type = GOSSIP_PING, .n_members = 1, .members = &x->v.info};
    memcpy(g.from, self->v.info.id, sizeof(g.from));
    for (size_t i = 1; i < m->n; i++) {
        if (!is_live(&m->mem[i]) || &m->mem[i] == x)
            continue;
        struct peer to = {.addr = m->mem[i].v.info.addr};
        g.seq = m->next_seq++;
        m->env.gossip(m->env.ctx, &to, &g);
    }
}

/* Ends this node's part: status is MEMBER_LEFT (gone) or MEMBER_DEAD
 * (down, back later). Nobody will probe us again, so every live member is
 * told at once. */
static void depart(struct membership *m, uint8_t status)
{
    struct member *self = &m->mem[0];
    if (m->leaving)
        return;
    membership_set_status(m, self, status, self->v.info.incarnation);
    announce(m, self);
    m->leaving = true;
}

void membership_leave(struct membership *m)
{
    depart(m, MEMBER_LEFT);
}

void membership_stop(struct membership *m)
{
    depart(m, MEMBER_DEAD);
}

int membership_set_ring(struct membership *m, const uint8_t *id, uint8_t phase)
{
    struct member *x = membership_member(m, id);
    if (!x)
        return KV_ERR_NOT_FOUND;
    if (x->v.info.ring == phase)
        return 0;
    uint8_t old = x->v.info.ring;
    x->v.info.ring = phase;
    membership_log_phase(&x->v.info, old);
    /* A higher incarnation makes every member take the new phase. */
    membership_set_status(m, x, x->v.info.status, x->v.info.incarnation + 1);
    announce(m, x);
    return 0;
}

int membership_remove(struct membership *m, const uint8_t *id)
{
    struct member *x = membership_member(m, id);
    if (!x || x == &m->mem[0])
        return KV_ERR_NOT_FOUND;
    membership_set_status(m, x, MEMBER_LEFT, x->v.info.incarnation + 1);
    announce(m, x);
    return 0;
}

void membership_update_self(struct membership *m,
                            const struct wire_member *info)
{
    struct member *self = &m->mem[0];
    memcpy(self->v.info.addr, info->addr, sizeof(info->addr));
    memcpy(self->v.info.region, info->region, sizeof(info->region));
    memcpy(self->v.info.zone, info->zone, sizeof(info->zone));
    memcpy(self->v.info.replicas, info->replicas, sizeof(info->replicas));
    /* A higher incarnation makes every member take the new record. */
    membership_set_status(m, self, self->v.info.status,
                          self->v.info.incarnation + 1);
}

const struct member_view *membership_find(struct membership *m,
                                          const uint8_t *id)
{
    struct member *x = membership_member(m, id);
    return x ? &x->v : NULL;
}

size_t membership_unheard_seeds(const struct membership *m, char *out,
                                size_t cap)
{
    size_t n = 0, used = 0;
    if (cap)
        out[0] = '\0';
    for (size_t i = 0; i < m->n_seeds; i++) {
        if (m->seed_heard[i])
            continue;
        if (used < cap) {
            int w = snprintf(out + used, cap - used, "%s%s", n ? "," : "",
                             m->seeds[i]);
            used += w > 0 ? (size_t)w : 0;
        }
        n++;
    }
    return n;
}

bool membership_joined(const struct membership *m)
{
    return m->joined;
}

size_t membership_size(const struct membership *m)
{
    return m->n;
}

const struct member_view *membership_get(const struct membership *m, size_t i)
{
    return i < m->n ? &m->mem[i].v : NULL;
}

size_t membership_live_count(const struct membership *m)
{
    return m->n_live;
}

unsigned membership_health(const struct membership *m)
{
    return m->lhm;
}
