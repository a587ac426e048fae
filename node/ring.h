/* The ring (DESIGN §5): consistent hashing with virtual tokens and
 * region- and zone-aware preference lists. Private to node/.
 *
 * Each node owns `vnodes` tokens derived from its id alone, so every node
 * computes the same ring from the same membership view without talking to
 * anyone. A key's token (storage_token) is owned by the first node token at
 * or after it, clockwise. Its preference list walks clockwise from there and
 * takes distinct nodes, preferring first nodes in regions not yet chosen,
 * then nodes in zones not yet chosen, then any node (like Cassandra's
 * NetworkTopologyStrategy and rack awareness); or, with a count per region
 * (--replicas eu:3,us:3), that many nodes in each region, distinct zones
 * first. */
#ifndef ESSAIM_NODE_RING_H
#define ESSAIM_NODE_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../proto/proto.h"

#define RING_DEFAULT_VNODES 64
/* The most replicas a key has, and the most regions --replicas names. */
#define RING_MAX_REPLICAS 15
#define RING_MAX_REGIONS 8

/* Where a key's replicas go (DESIGN §6, --replicas):
 *  - n > 0 ("N"): N replicas, new regions first, then new zones, then any;
 *  - n == 0 ("REGION:N,..."): count[i] replicas in region name[i], distinct
 *    zones first within the region. Regions are kept sorted by name, so that
 *    equal settings compare equal however they were written.
 * A count larger than the nodes there are is capped to them. */
struct ring_placement {
    unsigned n;
    size_t n_regions;
    struct ring_region_count {
        char name[GOSSIP_NAME_MAX];
        unsigned count;
    } regions[RING_MAX_REGIONS];
};

/* N replicas, new regions first. */
void ring_placement_set_n(struct ring_placement *p, unsigned n);

/* Parses "N" or "REGION:N[,REGION:N...]" (counts 1 to RING_MAX_REPLICAS in
 * all). On an error, writes one line to err.
 * @retval 0, or KV_ERR_INVAL. */
int ring_placement_parse(struct ring_placement *p, const char *s, char *err,
                         size_t errlen);

/* The canonical text of a placement ("3", "eu:3,us:2"): what gossip carries
 * so that members compare settings. */
void ring_placement_format(const struct ring_placement *p, char *buf,
                           size_t cap);

/* The replicas a key has at most: N, or the counts' sum. */
unsigned ring_placement_total(const struct ring_placement *p);

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

/* Writes the preference list of a token under a placement: distinct node
 * indices (into the ring's node order, see ring_node_at), at most
 * ring_placement_total(p). With N, best first; per region, region by region
 * in the placement's order, each clockwise from the token.
 * @retval how many were written (fewer when the ring is smaller). */
size_t ring_preference_list(const struct ring *r, uint64_t token,
                            const struct ring_placement *p, size_t *out);

/* The preference list of N replicas, new regions first (--replicas N). */
size_t ring_preference_n(const struct ring *r, uint64_t token, size_t n,
                         size_t *out);

/* The walk from a token: its preference list first, then every other node
 * of the ring in the order N = all would take them (new regions, new zones,
 * then any), so fallbacks come after the list. out holds ring_size(r).
 * @retval ring_size(r). */
size_t ring_walk(const struct ring *r, uint64_t token,
                 const struct ring_placement *p, size_t *out);

/* How many of the ring's nodes are in a region. */
size_t ring_region_nodes(const struct ring *r, const char *region);

/* When a region of a per-region placement has fewer nodes than its count,
 * writes a warning to buf ("region us has 2 nodes for 3 replicas ...").
 * @retval true when it did. */
bool ring_placement_short(const struct ring *r, const struct ring_placement *p,
                          char *buf, size_t cap);

/* The share of the token space each node owns as first replica, written to
 * share[ring_size(r)]; the shares sum to 1. */
void ring_ownership(const struct ring *r, double *share);

#endif
