/* Replication's private parts, shared by its three files (DESIGN §6):
 *
 *   repl.c        the view, messages, local writes, the replica, the tick
 *   repl_coord.c  the coordinator: targets, quorums, answers, read repair
 *   repl_hints.c  hint replay to owners that came back
 *
 * Private to node/repl*.c. */
#ifndef ESSAIM_NODE_REPL_INT_H
#define ESSAIM_NODE_REPL_INT_H

#include "repl.h"

#include "../common/common.h"
#include "ring.h"

#define ID_BYTES CRYPTO_NODE_ID_BYTES
/* Preferred replicas plus the fallbacks a write may try. */
#define MAX_TARGETS (2 * REPL_MAX_REPLICAS + 2)
#define BUCKETS 1024
#define REPLAY_BATCH 64
#define MAX_HINT_OWNERS 64
/* The read ring, plus one ring per member whose ring phase is changing
 * (DESIGN §7b); more changes than that at once are refused by topo.c. */
#define MAX_RINGS 8
/* Region names a node has seen, interned: a target's region is an index. */
#define MAX_REGION_NAMES 64
#define REGION_ANY 0xff
/* A quorum to meet: per ring, over all replicas, the local region's, or
 * one per region (each_quorum). */
#define MAX_GROUPS 64

enum target_state { T_PENDING, T_OK, T_FAILED, T_DOWN };

/* How far the request is from done: over every quorum it needs, whether
 * all are met, whether one can no longer be, and that quorum's counts and
 * region (REGION_ANY: over every region; the read ring's first quorum
 * when none is short). */
struct tally {
    bool met, hopeless;
    size_t ok, need, n, pending;
    uint8_t region;
};

/* need of the n replicas of ring `ring` in `region` (or REGION_ANY). */
struct quorum {
    uint8_t ring, region, need, n;
};

struct target {
    uint8_t id[ID_BYTES];
    uint8_t owner[ID_BYTES]; /* the preferred replica it stands in for */
    bool hinted;
    uint8_t rings;  /* bit k: on ring k's preference list (creq.rings) */
    uint8_t state;  /* enum target_state */
    uint8_t region; /* interned (repl.regions); REGION_ANY when unknown */
    /* A read: asked for a digest only; fetched in full once a digest
     * showed a newer record than the data in hand. */
    bool digest, fetched;
    int32_t code;
    /* a read's answer */
    bool found, tombstone;
    uint64_t version;
    uint8_t origin[ID_BYTES];
    uint8_t checksum[PROTO_CHECKSUM_BYTES];
};

/* A client request this node coordinates. */
struct creq {
    uint64_t id; /* of the replica messages it sends */
    void *client;
    uint64_t client_id;
    uint8_t type;   /* MSG_PUT, MSG_DEL, MSG_GET or MSG_WHERE */
    uint8_t n_pref; /* the read ring's preference list: walk[0..n_pref) */
    /* A write needs every quorum of every ring k of the view it was planned
     * under (ring 0 is the read ring); a read, the read ring's only.
     * digest is that view's: a write is re-planned before it is
     * acknowledged when the view changed meanwhile. */
    uint8_t n_rings, consistency, n_groups;
    struct quorum g[MAX_GROUPS];
    uint64_t digest;
    bool answered;
    bool held_hint; /* a write: the coordinator keeps a hint of it */
    uint64_t deadline;
    uint64_t token;
    uint8_t *key, *value; /* one allocation: key, then value */
    size_t key_len, value_len;
    /* a write's record, or a read's newest answer */
    uint64_t version;
    uint8_t origin[ID_BYTES];
    bool tombstone, have_newest;
    /* a read: the newest version any answer named, digests included; the
     * answer waits until the value in hand is that one */
    bool seen_any;
    uint64_t seen_version;
    uint8_t seen_origin[ID_BYTES];
    uint8_t *newest_value;
    size_t newest_len;
    /* the ring walk from the key, preferred replicas first */
    uint8_t (*walk)[ID_BYTES];
    size_t n_walk, next_fallback;
    size_t n_targets;
    struct target t[MAX_TARGETS];
    struct creq *prev, *next, *hnext;
};

/* A local storage write and what to do once it is durable. */
enum lw_kind {
    LW_COORD,
    LW_PEER,
    LW_REPAIR,
    LW_HINT_PUT,
    LW_HINT_DEL,
    LW_REHOME /* a hint whose owner is gone, written here as a replica */
};

struct local_write {
    struct storage_write w;
    uint8_t kind; /* enum lw_kind */
    uint64_t req_id;
    uint8_t peer[ID_BYTES];
    uint8_t data[]; /* key, then value */
};

