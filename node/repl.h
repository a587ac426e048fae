/* repl: replication, sans I/O (DESIGN §3, §4, §5, §6). Private to node/.
 *
 * One state machine per node plays three parts:
 * - coordinator: a client's put, get, del or where goes to the key's
 *   preference list on the ring; a write is stamped with the node's HLC and
 *   acknowledged once W replicas have committed it durably, a read returns
 *   the newest of R answers; every request has a deadline, and an error says
 *   how many replicas were needed and how many answered;
 * - replica: it answers other coordinators' replica reads and writes from
 *   its own storage, and holds hints for nodes that are down;
 * - hints and repair: a write whose preferred replica is down goes to the
 *   next healthy node past the preference list with a hint naming the owner
 *   (sloppy quorum); hints are replayed once gossip says the owner is alive
 *   and deleted when it acknowledges; replicas found stale during a read
 *   get the newest version (read repair).
 *
 * It never touches a socket, libev, LMDB or the clock: node/server.c drives
 * it over real sockets and storage/, tests/sim over an in-memory network and
 * an in-memory store, both through struct env (env.h). */
#ifndef ESSAIM_NODE_REPL_H
#define ESSAIM_NODE_REPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../proto/proto.h"
#include "../storage/storage.h"
#include "env.h"
#include "hlc.h"
#include "ring.h"

#define REPL_MAX_REPLICAS RING_MAX_REPLICAS

struct repl_config {
    struct ring_placement placement; /* N, or N per region (--replicas) */
    unsigned vnodes;                 /* ring tokens per node */
    unsigned max_clock_offset_ms;    /* DESIGN §4 */
    unsigned request_timeout_ms;     /* default deadline */
    unsigned hint_replay_ms;         /* how often hints are offered to owners */
};

void repl_config_defaults(struct repl_config *cfg);

struct repl_counters {
    uint64_t replica_reads, replica_writes; /* served for coordinators */
    uint64_t read_repairs;                  /* stale replicas written back */
    uint64_t hints_stored, hints_replayed;
    uint64_t clock_refused;  /* peer messages refused for clock offset */
    uint64_t timeouts;       /* client requests that passed their deadline */
    uint64_t store_full;     /* local writes the full store refused */
    uint64_t digest_reads;   /* replicas asked for a digest, not the record */
    uint64_t digest_fetches; /* records fetched after a newer digest */
    uint64_t placement_mismatch; /* 1 while --replicas differs from the
                                    cluster's (it coordinates nothing) */
};

struct repl;

/* Creates the state machine; hlc is the node's clock, shared with the code
 * that merges client sessions. @retval NULL when out of memory. */
struct repl *repl_new(const struct repl_config *cfg, const struct env *env,
                      const uint8_t self[CRYPTO_NODE_ID_BYTES],
                      struct hlc *hlc);
void repl_free(struct repl *r);

/* The membership view, this node included. Members that left are not on
 * a ring; dead ones keep their ranges (their writes go to hints) until an
 * operator removes them. A member's ring phase says which rings hold it
 * (DESIGN §7b). Equal views give equal rings. */
void repl_set_members(struct repl *r, const struct wire_member *members,
                      size_t n);

/* Where coordinators find the smoothed round trip to a member (ms; 0:
 * not measured), to ask the nearest replica first (DESIGN §6). */
void repl_set_rtt_source(struct repl *r,
                         uint32_t (*fn)(void *arg, const uint8_t *id),
                         void *arg);

/* Whether the view is complete enough to coordinate: a node that has not
 * yet had a full state from another member (just restarted, say) would
 * place keys on a ring of the few nodes it knows, so until then client
 * requests are refused as unavailable. It starts out false. */
void repl_set_ready(struct repl *r, bool ready);

/* A client's put, get, del or where (the session clock already merged). The
 * answer goes through env->reply, maybe before this returns.
 * @retval 0 Success. @retval KV_ERR_NOMEM (nothing was answered). */
int repl_client_request(struct repl *r, void *client, const struct msg *m);

/* The client connection closed: its answers go nowhere. */
void repl_client_gone(struct repl *r, void *client);

/* A replica message from another node, whose identity its channel proved. */
void repl_on_peer_message(struct repl *r,
                          const uint8_t from[CRYPTO_NODE_ID_BYTES],
                          const struct msg *m);

/* The channel to a node failed: what is outstanding there failed too. */
void repl_on_peer_down(struct repl *r, const uint8_t id[CRYPTO_NODE_ID_BYTES]);

/* A storage write submitted through env->submit has completed. */
void repl_on_stored(struct repl *r, struct storage_write *w);

/* Call often (every 100 ms or so): deadlines and hint replay. */
void repl_tick(struct repl *r);

/* True while requests or local storage writes are in flight. */
bool repl_busy(const struct repl *r);

const struct repl_counters *repl_counters(const struct repl *r);

/* Fills a MSG_RING_RESULT for kvcli ring; free it with repl_ring_free. */
/* The ring of the current view, or NULL; valid until repl_set_members. */
struct ring;
const struct ring *repl_ring(const struct repl *r);

/* The digest of a view's rings (members, sorted by id): who is on them,
 * in which phase, region and zone. Equal digests, equal rings. */
uint64_t repl_view_digest(const struct wire_member *sorted, size_t n);
/* The digest of this node's view, as last set. */
uint64_t repl_digest(const struct repl *r);
/* The rings a write must reach a quorum of: the read ring first, then one
 * per member whose phase is changing. @retval how many (at most cap). */
size_t repl_write_rings(const struct repl *r, const struct ring **out,
                        size_t cap);

int repl_ring_info(struct repl *r, struct msg_ring *out);
void repl_ring_free(struct msg_ring *ring);

#endif
