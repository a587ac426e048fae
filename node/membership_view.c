/* Membership's view: statuses, suspicion and refutation (SWIM §4.2,
 * Lifeguard §4.2), ring phases (DESIGN §7b), and merging what gossip
 * brings (membership_int.h). */
#include "membership_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the view ---- */

void membership_set_status(struct membership *m, struct member *x,
                           uint8_t status, uint64_t inc)
{
    uint8_t old = x->v.info.status;
    bool was_live = old == MEMBER_ALIVE || old == MEMBER_SUSPECT;
    bool live = status == MEMBER_ALIVE || status == MEMBER_SUSPECT;
    m->n_live = m->n_live + live - was_live;
    if (old == MEMBER_SUSPECT && status != MEMBER_SUSPECT)
        m->n_suspect--;
    if (status == MEMBER_SUSPECT && old != MEMBER_SUSPECT)
        m->n_suspect++;
    if (status != MEMBER_SUSPECT)
        memset(x->v.info.suspecter, 0, sizeof(x->v.info.suspecter));
    x->v.info.status = status;
    x->v.info.incarnation = inc;
    x->v.changed_ms = now(m);
    membership_broadcast(m, x);
    if (m->observer)
        m->observer(m->observer_arg, &x->v.info, old);
}

void membership_shuffle(struct membership *m)
{
    m->order_n = 0;
    for (size_t i = 1; i < m->n; i++)
        if (is_live(&m->mem[i]))
            m->order[m->order_n++] = i;
    for (size_t i = m->order_n; i > 1; i--) {
        size_t j = (size_t)(rnd(m) % i);
        size_t t = m->order[i - 1];
        m->order[i - 1] = m->order[j];
        m->order[j] = t;
    }
    m->order_pos = 0;
}

static struct member *add_member(struct membership *m,
                                 const struct wire_member *info)
{
    size_t max =
        m->cfg.max_members && m->cfg.max_members < MEMBERSHIP_MAX_MEMBERS
            ? m->cfg.max_members
            : MEMBERSHIP_MAX_MEMBERS;
    if (m->new_left == 0) {
        if (m->refused_members++ % 1000 == 0)
            log_warn("gossip: a message brought more than %u members this "
                     "view did not know; the rest wait for the next one "
                     "(%llu refused so far)",
                     MEMBERSHIP_NEW_PER_MESSAGE,
                     (unsigned long long)m->refused_members);
        return NULL;
    }
    if (m->n >= max) {
        /* Gossip cannot grow a view without bound (security review M2). */
        if (m->refused_members++ % 1000 == 0)
            log_warn("gossip: refused a new member: this view holds %zu, "
                     "the most it takes (%llu refused so far)",
                     m->n, (unsigned long long)m->refused_members);
        return NULL;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap * 2;
        struct member *p = realloc(m->mem, cap * sizeof(*p));
        size_t *o = realloc(m->order, cap * sizeof(*o));
        if (p)
            m->mem = p;
        if (o)
            m->order = o;
        if (!p || !o)
            return NULL;
        m->cap = cap;
    }
    if (m->new_left != SIZE_MAX)
        m->new_left--;
    if (2 * (m->n + 1) > m->nslots) {
        size_t *s = calloc(m->nslots * 2, sizeof(*s));
        if (!s)
            return NULL;
        free(m->slots);
        m->slots = s;
        m->nslots *= 2;
        membership_index_rebuild(m);
    }
    struct member *x = &m->mem[m->n];
    memset(x, 0, sizeof(*x));
    x->v.info = *info;
    x->v.info.status = MEMBER_NEW; /* set_status below counts from here */
    size_t s = membership_id_hash(info->id) & (m->nslots - 1);
    while (m->slots[s])
        s = (s + 1) & (m->nslots - 1);
    m->slots[s] = ++m->n;
    /* A new member joins the probe round at a random place (SWIM §4.3). */
    if (info->status == MEMBER_ALIVE || info->status == MEMBER_SUSPECT) {
        size_t pos = m->order_n ? (size_t)(rnd(m) % (m->order_n + 1)) : 0;
        m->order[m->order_n++] = m->order[pos];
        m->order[pos] = m->n - 1;
    }
    return x;
}

static bool confirmed_by(const struct member *x, const uint8_t *id)
{
    for (unsigned i = 0; i < x->n_confirm; i++)
        if (memcmp(x->confirmers[i], id, CRYPTO_NODE_ID_BYTES) == 0)
            return true;
    return false;
}

