/* The environment a protocol state machine acts through (DESIGN §3).
 *
 * Membership (and later the coordinator, hinted handoff and anti-entropy)
 * never touch a socket, libev or the clock: they get events and act through
 * these calls. node/gossip_io.c implements them over libev and real sockets;
 * tests/sim implements them with virtual time, a seeded PRNG and an
 * in-memory network. */
#ifndef ESSAIM_NODE_ENV_H
#define ESSAIM_NODE_ENV_H

#include <stdint.h>

#include "../proto/proto.h"

/* Where a message goes: an address as gossip carries it ("host:port"), and
 * the static public key the receiver must prove it holds on a stream
 * channel (NULL when not known yet, as for a seed). */
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
    uint64_t (*now_ms)(void *ctx);
    /* Sends a gossip message. PING, ACK, PING_REQ and NACK travel as one
     * sealed datagram each (the environment may drop piggybacked members to
     * fit); SYNC and SYNC_REPLY over the encrypted TCP channel. */
    void (*send)(void *ctx, const struct peer *to, const struct gossip_msg *m);
    void (*timer)(void *ctx, struct timer *t, uint64_t after_ms);
    uint64_t (*random)(void *ctx);
    void *ctx;
};

#endif
