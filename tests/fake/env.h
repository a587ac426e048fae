/* A node's environment (node/env.h) for single-node unit tests: virtual
 * time and wall clock, a counter PRNG, membership's one timer, and a record
 * of everything the module under test sends and answers. Tests read what was
 * sent from sent[] and move time with fake_env_advance; the store is
 * whichever port the test gives (tests/fake/store.h, or storage_lmdb). */
#ifndef ESSAIM_FAKE_ENV_H
#define ESSAIM_FAKE_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../node/env.h"

#define FAKE_ENV_MAX 1024

/* One message sent: gossip (to addr), or a replica or anti-entropy message
 * (to a node id), with a copy that stays valid until fake_env_clear. */
struct fake_sent {
    bool gossip;
    char addr[GOSSIP_ADDR_MAX];
    struct gossip_msg g;         /* with a copy of its members: */
    struct wire_member *members; /* g.members, malloc'd */
    uint8_t to[CRYPTO_NODE_ID_BYTES];
    struct msg m; /* decoded from bytes */
    uint8_t *bytes;
    size_t len;
};

/* One answer to a client, encoded, and decoded from those bytes. */
struct fake_reply {
    void *client;
    struct msg m;
    uint8_t *bytes;
    size_t len;
};

struct fake_env {
    struct env env; /* what the module under test is given */
    uint64_t now, wall, rng;
    struct timer *timer; /* membership's, and when it is due */
    uint64_t timer_at;
    struct fake_sent sent[FAKE_ENV_MAX]; /* past FAKE_ENV_MAX: only counted */
    size_t n_sent;
    struct fake_reply replies[FAKE_ENV_MAX];
    size_t n_replies;
};

/* env->hash with libsodium, one item at a time (what accel's CPU backend
 * computes), for fakes that have no accel. */
int fake_env_hash(void *ctx, const uint8_t *data, const uint64_t *off, size_t n,
                  size_t outlen, uint8_t *out);

/* Starts at now = 1,000,000 ms and wall = 1,700,000,000,000 ms, with this
 * store (NULL: none). */
void fake_env_init(struct fake_env *f, const struct storage_port *store,
                   void *store_ctx);

/* Moves time to t, firing the timer each time it is due. */
void fake_env_advance(struct fake_env *f, uint64_t t);

/* Forgets (and frees) what was sent and answered, or only one of them. */
void fake_env_clear(struct fake_env *f);
void fake_env_clear_sent(struct fake_env *f);
void fake_env_clear_replies(struct fake_env *f);

#endif
