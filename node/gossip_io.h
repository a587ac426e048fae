/* gossip_io: gossip's transport over libev and real sockets (DESIGN §3, §7,
 * §8): sealed datagrams and push-pull state over the peer channel, sent for
 * the core (env->gossip) and handed back to it. Private to node/. */
#ifndef ESSAIM_NODE_GOSSIP_IO_H
#define ESSAIM_NODE_GOSSIP_IO_H

#include <stdint.h>

#include "env.h"

struct node_config;
struct ev_loop;
struct fault;

struct gossip_counters {
    struct seal_counters udp; /* sealed datagrams: opened and refused */
    uint64_t undecodable;     /* opened, but not a gossip message */
    uint64_t peer_rejected;   /* stream peers whose key or id did not match */
    uint64_t peer_failed;     /* push-pulls that could not be delivered */
};

struct gossip_io;

/* A gossip message that arrived from src_addr (authenticated). */
typedef void (*gossip_deliver_fn)(void *arg, const char *src_addr,
                                  const struct gossip_msg *m);

/* Binds the UDP socket on the listen address; what arrives goes to deliver.
 * @retval 0 Success. @retval KV_ERR_IO the socket could not be bound.
 * @retval KV_ERR_NOMEM. */
int gossip_io_new(struct gossip_io **out, struct ev_loop *loop,
                  const struct node_config *cfg,
                  const uint8_t node_priv[CRYPTO_KEY_BYTES],
                  const uint8_t cluster_secret[CRYPTO_KEY_BYTES],
                  const uint8_t *old_cluster_secret, gossip_deliver_fn deliver,
                  void *deliver_arg);

/* Starts receiving datagrams. */
void gossip_io_start(struct gossip_io *g);

/* Sends a gossip message: env->gossip of kvnode's core. */
void gossip_io_send(struct gossip_io *g, const struct peer *to,
                    const struct gossip_msg *m);

/* A message that arrived on an inbound stream channel of the peer kind,
 * whose handshake proved the sender holds remote_static. */
void gossip_io_on_peer_message(struct gossip_io *g,
                               const uint8_t remote_static[CRYPTO_KEY_BYTES],
                               const uint8_t *msg, size_t len);

/* Sends and receives through the fault layer f from now on (only when f
 * is enabled: kvnode --fault-injection). */
void gossip_io_set_fault(struct gossip_io *g, struct fault *f);

/* Counts a node-to-node handshake that failed (a wrong cluster secret). */
void gossip_io_peer_refused(struct gossip_io *g);

const struct gossip_counters *gossip_io_counters(struct gossip_io *g);

/* Stops the watchers, closes the sockets and frees. NULL is fine. */
void gossip_io_free(struct gossip_io *g);

#endif
