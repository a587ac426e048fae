/* topo: ownership changes, sans I/O (DESIGN §7b). Private to node/.
 *
 * A change moves one member's ring phase: a node joins (waiting, joining,
 * joined, normal), a node is decommissioned (normal, leaving, left, gone)
 * or a dead one is removed (the same phases, set for it by another node).
 * Phases are gossiped with the member's record; repl turns them into rings
 * (a write reaches a quorum on the rings of both sides of the change, a
 * read asks the read ring). This module drives the change:
 *
 *   1. set the first phase (joining or leaving) and wait until every live
 *      member's ring digest equals ours (agreement);
 *   2. stream each range whose replicas change to its new replica: from
 *      the replica it displaces when that one is up, else from every
 *      surviving replica, in token order, in batches checked against their
 *      value checksums, throttled to --stream-mb-s;
 *   3. agree again, then flip who is read (joined or left), agree, and end
 *      (normal, or gone).
 *
 * A change goes only when no other member is changing, and a step that
 * flips who is read only when no member with a lower id is changing and
 * none has flipped: so two changes never flip reads at once, and a second
 * change waits or is refused with the name of the one in the way. A
 * joining node drives its own join, a leaving node its decommission, and
 * the live normal member with the lowest id drives a removal; after a
 * crash the driver starts its change's streams again (records already
 * there are kept: the newer version wins). */
#ifndef ESSAIM_NODE_TOPO_H
#define ESSAIM_NODE_TOPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "env.h"
#include "membership.h"
#include "repl.h"

/* storage_write.tag of the writes a stream submits. */
#define TOPO_WRITE_TAG 2

struct topo_config {
    struct ring_placement placement; /* as repl's */
    unsigned vnodes;                 /* as repl's */
    uint64_t stream_bytes_s;         /* throttle (--stream-mb-s); 0: none */
    uint32_t batch_bytes;            /* records per scan */
    uint32_t poll_ms;                /* agreement rounds */
    uint32_t io_timeout_ms; /* a scan or store must be answered within */
    uint32_t retry_ms;      /* first backoff; doubles up to 64 times it */
    uint32_t stall_ms;      /* a decommission or removal that makes no
                               progress this long is undone */
    bool replace;           /* kvnode --replace: join, then remove replace_id */
    uint8_t replace_id[CRYPTO_NODE_ID_BYTES];
    uint32_t takeover_ms; /* a member dead this long in the middle of
                             its change has it ended by another; a
                             removal starts this long after removenode */
};

void topo_config_defaults(struct topo_config *cfg);

struct topo_counters {
    uint64_t changes_done;
    uint64_t ranges_total, ranges_done; /* of the change driven here */
    uint64_t records_in, bytes_in;      /* stored here from streams */
    uint64_t records_out, bytes_out;    /* sent by scans from here */
    uint64_t corrupt;                   /* records refused: bad checksum */
    uint64_t retries;
    uint64_t resumed; /* changes taken up from saved progress */
};

struct topo;

struct topo *topo_new(const struct topo_config *cfg, const struct env *env,
                      const uint8_t self[CRYPTO_NODE_ID_BYTES],
                      struct membership *m, struct repl *r);
void topo_free(struct topo *t);

/* Call every CORE_TICK_MS, after repl has the view: starts, advances and
 * ends changes. joined: membership_joined. */
void topo_tick(struct topo *t, bool joined);

/* An MSG_STREAM or MSG_STREAM_ANSWER from another node. */
void topo_on_peer_message(struct topo *t,
                          const uint8_t from[CRYPTO_NODE_ID_BYTES],
                          const struct msg *m);

/* A write tagged TOPO_WRITE_TAG came back (it is freed here). */
void topo_on_stored(struct topo *t, struct storage_write *w);

void topo_on_peer_down(struct topo *t, const uint8_t id[CRYPTO_NODE_ID_BYTES]);

/* kvcli decommission (this node leaves) or removenode (node, dead). The
 * progress and the outcome go to client as MSG_REPAIR_RESULT with id.
 * @retval 0 started; else a kv_err, and *why says what is in the way (a
 * static string, or one in buf). */
int topo_request(struct topo *t, void *client, uint64_t id,
                 const struct msg_topo *q, char *buf, size_t cap);

void topo_client_gone(struct topo *t, void *client);

/* True once a decommission has ended and this node is gone: the driver
 * stops it. */
bool topo_gone(const struct topo *t);

/* Why what this node was told to do cannot be done (--replace naming a
 * member that is alive or unknown), or NULL: the driver stops it. */
const char *topo_failed(const struct topo *t);

/* True while stream writes are in flight here. */
bool topo_busy(const struct topo *t);

const struct topo_counters *topo_counters(const struct topo *t);

/* "joining 12/40 ranges" and the like, for kvcli status; "" when idle. */
const char *topo_state(const struct topo *t);

#endif
