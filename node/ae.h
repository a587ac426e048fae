/* Anti-entropy (DESIGN §11): Merkle trees per token range and replica pair,
 * compared with the other replicas on a timer and on kvcli repair, and a
 * scrub that re-hashes stored values against their checksums.
 *
 * Trees. The token space is cut into AE_RANGES ranges (proto.h); for each
 * other node this one shares keys with, it keeps one tree per range over the
 * records both should hold (the ring's preference lists say which). A tree
 * has a fixed shape: AE_SEGMENTS leaf segments per range, cut by token, whose
 * hash is the XOR of their records' hashes (a record's hash is BLAKE2b-128 of
 * its LMDB key, version, origin, tombstone flag and checksum), so a write
 * updates its segment in O(1); AE_BRANCHES branch hashes over AE_FANOUT
 * segments each, and a root over the branches. A full rebuild (at start, and
 * when the ring changes) reads LMDB in token order and hashes every record
 * through accel, a slice of records per tick; meanwhile rounds wait and
 * peers are told to ask again.
 *
 * Exchange. The initiator sends its roots; the peer answers with its own;
 * for a range that differs it asks for the branch hashes, then the segment
 * hashes of the branches that differ, then the keys (with versions) of the
 * segments that differ, a bounded batch at a time. Keys the peer has newer or
 * the initiator lacks are pulled; keys the initiator has newer or the peer
 * lacks are pushed. Tombstones take part like any record. The newest version
 * wins, as everywhere (storage's last-writer-wins).
 *
 * Scrub. Every stored value is re-hashed through accel and compared with the
 * checksum stored beside it; a record that fails (or whose header cannot be
 * read) is reported and pulled from another replica, which replaces it.
 *
 * Like repl, this module never touches a socket or the clock: it acts
 * through the node's struct env (env.h), so the simulator runs it too. */
#ifndef ESSAIM_NODE_AE_H
#define ESSAIM_NODE_AE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../proto/proto.h"
#include "../storage/storage.h"
#include "env.h"
#include "ring.h"

/* storage_write.tag of the writes anti-entropy submits. */
#define AE_WRITE_TAG 1

struct ring;

struct ae_config {
    struct ring_placement placement; /* core sets repl's */
    unsigned interval_ms;       /* a background round this often; 0: never */
    unsigned scrub_interval_ms; /* a background scrub this often; 0: never */
    unsigned step_timeout_ms;   /* a peer must answer each step within */
    size_t max_message_bytes;   /* records per pull or push message */
    /* A record whose version is further ahead of this node's clock is
     * refused, never stored (DESIGN §4, as repl's replica writes). */
    unsigned max_clock_offset_ms;
    /* Tree builds and scrubs read this many records per slice (one read
     * transaction, one accel batch) and this many slices per ae_tick, so
     * that a large store never stalls the node. */
    size_t build_batch;
    size_t build_steps;
};

void ae_config_defaults(struct ae_config *cfg);

struct ae_counters {
    uint64_t rounds;         /* rounds finished */
    uint64_t pulled, pushed; /* records written here / sent there */
    uint64_t bytes_sent, bytes_received;
    uint64_t scrubbed, corrupt, scrub_repaired;
    uint64_t clock_refused; /* records refused: too far ahead of our clock */
};

struct ae;

struct ae *ae_new(const struct ae_config *cfg, const struct env *env,
                  const uint8_t self[CRYPTO_NODE_ID_BYTES]);
void ae_free(struct ae *ae);

/* The ring of the current view (repl_ring), or NULL. Cheap when it has not
 * changed; a new ring invalidates the trees (rebuilt on next use) and ends
 * the round in progress. */
void ae_set_ring(struct ae *ae, const struct ring *ring);

/* Every completed storage write, before its owner sees it: applied puts keep
 * the trees current. Writes tagged AE_WRITE_TAG are anti-entropy's own and
 * are freed here: the caller must not touch them after. */
void ae_on_stored(struct ae *ae, struct storage_write *w);

/* An MSG_AE or MSG_AE_ANSWER from another node; wire_len is its encoded
 * size (for the byte counts). */
void ae_on_peer_message(struct ae *ae, const uint8_t from[CRYPTO_NODE_ID_BYTES],
                        const struct msg *m, size_t wire_len);

/* Deadlines and the background timers; call it every 100 ms or so. */
void ae_tick(struct ae *ae);

/* kvcli repair: a round over one range (0..AE_RANGES-1) or all (-1), after
 * a scrub when scrub is set. Progress and the outcome go to client as
 * MSG_REPAIR_RESULT with id. A round already running finishes first.
 * @retval 0 started or queued. @retval KV_ERR_BUSY one is already queued.
 * @retval KV_ERR_INVAL a bad range. */
int ae_repair(struct ae *ae, void *client, uint64_t id, int range, bool scrub);

/* The client went away: no more progress to it (the round goes on). */
void ae_client_gone(struct ae *ae, void *client);

/* True while anti-entropy waits on its own storage writes. */
bool ae_busy(const struct ae *ae);

const struct ae_counters *ae_counters(const struct ae *ae);

/* When each range last converged with every replica (wall ms; 0: never). */
void ae_converged(const struct ae *ae, uint64_t out[AE_RANGES]);

/* The hash of one record as the trees hold it (exposed for tests). */
void ae_record_hash(uint8_t out[AE_HASH_BYTES], const uint8_t *lkey,
                    uint64_t version, const uint8_t *origin, bool tombstone,
                    const uint8_t *checksum);

/* The root of this node's tree of range for peer (tests and the bench); a
 * build in progress is finished first, at once.
 * @retval 0. @retval KV_ERR_NOT_FOUND the peer shares nothing with us. */
int ae_root(struct ae *ae, const uint8_t peer[CRYPTO_NODE_ID_BYTES],
            unsigned range, uint8_t out[AE_HASH_BYTES]);

#endif
