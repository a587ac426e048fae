/* transport: kvnode's connections and its one node-to-node transport, over
 * libev and real sockets (DESIGN §3, §7, §8). Private to node/.
 *
 * Connections. Every TCP stream of the node is a struct conn: a Noise
 * channel on a non-blocking socket that moves through started -> handshake
 * (deadline handshake_ms) -> established (dropped after idle_ms without a
 * byte while nothing refers to it) -> closed. What happens on it belongs to
 * its owner through struct conn_ops: the server's for clients, the
 * transport's for nodes. A closed connection is kept as a shell while
 * anything refers to it (conn_ref), so a completion or a caller never
 * touches freed memory.
 *
 * The transport. Node to node there is one persistent link per peer: a
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

/* ---- connections ---- */

struct conn_ops {
    /* The handshake finished. */
    void (*established)(struct conn *c);
    /* One whole message arrived. */
    void (*message)(struct conn *c, const uint8_t *buf, size_t len);
    /* Bytes were refused (rc): a failed handshake, or a frame that failed
     * authentication; the connection closes right after. */
    void (*refused)(struct conn *c, int rc);
    /* The connection is closing: drop every reference to it. NULL: none. */
    void (*closed)(struct conn *c);
};

/* Takes an accepted socket with its responder channel, counted in
 * *open_count until it closes. @retval NULL out of memory (fd closed). */
struct conn *conn_accept(struct ev_loop *loop, int fd, const char *addr,
                         struct chan *chan, uint32_t handshake_ms,
                         uint32_t idle_ms, const struct conn_ops *ops,
                         void *owner, uint64_t *open_count);

/* Encrypts and writes a message; closes c on failure, does nothing once
 * closed. */
void conn_send(struct conn *c, const uint8_t *buf, size_t len);

/* Closes (logging why, when not NULL) and frees once unreferenced. */
void conn_close(struct conn *c, const char *why);
void conn_ref(struct conn *c);
void conn_unref(struct conn *c);

bool conn_closed(const struct conn *c);
const char *conn_addr(const struct conn *c);
struct chan *conn_chan(struct conn *c);
void *conn_owner(const struct conn *c);

/* Writes what every connection holds (answers go out before exit), then
 * closes them all. */
void conn_flush_all(void);
void conn_close_all(void);

/* ---- the transport ---- */

struct transport_counters {
    struct seal_counters udp; /* sealed datagrams: opened and refused */
    uint64_t undecodable;     /* opened, but not a gossip message */
    uint64_t peer_rejected;   /* peers whose key or id did not match */
    uint64_t peer_failed;     /* push-pulls that could not be delivered */
    uint64_t frames_rejected; /* node-to-node frames refused (closed) */
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

/* Closes the links and the socket and frees. NULL is fine. */
void transport_free(struct transport *t);

#endif
