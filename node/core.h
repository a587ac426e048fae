/* core: one essaim node, sans I/O (DESIGN §3).
 *
 * The core owns the node's hybrid logical clock, its membership (SWIM with
 * Lifeguard), its replication (coordinator, replica, hints, read repair) and
 * its anti-entropy, and it is the only code that wires them together:
 *
 *   - every decoded message from another node comes in here and goes to the
 *     module it is for (core_on_gossip, core_on_peer_message);
 *   - every completed storage write comes back here and goes first to
 *     anti-entropy, which keeps its trees current from it, then to its owner
 *     (core_on_stored);
 *   - on each tick the membership view becomes repl's ring and ae's
 *     replica pairs, then repl and ae run their deadlines (core_tick);
 *   - a stop announces the leave, refuses new client requests, and the node
 *     has drained once nothing it owns is in flight (core_stop,
 *     core_drained).
 *
 * node/server.c drives it from libev and real sockets; tests/sim drives one
 * core per simulated node from virtual time and an in-memory network. Both
 * act on it only through this header, and it acts only through struct env. */
#ifndef ESSAIM_NODE_CORE_H
#define ESSAIM_NODE_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ae.h"
#include "env.h"
#include "hlc.h"
#include "membership.h"
#include "repl.h"
#include "topo.h"

/* How often the driver calls core_tick. */
#define CORE_TICK_MS 100

struct core_config {
    struct membership_config membership;
    struct repl_config repl;
    struct ae_config ae;
    struct topo_config topo; /* replicas and vnodes follow repl's */
    bool with_repl;          /* replicate (off: membership only, as in the
                                simulator's membership runs) */
    bool with_ae;            /* anti-entropy (needs with_repl) */
    unsigned max_key;        /* limits for decoding peer messages */
    unsigned max_value;
    uint32_t join_warn_ms; /* warn this often while still joining (0: never) */
};

/* Defaults of every module, repl and ae on, the protocol's largest limits. */
void core_config_defaults(struct core_config *cfg);

struct core;

/* Creates a node whose own record is self. cfg and env are copied.
 * @retval NULL out of memory. */
struct core *core_new(const struct core_config *cfg, const struct env *env,
                      const struct wire_member *self);

/* Frees. NULL is fine. Writes still in storage must have come back first
 * (core_drained), or their completions must never be delivered. */
void core_free(struct core *c);

/* Called after a member's status changed in this node's view (after the
 * core has logged it). */
void core_set_observer(struct core *c, membership_observer_fn fn, void *arg);

/* Starts probing and joins through the given seed addresses (none: a cluster
 * of one). */
void core_start(struct core *c, const char *const *seeds, size_t n_seeds);

/* A gossip message from src_addr (a datagram, or push-pull state whose
 * sender's key the transport checked). */
void core_on_gossip(struct core *c, const char *src_addr,
                    const struct gossip_msg *m);

/* A replica or anti-entropy message from the node whose identity its link
 * proved, as the bytes that arrived.
 * @retval 0 Handled.
 * @retval a kv_err it does not decode (the caller closes the link). */
int core_on_peer_message(struct core *c,
                         const uint8_t from[CRYPTO_NODE_ID_BYTES],
                         const uint8_t *buf, size_t len);

/* The link to a node failed: what is outstanding there failed too. */
void core_on_peer_down(struct core *c, const uint8_t id[CRYPTO_NODE_ID_BYTES]);

/* A write submitted through env->store came back. */
void core_on_stored(struct core *c, struct storage_write *w);

/* Call every CORE_TICK_MS: the view, deadlines, hint replay, anti-entropy. */
void core_tick(struct core *c);

/* A client's put, get, del or where (its session clock already merged into
 * core_hlc). @retval 0 Success: the answer comes through env->reply.
 * @retval KV_ERR_UNAVAILABLE the node is stopping. @retval KV_ERR_NOMEM. */
int core_client_request(struct core *c, void *client, const struct msg *m);

/* kvcli repair (range -1: all). @retval as ae_repair;
 * KV_ERR_UNAVAILABLE when anti-entropy is off. */
int core_repair(struct core *c, void *client, uint64_t id, int range,
                bool scrub);

/* kvcli decommission or removenode (topo_request). @retval 0 started; else
 * a kv_err and why says what is in the way. */
int core_topo_request(struct core *c, void *client, uint64_t id,
                      const struct msg_topo *q, char *why, size_t cap);

/* True once a decommission has ended: the driver stops the node. */
bool core_gone(const struct core *c);

/* Why the node cannot do what it was told (topo_failed), or NULL. */
const char *core_failed(const struct core *c);

/* The client went away: its answers go nowhere. */
void core_client_gone(struct core *c, void *client);

/* Stops: announces the stop (down, not gone), refuses new client requests,
 * stops starting anti-entropy rounds; requests in flight finish. */
void core_stop(struct core *c);
bool core_stopping(const struct core *c);

/* Called once drained, just before the driver exits: from then on peer
 * messages and gossip are dropped, so that nothing new reaches storage
 * while the loop winds down. */
void core_close(struct core *c);

/* True once stopping and nothing this node owns is in flight: the driver
 * may exit. */
bool core_drained(const struct core *c);

/* True once the node coordinates (it has joined). */
bool core_joined(const struct core *c);

/* The record of the member with this id in this node's view, or NULL. */
const struct wire_member *core_member(struct core *c,
                                      const uint8_t id[CRYPTO_NODE_ID_BYTES]);

/* The ring of the current view, or NULL (no repl, or no view yet). */
const struct ring *core_ring(const struct core *c);

struct hlc *core_hlc(struct core *c);
struct membership *core_membership(struct core *c);
/* NULL when the module is off. */
struct repl *core_repl(struct core *c);
struct ae *core_ae(struct core *c);
struct topo *core_topo(struct core *c);

#endif
