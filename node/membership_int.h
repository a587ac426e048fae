/* Membership's private parts, shared by its two files (membership.h):
 *
 *   membership.c       the index, dissemination, local health, probing, the
 *                      timer, messages and the life cycle
 *   membership_view.c  the view: statuses, suspicion, refutation, ring
 *                      phases, and merging what gossip brings
 *
 * Private to node/membership*.c. */
#ifndef ESSAIM_NODE_MEMBERSHIP_INT_H
#define ESSAIM_NODE_MEMBERSHIP_INT_H

#include "membership.h"

#include "../common/common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PIGGYBACK 6 /* updates per datagram; a few hundred bytes */
#define MAX_RECORDS (MAX_PIGGYBACK + 2) /* a suspicion, the sender's own */
#define MAX_RELAYS 64                   /* ping-reqs being served at once */
#define MAX_CONFIRM 8 /* independent suspicions remembered per member */

struct member {
    struct member_view v;
    unsigned bcast_left; /* retransmissions left for the current record */
    bool in_bq;
    /* suspicion (Lifeguard §4.2) */
    uint64_t suspect_start, suspect_deadline;
    uint8_t confirmers[MAX_CONFIRM][CRYPTO_NODE_ID_BYTES];
    unsigned n_confirm;
    bool last_chance; /* the final direct ping went out */
};

struct relay {
    bool used;
    uint32_t my_seq, their_seq;
    uint8_t target[CRYPTO_NODE_ID_BYTES];
    char requester[GOSSIP_ADDR_MAX];
    uint64_t deadline;
};

/* Suspect, dead and left records with a higher incarnation are refused,
 * alive ones above twice that: a member bumps its own by one per
 * refutation or phase step, so no life gets near it, and the top of the
 * range can never be reached and wrap. */
#define MEMBERSHIP_MAX_INCARNATION (UINT64_C(1) << 62)

#define SYNC_REPLY_SLOTS 16
#define MEMBERSHIP_NEW_PER_MESSAGE 64
#define SYNC_REPLY_MIN_MS 1000

struct membership {
    struct membership_config cfg;
    uint64_t refused_incarnations, refused_members;
    struct env env;
    membership_observer_fn observer;
    void *observer_arg;

    struct member *mem; /* mem[0] is this node */
    size_t n, cap;
    size_t *slots; /* index + 1 by id hash; 0 empty */
    size_t nslots;

    size_t *bq; /* indices with bcast_left > 0 */
    size_t bq_n, bq_cap;

    size_t *order; /* probe order: member indices */
    size_t order_n, order_pos;

    struct {
        bool active, acked, indirect_sent;
        uint32_t seq;
        size_t target;
        uint64_t start, direct_deadline;
        unsigned nacks_expected, nacks_got;
    } probe;
    uint64_t next_probe_at, next_sync_at, next_join_at, next_reap_at;
    uint64_t join_deadline; /* then seeds that all answered unjoined do */
    uint32_t next_seq;
    unsigned lhm;
    unsigned n_suspect;
    size_t n_live; /* members alive or suspect, this node included */
    bool started, leaving;
    char **seeds;
    bool *seed_heard; /* this seed sent its state */
    size_t n_seeds;
    bool joined; /* a joined member sent its state (or there were no seeds) */

    struct relay relays[MAX_RELAYS];
    /* Where this node sent its full state in answer to a SYNC, and when:
     * one answer a second per address (security review L8). */
    struct {
        char addr[GOSSIP_ADDR_MAX];
        uint64_t at;
    } synced[SYNC_REPLY_SLOTS];
    uint64_t sync_replies_skipped;
    size_t new_left; /* members the message being applied may still add */
    struct timer timer;
};

static inline uint64_t now(struct membership *m)
{
    return m->env.now_ms(m->env.ctx);
}

static inline uint64_t rnd(struct membership *m)
{
    return m->env.random(m->env.ctx);
}

static inline bool is_live(const struct member *x)
{
    return x->v.info.status == MEMBER_ALIVE ||
           x->v.info.status == MEMBER_SUSPECT;
}

void membership_set_status(struct membership *m, struct member *x,
                           uint8_t status, uint64_t inc);
void membership_shuffle(struct membership *m);
void membership_suspect(struct membership *m, struct member *x, uint64_t inc,
                        const uint8_t *suspecter);
void membership_log_phase(const struct wire_member *x, uint8_t old);
void membership_apply_all(struct membership *m, const struct gossip_msg *g);
size_t membership_id_hash(const uint8_t *id);
void membership_index_rebuild(struct membership *m);
struct member *membership_member(struct membership *m, const uint8_t *id);
void membership_broadcast(struct membership *m, struct member *x);
void membership_health_add(struct membership *m, int delta);

#endif
