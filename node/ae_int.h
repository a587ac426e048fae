/* Anti-entropy's private parts, shared by its three files (DESIGN §11):
 *
 *   ae_tree.c   the ring's replica pairs, the Merkle trees (built in slices
 *               through accel, kept current by every write), stored records
 *   ae_scrub.c  re-hashing every stored value against its checksum
 *   ae.c        the exchange (initiator and responder), rounds, the tick
 *
 * Private to node/ae*.c. */
#ifndef ESSAIM_NODE_AE_INT_H
#define ESSAIM_NODE_AE_INT_H

#include "ae.h"

#include "../common/common.h"
#include "hlc.h"
#include "membership.h"
#include "repl.h"
#include "ring.h"

#define ID_BYTES CRYPTO_NODE_ID_BYTES
#define LKEY STORAGE_LKEY_BYTES
/* A global segment: the token's top bits, range then segment. */
#define SEG_SHIFT (64 - AE_RANGE_BITS - 8)
#define N_GSEG (AE_RANGES * AE_SEGMENTS)
#define LEAF_ITEM (LKEY + 8 + ID_BYTES + 1 + STORAGE_CHECKSUM_BYTES)
/* Records hashed per accel call during a rebuild or a scrub. */
#define HASH_BATCH 65536
#define SCRUB_BATCH_BYTES (16u << 20)
#define MAX_CORRUPT 4096
/* Segments per KEYS request, keys per PULL request. */
#define KEYS_SEGS 64
#define PULL_KEYS 1024

_Static_assert(AE_SEGMENTS == 256, "a range's segments are 8 token bits");
_Static_assert(LKEY == sizeof(((struct ae_key *)0)->lkey), "lkey size");
/* A ring's node index fits interval.rep: a view never holds more. */
_Static_assert(MEMBERSHIP_MAX_MEMBERS <= UINT16_MAX + 1, "ring index width");

/* Ring token k's interval (token k-1, token k] and its replicas (indices
 * into ids). */
struct interval {
    uint64_t last;
    uint8_t n;
    uint16_t rep[REPL_MAX_REPLICAS];
};

struct tree {
    uint8_t seg[N_GSEG][AE_HASH_BYTES];
};

struct lkeys {
    uint8_t (*k)[LKEY];
    size_t n, cap;
};

struct corrupt {
    uint8_t lkey[LKEY];
    bool fixed;
};

enum rstate {
    R_SCRUB = 1,  /* scrubbing, a slice per tick */
    R_WAIT_TREES, /* the trees are being built */
    R_ROOTS,
    R_BRANCHES,
    R_SEGS,
    R_KEYS,
    R_PULL,
    R_PUSH,
    R_WAIT_WRITES,
    R_RETRY_ROOTS, /* the views of the ring differed: asking again soon */
};

/* A peer whose view of the ring differs (a member just joined or left) is
 * asked again this often, until its step deadline. */
#define RING_RETRY_MS 250

/* What follows the pull and push loops. */
enum then { THEN_ROOTS, THEN_KEYS };

struct round {
    bool active;
    void *client;
    uint64_t client_id;
    uint32_t mask;   /* ranges in the round */
    bool forced;     /* kvcli repair: every replica, across regions too */
    uint32_t failed; /* ranges with an exchange that did not finish */
    size_t *peers;   /* ring indices, in order: this region's first */
    uint32_t *masks; /* per ring index: the ranges compared with it */
    size_t n_peers, peer_pos;
    size_t peer;
    int state;
    enum then then;
    uint64_t req, deadline;
    uint64_t peer_deadline; /* for views of the ring to agree */
    uint64_t retry_at;
    uint32_t diff[AE_RANGES];
    size_t n_diff, diff_pos;
    uint32_t segs[AE_SEGMENTS];
    size_t n_segs, seg_pos, seg_chunk;
    bool has_after;
    uint8_t after[LKEY];
    struct lkeys pull, push;
    size_t pull_pos, pull_sent, push_pos;
    uint32_t done, total;
    uint32_t peer_done; /* exchanges of the current peer counted in done */
    uint64_t differing, pulled, pushed, bytes_sent, bytes_received;
    uint64_t scrubbed, corrupt, repaired;
};

