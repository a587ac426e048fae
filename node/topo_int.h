/* topo's private parts, shared by its two files (topo.h):
 *
 *   topo.c         phases, agreement, who drives what, requests, the tick
 *   topo_stream.c  plans, streams, progress, hints handed on, the messages
 *
 * Private to node/topo*.c. */
#ifndef ESSAIM_NODE_TOPO_INT_H
#define ESSAIM_NODE_TOPO_INT_H

#include "topo.h"

#include "../common/common.h"
#include "ring.h"

#include <string.h>

#define ID_BYTES CRYPTO_NODE_ID_BYTES
#define LKEY STORAGE_LKEY_BYTES
#define SUM STORAGE_CHECKSUM_BYTES

enum kind { CH_NONE, CH_JOIN, CH_DECOMMISSION, CH_REMOVE };

#define MAX_LEAVING 16
enum step { S_AGREE_A, S_STREAM, S_HINTS, S_AGREE_B, S_AGREE_C };

struct task {
    uint64_t first, last; /* tokens, inclusive */
    uint8_t source[ID_BYTES], target[ID_BYTES];
    uint8_t after[LKEY];
    bool has_after, done;
};

/* A batch a target stores for a driver (STREAM_STORE), or this node's own
 * share of a stream it drives. */
struct store_req {
    bool local;    /* the driver is this node */
    bool hint_del; /* local: hints handed on, deleted here */
    uint8_t op;    /* remote: the request's (STREAM_STORE, STREAM_HINTS) */
    uint8_t from[ID_BYTES];
    uint64_t id;
    size_t open;
    int code;
};

struct topo_write {
    struct storage_write w;
    struct store_req *req;
    uint8_t data[]; /* key, then value */
};

struct topo {
    struct topo_config cfg;
    struct env env;
    uint8_t self[ID_BYTES];
    struct membership *m;
    struct repl *r;
    struct topo_counters counters;
    bool gone;
    size_t inflight; /* stream writes */

    /* the change this node drives */
    uint8_t kind, step;
    uint8_t subject[ID_BYTES];
    uint8_t p1, p2; /* its phases: joining/joined or leaving/left */
    void *client;
    uint64_t client_id;
    uint64_t next_progress;
    struct task *tasks;
    size_t n_tasks, cap, cur;
    struct ring *before;    /* the read ring before the change, as planned */
    uint64_t last_progress; /* a batch stored, or a step agreed */
    bool progress_dirty;    /* a batch moved since the progress was saved */
    uint64_t throttle_start, throttle_bytes; /* streamed since the start */
    uint64_t progress_at;                    /* when it was last saved */

    /* agreement rounds */
    uint64_t round_id, round_digest, round_end, next_round;
    size_t round_want, round_same, round_got;
    bool round_other; /* someone answered with another digest */

    /* the stream I/O in progress: one request at a time */
    bool io_busy;
    uint64_t io_id, io_deadline, next_io, backoff;
    uint8_t io_peer[ID_BYTES];
    size_t io_bytes, io_records;
    uint8_t io_last[LKEY];
    bool io_more;
    struct store_req *io_local; /* this node stores the batch */
    /* a decommission's hints being handed on */
    struct storage_record *hint_recs;
    size_t n_hint_recs;
    uint8_t hint_owner[ID_BYTES];
    uint64_t hints_handed;

    /* a removenode asked here, driven wherever */
    uint8_t watch_id[ID_BYTES];
    void *watch_client;
    uint64_t watch_client_id, watch_next;

    bool replace_checked;
    char failed[200];

    /* members seen leaving while alive: decommissions, not removals */
    uint8_t leaving[MAX_LEAVING][ID_BYTES];
    size_t n_leaving;

    uint8_t start_phase; /* this node's own, as it started */
    bool decommissioned; /* kvcli decommission began here */

    uint64_t next_id;
    char state[96];
};

static inline uint64_t now(const struct topo *t)
{
    return t->env.now_ms(t->env.ctx);
}

static inline bool is_self(const struct topo *t, const uint8_t *id)
{
    return memcmp(t->self, id, ID_BYTES) == 0;
}

static inline bool live(uint8_t status)
{
    return status == MEMBER_ALIVE || status == MEMBER_SUSPECT;
}

static inline bool changing(uint8_t phase)
{
    return phase == RING_JOINING || phase == RING_JOINED ||
           phase == RING_LEAVING || phase == RING_LEFT;
}

static inline bool flipped(uint8_t phase)
{
    return phase == RING_JOINED || phase == RING_LEFT;
}

static inline const struct wire_member *member(struct topo *t,
                                               const uint8_t *id)
{
    const struct member_view *v = membership_find(t->m, id);
    return v ? &v->info : NULL;
}

static inline bool up(struct topo *t, const uint8_t *id)
{
    const struct wire_member *w = member(t, id);
    return is_self(t, id) || (w && live(w->status));
}

static inline void send(struct topo *t, const uint8_t *to, struct msg *m)
{
    t->env.send(t->env.ctx, to, m);
}

/* ---- topo.c ---- */

void topo_start_round(struct topo *t);

/* ---- topo_stream.c ---- */

int topo_plan(struct topo *t);
void topo_restore_progress(struct topo *t);
void topo_save_progress(struct topo *t);
void topo_put_progress(struct topo *t, const uint8_t *blob, size_t n);
void topo_pump(struct topo *t);
void topo_hints_pump(struct topo *t);
void topo_hints_free(struct topo *t);
void topo_io_failed(struct topo *t, const char *what);

#endif
