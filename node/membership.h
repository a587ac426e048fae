/* Membership: SWIM with the Lifeguard refinements, as a sans-I/O state
 * machine (DESIGN §3, §7). Private to node/ and its tests.
 *
 *   SWIM: Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent
 *         Infection-style Process Group Membership Protocol" (DSN 2002).
 *   Lifeguard: Dadgar, Phillips, Currey, "Lifeguard: Local Health Awareness
 *         for More Accurate Failure Detection" (2018).
 *
 * Each protocol period a member pings one other member (round-robin over a
 * shuffled list); without an ack within the ack timeout it asks k others to
 * ping it (ping-req); with still no ack by the end of the period it marks the
 * member suspect. A suspicion becomes dead after a timeout that shrinks with
 * independent confirmations, unless the member refutes it with a higher
 * incarnation; before that, the suspecting node pings the member itself once
 * more, and an ack (which leads with the sender's own record) refutes it.
 * Updates ride on every message, each sent λ·⌈log10(N+1)⌉ times; a periodic
 * push-pull exchanges the full state with one live member and one member held
 * dead, so that the sides of a healed partition meet again. */
#ifndef ESSAIM_NODE_MEMBERSHIP_H
#define ESSAIM_NODE_MEMBERSHIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "env.h"

struct membership_config {
    uint32_t period_ms;          /* protocol period T (1 s, DESIGN §7) */
    uint32_t ack_timeout_ms;     /* direct probe timeout */
    unsigned indirect_probes;    /* k = 3 (SWIM §3.1) */
    unsigned retransmit_mult;    /* λ: each update is sent λ·⌈log10(N+1)⌉
                                    times (SWIM §4.1) */
    unsigned suspicion_mult;     /* α: minimum suspicion timeout is
                                    α·max(1, log10 N)·T (Lifeguard §4.2) */
    unsigned suspicion_max_mult; /* β: maximum timeout is β times the min */
    unsigned lhm_max;            /* S: local health multiplier saturates at
                                    S-1 (Lifeguard §4.1) */
    uint32_t push_pull_ms;       /* full-state exchange with one member */
    uint32_t reap_ms;            /* members that left are forgotten (dead
                                    ones are kept: see reap in membership.c) */
    uint32_t join_timeout_ms;    /* a joining node whose seeds all answered
                                    but none had joined joins by then */
    size_t max_members;          /* this node included; past it new members
                                    are refused (MEMBERSHIP_MAX_MEMBERS) */
};

/* The most members a view holds: a ring's node indices fit 16 bits
 * (anti-entropy keeps them so), and a full state fits GOSSIP_MAX_MEMBERS. */
#define MEMBERSHIP_MAX_MEMBERS 65535

/* Fills the defaults: T 1000, ack 500, k 3, λ 4, α 4, β 6, S 8, push-pull
 * 30 s, reap 24 h, join timeout 30 s, MEMBERSHIP_MAX_MEMBERS members. */
void membership_config_defaults(struct membership_config *c);

/* What a member's view holds about one member. */
struct member_view {
    struct wire_member info;
    uint64_t last_rtt_ms; /* of the last direct probe; 0 if none */
    /* Smoothed round trip and its mean deviation, over direct probes
     * (RFC 6298's estimator); 0 until one was measured. */
    uint32_t srtt_ms, rttvar_ms;
    uint64_t changed_ms; /* when the status last changed */
};

/* The old status an observer sees for a member it had not known. */
#define MEMBER_NEW 0xff

/* Called after a member's status (or incarnation) changed in this view. */
typedef void (*membership_observer_fn)(void *arg, const struct wire_member *m,
                                       uint8_t old_status);

struct membership;

/* Creates a membership with this node as its only member. cfg and env are
 * copied; self->status and incarnation are set by the protocol.
 * @retval a membership, or NULL when out of memory. */
struct membership *membership_new(const struct membership_config *cfg,
                                  const struct env *env,
                                  const struct wire_member *self);

/* Frees. NULL is fine. */
void membership_free(struct membership *m);

/* Sets a function called on every status change. */
void membership_set_observer(struct membership *m, membership_observer_fn fn,
                             void *arg);

/* Starts probing and joins through the given seed addresses (none: a cluster
 * of one that others can join). Seeds are asked for their full state until
 * one answers. */
void membership_start(struct membership *m, const char *const *seeds,
                      size_t n_seeds);

/* Handles a decoded message that arrived from src_addr. */
void membership_on_message(struct membership *m, const char *src_addr,
                           const struct gossip_msg *g);

/* Announces a graceful leave: this node is marked left and tells every live
 * member at once. Probing stops. */
void membership_leave(struct membership *m);

/* Announces a stop for a restart (DESIGN §7): this node is marked dead,
 * not gone, and tells every live member at once; it keeps its ranges and
 * the others hold hints for it. Probing stops. */
void membership_stop(struct membership *m);

/* Sets the ring phase (enum ring_phase) of a member, this node or another
 * (a removal changes a dead member's phase for it), under a higher
 * incarnation, and tells every live member at once.
 * @retval 0 Success. @retval KV_ERR_NOT_FOUND no such member. */
int membership_set_ring(struct membership *m, const uint8_t *id, uint8_t phase);

/* Marks another member gone (status left) under a higher incarnation, at
 * the end of its removal, and tells every live member at once.
 * @retval 0 Success. @retval KV_ERR_NOT_FOUND no such member. */
int membership_remove(struct membership *m, const uint8_t *id);

/* Changes this node's address, region and zone and gossips the new record
 * under a higher incarnation. */
void membership_update_self(struct membership *m,
                            const struct wire_member *info);

/* True once a full state came from a member that had itself joined (or this
 * node was started with no seed): until then the view may lack most of the
 * cluster. A node restarted through a seed that is itself still joining
 * would otherwise take that seed's fragment for the cluster. When every
 * seed has answered but none had joined by join_timeout_ms (every node
 * restarted at once, each naming the others as seeds), the union of their
 * states is taken. */
bool membership_joined(const struct membership *m);

/* While joining: the seeds that have not sent their state yet, joined by
 * commas into out (truncated to cap). @retval how many there are. */
size_t membership_unheard_seeds(const struct membership *m, char *out,
                                size_t cap);

/* The view: index 0 is this node; n members in all. */
size_t membership_size(const struct membership *m);
const struct member_view *membership_get(const struct membership *m, size_t i);

/* The view of the member with this id, or NULL. */
const struct member_view *membership_find(struct membership *m,
                                          const uint8_t *id);

/* How long a probe of this member waits for its ack: the configured ack
 * timeout, or the member's smoothed round trip plus four deviations (at
 * most half the period) when that is longer, so that a far member is not
 * suspected for being far (DESIGN §7); before Lifeguard's local-health
 * scaling. */
uint64_t membership_ack_timeout(const struct membership *m,
                                const struct member_view *v);

/* Members whose status is alive or suspect (this node included). */
size_t membership_live_count(const struct membership *m);

/* Local health multiplier, 0..S-1 (Lifeguard §4.1). */
unsigned membership_health(const struct membership *m);

/* The suspicion timeout for c independent confirmations with the current
 * view (Lifeguard §4.2), in ms. */
uint64_t membership_suspicion_timeout(const struct membership *m, unsigned c);

#endif
