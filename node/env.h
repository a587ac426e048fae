/* The environment a node acts through (DESIGN §3).
 *
 * Membership, replication and anti-entropy never touch a socket, libev, the
 * clock or LMDB: they get events and act through these calls, and node/core.c
 * hands every one of them the same env. node/server.c implements it over
 * libev, real sockets and storage/; tests/sim implements it with virtual
 * time, a seeded PRNG, an in-memory network and the in-memory store of
 * tests/fake/store.c. */
#ifndef ESSAIM_NODE_ENV_H
#define ESSAIM_NODE_ENV_H

#include <stddef.h>
#include <stdint.h>

#include "../proto/proto.h"
#include "../storage/storage.h"

/* Where a gossip message goes: an address as gossip carries it
 * ("host:port"), and the static public key the receiver must prove it holds
 * on a stream channel (NULL when not known yet, as for a seed). */
struct peer {
    const char *addr;
    const uint8_t *pubkey;
};

/* A timer the state machine owns. The environment arms it (env->timer) and,
 * when it is due, calls fire(arg) on the protocol's thread. Arming it again
 * replaces the earlier deadline. */
struct timer {
    void (*fire)(void *arg);
    void *arg;
};

struct env {
    uint64_t (*now_ms)(void *ctx);  /* monotonic: deadlines and periods */
    uint64_t (*wall_ms)(void *ctx); /* the HLC's physical clock */
    uint64_t (*random)(void *ctx);
    void (*timer)(void *ctx, struct timer *t, uint64_t after_ms);
    /* Sends a gossip message. PING, ACK, PING_REQ and NACK travel as one
     * sealed datagram each (the environment may drop piggybacked members to
     * fit); SYNC and SYNC_REPLY over the encrypted TCP channel. */
    void (*gossip)(void *ctx, const struct peer *to,
                   const struct gossip_msg *m);
    /* Sends a replica or anti-entropy message to another node (never to this
     * one) over the link to it; returns the bytes put on the wire (0 when it
     * could not be sent). The message is only valid during the call. A link
     * that fails comes back as core_on_peer_down. */
    size_t (*send)(void *ctx, const uint8_t to[CRYPTO_NODE_ID_BYTES],
                   const struct msg *m);
    /* Answers a client request (client as the core was given it). */
    void (*reply)(void *ctx, void *client, const struct msg *m);
    /* Bulk BLAKE2b, as accel_hash. */
    int (*hash)(void *ctx, const uint8_t *data, const uint64_t *off, size_t n,
                size_t outlen, uint8_t *out);
    /* The node's store; completions come back through core_on_stored. */
    const struct storage_port *store;
    void *store_ctx;
    void *ctx;
};

#endif