/* Where one replayed hint went, and who has confirmed it. */
struct replay_item {
    bool done;
    uint8_t n_targets;
    uint16_t answered; /* bit i: targets[i] answered */
    uint8_t targets[REPL_MAX_REPLICAS][ID_BYTES];
};

/* One batch of hints being offered to their owner, or, when the owner has
 * left or been forgotten, to each key's replicas now. */
struct replay {
    bool active, rehome;
    uint8_t owner[ID_BYTES];
    uint64_t first_id, deadline;
    size_t n, open;
    struct storage_record *recs;
    struct replay_item *items;
};

struct repl {
    struct repl_config cfg;
    struct env env;
    uint8_t self[ID_BYTES];
    struct hlc *hlc;
    struct ring *ring;             /* the read ring */
    struct wire_member *ring_info; /* by read ring index */
    struct wire_member *view;      /* every member, by id */
    uint8_t *view_region;          /* view[i]'s region, interned */
    size_t n_view;
    /* Rings a write must also reach a quorum of: the read ring with one
     * changing member's phase flipped, for each such member. */
    struct ring *wring[MAX_RINGS - 1];
    size_t n_wrings;
    uint64_t digest; /* of the rings (repl_digest) */
    struct creq *reqs, *buckets[BUCKETS];
    uint64_t next_id;
    size_t local_inflight;
    struct replay replay;
    uint8_t last_owner[ID_BYTES];
    uint64_t next_replay_ms;
    bool ready;
    struct repl_counters counters;
    /* Region names seen, interned; self_region is this node's. */
    char regions[MAX_REGION_NAMES][GOSSIP_NAME_MAX];
    size_t n_regions;
    uint8_t self_region;
    /* Smoothed round trip to a member (0: unknown), from membership. */
    uint32_t (*rtt)(void *arg, const uint8_t id[ID_BYTES]);
    void *rtt_arg;
    /* --replicas: this node's text, the one most live members hold, and
     * whether they differ (then it coordinates nothing); the warning
     * logged for a region short of nodes. */
    char placement_text[GOSSIP_REPLICAS_MAX];
    char cluster_text[GOSSIP_REPLICAS_MAX];
    bool mismatch;
    char short_text[160];
};

/* ---- repl.c ---- */

bool repl_node_up(const struct repl *r, const uint8_t id[ID_BYTES]);
void repl_local_submit(struct repl *r, struct local_write *lw);
void repl_send_write(struct repl *r, const uint8_t to[ID_BYTES], uint64_t id,
                     const struct storage_record *rec, const uint8_t *owner);
void repl_send_msg(struct repl *r, const uint8_t to[ID_BYTES], struct msg *m);
bool repl_is_self(const struct repl *r, const uint8_t id[ID_BYTES]);
/* The interned index of a member's region; REGION_ANY when unknown. */
uint8_t repl_region_of(struct repl *r, const uint8_t id[ID_BYTES]);
const struct wire_member *repl_member_info(const struct repl *r,
                                           const uint8_t id[ID_BYTES]);
struct local_write *repl_local_write_new(const struct storage_record *rec,
                                         uint8_t kind, uint8_t op,
                                         const uint8_t *owner);

/* ---- repl_coord.c ---- */

void repl_progress(struct repl *r, struct creq *c);
void repl_target_done(struct repl *r, struct creq *c, size_t i, int code);
void repl_creq_free(struct repl *r, struct creq *c);
void repl_reply_where(struct repl *r, struct creq *c);
void repl_take_read(struct creq *c, struct target *t,
                    const struct msg_replica *a, const uint8_t *value,
                    size_t value_len);
void repl_reply_result(struct repl *r, struct creq *c, int code,
                       const char *text);
bool repl_is_write(const struct creq *c);
void repl_shortfall_text(const struct repl *r, const struct creq *c,
                         const struct tally *t, bool timed_out, char *buf,
                         size_t cap);
void repl_tally(const struct creq *c, struct tally *t);
void repl_hold_hint(struct repl *r, const struct creq *c,
                    const uint8_t owner[ID_BYTES]);
long repl_pending_target(const struct creq *c, const uint8_t id[ID_BYTES]);
/* Target i sent a digest newer than the record in hand: ask it for the
 * record. */
void repl_fetch_record(struct repl *r, struct creq *c, size_t i);
struct creq *repl_creq_find(struct repl *r, uint64_t id);

/* ---- repl_hints.c ---- */

void repl_replay_end(struct repl *r);
void repl_replay_answer(struct repl *r, const uint8_t from[ID_BYTES],
                        uint64_t id, int code);
void repl_replay_start(struct repl *r);

#endif