uint64_t membership_suspicion_timeout(const struct membership *m, unsigned c)
{
    double n = (double)membership_live_count(m);
    double min = m->cfg.suspicion_mult * fmax(1.0, log10(n)) * m->cfg.period_ms;
    double max = m->cfg.suspicion_max_mult * min;
    /* Expected independent confirmations: the k indirect probers, fewer in
     * a small cluster. */
    double k = fmin((double)m->cfg.indirect_probes, fmax(0.0, n - 2));
    if (k < 1)
        return (uint64_t)min;
    double t = max - (max - min) * log(c + 1.0) / log(k + 1.0);
    return (uint64_t)fmax(min, t);
}

/* Records a suspicion of x by suspecter (Lifeguard §4.2). */
void membership_suspect(struct membership *m, struct member *x, uint64_t inc,
                        const uint8_t *suspecter)
{
    bool fresh =
        x->v.info.status != MEMBER_SUSPECT || inc > x->v.info.incarnation;
    if (fresh) {
        x->n_confirm = 0;
        x->last_chance = false;
        x->suspect_start = now(m);
        membership_set_status(m, x, MEMBER_SUSPECT, inc);
        memcpy(x->v.info.suspecter, suspecter, CRYPTO_NODE_ID_BYTES);
    } else if (confirmed_by(x, suspecter) || x->n_confirm == MAX_CONFIRM) {
        return;
    }
    memcpy(x->confirmers[x->n_confirm++], suspecter, CRYPTO_NODE_ID_BYTES);
    /* The first suspicion sets the clock; each further one shortens it. */
    x->suspect_deadline =
        x->suspect_start + membership_suspicion_timeout(m, x->n_confirm - 1);
    if (!fresh) {
        /* Pass the confirmation on under its own suspecter, so that
         * receivers can count it as independent. */
        memcpy(x->v.info.suspecter, suspecter, CRYPTO_NODE_ID_BYTES);
        membership_broadcast(m, x);
    }
}

static void refute(struct membership *m, uint64_t inc)
{
    struct member *self = &m->mem[0];
    if (m->leaving)
        return;
    self->v.info.incarnation = inc + 1;
    membership_set_status(m, self, MEMBER_ALIVE, inc + 1);
}

void membership_log_phase(const struct wire_member *x, uint8_t old)
{
    char id[2 * CRYPTO_NODE_ID_BYTES + 1];
    hex_encode(id, x->id, sizeof(x->id));
    log_info("member %.12s %s: ring phase %s -> %s", id, x->addr,
             ring_phase_name(old), ring_phase_name(x->ring));
}

/* What others say of this node's ring phase (DESIGN §7b). A node that
 * restarted without knowing its phase (a new data directory names none)
 * takes the one the cluster holds for it; a node being removed learns it.
 * @retval true when the record was taken. */
static bool adopt_phase(struct membership *m, const struct wire_member *u)
{
    struct member *self = &m->mem[0];
    uint8_t mine = self->v.info.ring, theirs = u->ring;
    if (theirs == mine || u->status == MEMBER_LEFT)
        return false;
    bool removal = (theirs == RING_LEAVING || theirs == RING_LEFT) &&
                   u->incarnation >= self->v.info.incarnation &&
                   mine == RING_NORMAL;
    if (mine != RING_WAITING && !removal)
        return false;
    self->v.info.ring = theirs;
    membership_log_phase(&self->v.info, mine);
    return true;
}