struct queued {
    bool set;
    void *client;
    uint64_t id;
    int range;
    bool scrub;
};

struct ae {
    struct ae_config cfg;
    struct env env;
    uint8_t self[ID_BYTES];
    /* the ring */
    bool have_ring;
    uint8_t fp[AE_RING_BYTES];
    uint8_t (*ids)[ID_BYTES];
    size_t n_nodes;
    long self_idx;
    struct interval *iv;
    size_t n_iv;
    uint32_t *shared; /* per node: the ranges it shares with this one */
    /* Per node in another region: the ranges rounds on the timer compare
     * with it. Across regions only one replica per region of an interval
     * (its highest ranked there) compares it with the other regions
     * (DESIGN §11): the others catch up within their region. */
    uint32_t *cross;
    uint16_t *region; /* per node: its region, as an index */
    struct tree **trees;
    bool trees_valid;
    /* a build in progress, and the slices it read (kept after it ends) */
    struct build *build;
    struct slice *slices;
    size_t n_slices, cap_slices;
    struct scrub *scrub; /* a scrub in progress */
    /* rounds */
    struct round rd;
    struct queued queued;
    uint64_t next_round_at, next_scrub_at;
    uint64_t next_req;
    struct corrupt *corrupt;
    size_t n_corrupt;
    size_t pending_writes;
    uint64_t converged[AE_RANGES];
    struct ae_counters c;
    struct push_wait *waits; /* pushes not answered yet */
};

/* A peer's push whose answer waits until every record it brought is
 * stored here: the pusher's round ends only once its pushes are durable. */
struct push_wait {
    uint8_t to[ID_BYTES];
    uint64_t id;
    size_t left; /* writes not completed yet */
    struct push_wait *next;
};

struct ae_write {
    struct storage_write w;
    struct push_wait *wait; /* NULL: no answer waits on it */
    uint8_t buf[];          /* key ‖ value */
};

static inline uint32_t ae_popcount(uint32_t x)
{
    uint32_t n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

/* ---- ae_tree.c ---- */

/* Fills the round's peers and their ranges: this region's first, then the
 * others'. A round on the timer compares with a node of another region
 * only the ranges where both speak for their region for some interval
 * (ae->cross), so that WAN traffic grows with regions and intervals, not
 * with every pair of nodes; kvcli repair (rd.forced) compares with every
 * replica. @retval 0, or KV_ERR_NOMEM. */
int ae_round_peers(struct ae *ae);

uint32_t ae_range_of(uint64_t token);
int ae_lkeys_add(struct lkeys *l, const uint8_t *k);
long ae_node_index(const struct ae *ae, const uint8_t id[ID_BYTES]);
bool ae_shares(const struct ae *ae, uint64_t t, size_t peer);
void ae_build_free(struct ae *ae);
void ae_drop_ring(struct ae *ae);
int ae_build_run(struct ae *ae, size_t steps);
int ae_ensure_trees(struct ae *ae);
const uint8_t *ae_seg_hash(const struct ae *ae, size_t peer, size_t g);
void ae_branches(const struct ae *ae, size_t peer, uint32_t range,
                 uint8_t out[AE_BRANCHES][AE_HASH_BYTES]);
void ae_root_hash(const struct ae *ae, size_t peer, uint32_t range,
                  uint8_t out[AE_HASH_BYTES]);
/* Stores a pulled or pushed record, unless its version is too far ahead of
 * this node's clock. @retval true: submitted. */
bool ae_store_record(struct ae *ae, const struct ae_record *r,
                     struct push_wait *wait);

/* ---- ae_scrub.c ---- */

void ae_add_corrupt(struct ae *ae, const uint8_t *lkey, const char *what);
void ae_scrub_free(struct ae *ae);
int ae_scrub_begin(struct ae *ae);
int ae_scrub_step(struct ae *ae);

/* ---- ae.c ---- */

void ae_round_end(struct ae *ae, int code, const char *why);

/* One of a push's writes completed: the last answers it. */
void ae_push_stored(struct ae *ae, struct push_wait *wait);

#endif
