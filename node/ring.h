/* The ring (DESIGN §5): consistent hashing with virtual tokens and
 * region- and zone-aware preference lists. Private to node/.
 *
 * Each node owns `vnodes` tokens derived from its id alone, so every node
 * computes the same ring from the same membership view without talking to
 * anyone. A key's token (storage_token) is owned by the first node token at
 * or after it, clockwise. Its preference list walks clockwise from there and
 * takes distinct nodes, preferring first nodes in regions not yet chosen,
 * then nodes in zones not yet chosen, then any node (like Cassandra's
 * NetworkTopologyStrategy and rack awareness). */
#ifndef ESSAIM_NODE_RING_H
#define ESSAIM_NODE_RING_H

#include <stddef.h>
#include <stdint.h>

#include "../proto/proto.h"

#define RING_DEFAULT_VNODES 64

/* A node as the ring sees it. */
struct ring_node {
    uint8_t id[CRYPTO_NODE_ID_BYTES];
    char region[GOSSIP_NAME_MAX];
    char zone[GOSSIP_NAME_MAX];
};

struct ring;

/* The token of a node's i-th virtual node: BLAKE2b with an 8-byte digest of
 * id ‖ i (big-endian u32), read big-endian. Like a key's token, it is an
 * on-disk and on-wire format. */
uint64_t ring_vnode_token(const uint8_t id[CRYPTO_NODE_ID_BYTES], uint32_t i);

/* Builds the ring of n nodes (copied) with vnodes tokens each. The order of
 * nodes does not matter: equal sets give equal rings.
 * @retval a ring, or NULL when out of memory or n == 0. */
struct ring *ring_build(const struct ring_node *nodes, size_t n,
                        unsigned vnodes);

void ring_free(struct ring *r);

size_t ring_size(const struct ring *r);
/* The ring's nodes, in ascending id order (so equal sets index alike). */
const struct ring_node *ring_node_at(const struct ring *r, size_t i);

/* The ring's tokens, ascending: token k owns (token k-1, token k]. */
size_t ring_token_count(const struct ring *r);
uint64_t ring_token_at(const struct ring *r, size_t k);

/* Writes the preference list of a token: up to n distinct node indices
 * (into the ring's node order, see ring_node_at), best first.
 * @retval how many were written (fewer than n when the ring is smaller). */
size_t ring_preference_list(const struct ring *r, uint64_t token, size_t n,
                            size_t *out);

/* The share of the token space each node owns as first replica, written to
 * share[ring_size(r)]; the shares sum to 1. */
void ring_ownership(const struct ring *r, double *share);

#endif