/* Merges one member record learned from gossip (SWIM §4.2, §4.3). */
static void apply(struct membership *m, const struct wire_member *u)
{
    uint8_t id[CRYPTO_NODE_ID_BYTES];
    crypto_node_id(id, u->pubkey);
    if (memcmp(id, u->id, sizeof(id)) != 0)
        return; /* an id is the hash of its key: a forged record */
    /* No life counts that high: a record pushed to the top would make
     * its member refute past it and wrap to 0, dead for good (security
     * review M1). Alive records get twice the room, so that a member
     * always refutes a suspicion or death that was taken. */
    uint64_t cap = u->status == MEMBER_ALIVE ? 2 * MEMBERSHIP_MAX_INCARNATION
                                             : MEMBERSHIP_MAX_INCARNATION;
    if (u->incarnation > cap) {
        if (m->refused_incarnations++ % 100 == 0)
            log_warn("gossip: refused a record with incarnation %llu (at "
                     "most %llu; %llu refused so far)",
                     (unsigned long long)u->incarnation,
                     (unsigned long long)cap,
                     (unsigned long long)m->refused_incarnations);
        return;
    }
    struct member *self = &m->mem[0];
    if (memcmp(u->id, self->v.info.id, sizeof(id)) == 0) {
        if (u->status == MEMBER_LEFT && u->ring == RING_LEFT && !m->leaving) {
            /* An operator removed this node while it was down. */
            log_error("this node was removed from the cluster (kvcli "
                      "removenode); it no longer takes part: stop it, and "
                      "start it with a new data directory to join again");
            self->v.info.ring = RING_LEFT;
            membership_set_status(m, self, MEMBER_LEFT, u->incarnation);
            m->leaving = true;
            return;
        }
        if (adopt_phase(m, u)) {
            uint64_t inc = u->incarnation > self->v.info.incarnation
                               ? u->incarnation
                               : self->v.info.incarnation;
            refute(m, inc);
            return;
        }
        if (u->status != MEMBER_ALIVE &&
            u->incarnation >= self->v.info.incarnation) {
            if (u->status == MEMBER_SUSPECT)
                membership_health_add(m, 1); /* we were slow to answer */
            refute(m, u->incarnation);
        } else if (u->status == MEMBER_ALIVE &&
                   u->incarnation > self->v.info.incarnation) {
            refute(m, u->incarnation); /* a record of a previous life */
        }
        return;
    }
    struct member *x = membership_member(m, u->id);
    if (!x) {
        /* News of the death of a member we do not know is not taken: it
         * would bring back members that this view has already reaped.
         * Until this node has joined, though, it takes the dead too: they
         * keep their ranges on the ring (DESIGN §5, §6), and a ring
         * without them would place keys where no other node looks. */
        if (u->status == MEMBER_LEFT || (u->status == MEMBER_DEAD && m->joined))
            return;
        x = add_member(m, u);
        if (!x)
            return;
        if (u->status == MEMBER_SUSPECT)
            membership_suspect(m, x, u->incarnation, u->suspecter);
        else
            membership_set_status(m, x, u->status, u->incarnation);
        return;
    }
    uint64_t cur = x->v.info.incarnation;
    /* A ring phase travels with a higher incarnation, whatever the status:
     * a removal changes a dead member's phase for it. */
    if (u->incarnation > cur && u->ring != x->v.info.ring) {
        uint8_t old = x->v.info.ring;
        x->v.info.ring = u->ring;
        membership_log_phase(&x->v.info, old);
        if (!is_live(x) && u->status == x->v.info.status) {
            membership_set_status(m, x, x->v.info.status, u->incarnation);
            return;
        }
    }
    switch (u->status) {
    case MEMBER_ALIVE:
        if (u->incarnation > cur) {
            /* A newer life of the member may have moved. */
            memcpy(x->v.info.addr, u->addr, sizeof(u->addr));
            memcpy(x->v.info.region, u->region, sizeof(u->region));
            memcpy(x->v.info.zone, u->zone, sizeof(u->zone));
            memcpy(x->v.info.replicas, u->replicas, sizeof(u->replicas));
            membership_set_status(m, x, MEMBER_ALIVE, u->incarnation);
        }
        break;
    case MEMBER_SUSPECT:
        if ((x->v.info.status == MEMBER_ALIVE && u->incarnation >= cur) ||
            (x->v.info.status == MEMBER_SUSPECT && u->incarnation >= cur))
            membership_suspect(m, x, u->incarnation, u->suspecter);
        break;
    default: /* dead or left */
        if (u->incarnation >= cur &&
            (is_live(x) ||
             (x->v.info.status == MEMBER_DEAD && u->status == MEMBER_LEFT)))
            membership_set_status(m, x, u->status, u->incarnation);
        break;
    }
}

void membership_apply_all(struct membership *m, const struct gossip_msg *g)
{
    /* Once this node has joined, one message brings at most
     * MEMBERSHIP_NEW_PER_MESSAGE members it did not know (security review
     * M2): a cluster grows a few nodes at a time, and the rest of a flood
     * has to come again. Joining, it takes a whole view at once. */
    m->new_left = m->joined ? MEMBERSHIP_NEW_PER_MESSAGE : SIZE_MAX;
    for (size_t i = 0; i < g->n_members; i++)
        apply(m, &g->members[i]);
    m->new_left = SIZE_MAX;
}
