/* transport: kvnode's one node-to-node transport, over libev and real
 * sockets (DESIGN §3, §7, §8). Private to node/.
 *
 * Node to node there is one persistent link per peer: a
 * Noise channel with the cluster secret and the peer prologue, dialled on
 * first use (the peer must prove the key its member id names) or accepted
 * from the peer, used both ways by replica, anti-entropy and push-pull
 * gossip messages alike, many in flight, queued while the handshake runs,
 * and dialled again after a failure with a backoff. The one message type
 * space node to node is proto's: gossip types below MSG_REPLICA_READ, replica
 * and anti-entropy messages from it up (proto_peer_kind). Probes travel as
 * datagrams sealed with the cluster secret on the UDP socket of the listen
 * address. The fault layer (kvnode --fault-injection) acts on both in this
 * one file. */
#ifndef ESSAIM_NODE_TRANSPORT_H
#define ESSAIM_NODE_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "env.h"

struct ev_loop;
struct conn;
struct core;
struct fault;
struct node_config;

/* ---- the transport ---- */

struct transport_counters {
    struct seal_counters udp; /* sealed datagrams: opened and refused */
    uint64_t undecodable;     /* opened, but not a gossip message */
    uint64_t peer_rejected;   /* peers whose key or id did not match */
    uint64_t peer_failed;     /* push-pulls that could not be delivered */
    uint64_t frames_rejected; /* node-to-node frames refused (closed) */
    uint64_t peer_backlogged; /* messages not sent: the peer did not read */
};

struct transport;

/* Binds the UDP socket on cfg->listen. The secrets are copied.
 * @retval 0 Success. @retval KV_ERR_INVAL the address is not numeric.
 * @retval KV_ERR_IO the socket could not be bound. @retval KV_ERR_NOMEM. */
int transport_new(struct transport **out, struct ev_loop *loop,
                  const struct node_config *cfg,
                  const uint8_t node_priv[CRYPTO_KEY_BYTES],
                  const uint8_t cluster_secret[CRYPTO_KEY_BYTES],
                  const uint8_t *old_cluster_secret, struct fault *fault);

/* What arrives goes to core from now on; datagrams are read. */
void transport_start(struct transport *t, struct core *core);

/* env->gossip: a datagram, or push-pull state over the link. */
void transport_gossip(struct transport *t, const struct peer *to,
                      const struct gossip_msg *m);

/* env->send: over the link to that node, dialled if need be. Returns the
 * bytes queued (0: the link cannot be had; requests on it are reported
 * down to the core from the loop). */
size_t transport_send(struct transport *t,
                      const uint8_t to[CRYPTO_NODE_ID_BYTES],
                      const struct msg *m);

/* An accepted connection whose handshake proved a node: it becomes a link. */
void transport_adopt(struct transport *t, struct conn *c);

/* Counts a node handshake that failed (a wrong cluster secret). */
void transport_peer_refused(struct transport *t);

const struct transport_counters *transport_counters(struct transport *t);

/* The largest message on a node-to-node link: a value's worth, and never
 * less than PROTO_PEER_MSG_MIN, so that anti-entropy and full-state
 * exchanges fit whatever --max-value-size says. */
size_t transport_peer_max_msg(const struct node_config *cfg);

/* Bytes of messages sent to and received from the member at this address
 * (its gossiped address), node-to-node links and datagrams together; 0 and
 * 0 for one never heard from. */
void transport_peer_bytes(const struct transport *t, const char *addr,
                          uint64_t *out, uint64_t *in);

/* Whether a peer reads more slowly than this node sends to it (bytes pile
 * up on its link, and still move): client writes wait meanwhile. */
bool transport_slow(struct transport *t);

/* A member's access list (MSG_ACCESS_SET, from the member whose id is
 * given) goes to fn, not to the core. */
typedef void (*transport_access_fn)(void *arg,
                                    const uint8_t from[CRYPTO_NODE_ID_BYTES],
                                    const struct msg *m);
void transport_set_access_handler(struct transport *t, transport_access_fn fn,
                                  void *arg);

/* Closes the links and the socket and frees. NULL is fine. */
void transport_free(struct transport *t);

/* A member came back (alive again, a restart say): dials to addr start
 * at once, whatever backoff its absence earned. */
void transport_member_back(struct transport *t, const char *addr);

#endif
