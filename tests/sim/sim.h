/* The deterministic simulator: many essaim nodes in one process, each the
 * node core kvnode runs (node/core.c: membership, replication, anti-entropy
 * and the wiring between them, stop and drain included) over virtual time, a
 * seeded PRNG, an in-memory store (tests/fake/store.c) and an in-memory
 * network that drops, delays, duplicates, reorders and partitions (DESIGN
 * §3). The same seed gives the same run, event for event; a failing test
 * prints its seed. */
#ifndef ESSAIM_SIM_H
#define ESSAIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../../node/membership.h"
#include "../../node/repl.h"

struct sim;

/* The seed a test runs with: $SIM_SEED when set (to replay a failure), else
 * the test's own. */
static inline uint64_t sim_seed(uint64_t fallback)
{
    const char *e = getenv("SIM_SEED");
    return e ? strtoull(e, NULL, 10) : fallback;
}

/* Runs fn over seeds first .. first+n-1, or only over $SIM_SEED when set;
 * returns how many runs fn counted (its return value summed). */
static inline unsigned sim_each_seed(uint64_t first, unsigned n,
                                     unsigned (*fn)(uint64_t seed))
{
    const char *e = getenv("SIM_SEED");
    if (e)
        return fn(strtoull(e, NULL, 10));
    unsigned sum = 0;
    for (uint64_t seed = first; seed < first + n; seed++)
        sum += fn(seed);
    return sum;
}

/* In a cmocka test: fails it, printing the seed that replays it. */
#define SIM_ASSERT(cond, seed, ...)                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            print_error("sim: seed %llu (replay: SIM_SEED=%llu): ",            \
                        (unsigned long long)(seed),                            \
                        (unsigned long long)(seed));                           \
            print_error(__VA_ARGS__);                                          \
            print_error("\n");                                                 \
            fail();                                                            \
        }                                                                      \
    } while (0)

/* splitmix64: the simulator's PRNG, for tests that draw their own stream. */
uint64_t sim_splitmix64(uint64_t *x);

struct sim_stats {
    uint64_t udp_msgs, udp_bytes;   /* sent, before any loss */
    uint64_t sync_msgs, sync_bytes; /* push-pull over the stream channel */
    uint64_t dropped;               /* lost, partitioned or to a crashed node */
    uint64_t false_dead;            /* a node declared a running node dead */
    uint64_t false_suspect;         /* a node suspected a running node */
    uint64_t status_changes;
    uint64_t repl_msgs; /* replica messages sent */
    /* bytes between nodes of different regions: everything, and replica
     * and anti-entropy messages alone */
    uint64_t wan_bytes, wan_node_bytes;
};

/* Creates n nodes (not started) with the given membership settings. */
struct sim *sim_new(uint64_t seed, size_t n, const struct membership_config *c);
void sim_free(struct sim *s);

/* Network faults. Loss applies to datagrams; delays to everything (a jitter
 * larger than the gap between two messages reorders them). */
void sim_set_loss(struct sim *s, double p);
void sim_set_dup(struct sim *s, double p);
void sim_set_delay(struct sim *s, uint32_t min_ms, uint32_t jitter_ms);
/* Places node i (before it starts; the default is region r(i%2), zone
 * z(i%3)). Nodes in the same region talk at the base delay; see
 * sim_set_wan for the others. */
void sim_set_place(struct sim *s, size_t i, const char *region,
                   const char *zone);
/* Messages between regions a and b (both ways) take one_way_ms more, plus
 * up to jitter_ms. */
void sim_set_wan(struct sim *s, const char *a, const char *b,
                 uint32_t one_way_ms, uint32_t jitter_ms);
/* Extra delay on every message to or from node i (0: none). */
void sim_set_slow(struct sim *s, size_t i, uint32_t extra_ms);
/* group[i] is node i's side; messages between sides are lost. NULL heals. */
void sim_partition(struct sim *s, const int *group);
/* Also cuts traffic for which fn(arg, from, to, datagram) is true, until
 * sim_clear_filters (tests/fake/net.h). */
void sim_add_filter(struct sim *s,
                    bool (*fn)(void *arg, size_t from, size_t to,
                               bool datagram),
                    void *arg);
void sim_clear_filters(struct sim *s);

/* Starts node i, joining through the given seed nodes (none: alone). */
void sim_start(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds);
/* Stops node i without a word (kill -9): its state is lost. */
void sim_crash(struct sim *s, size_t i);
/* Starts a crashed node again with the same identity and an empty view. */
void sim_restart(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds);
/* Node i stops as kvnode does on SIGTERM: it announces its leave, refuses
 * new requests, finishes those in flight and exits once its core has
 * drained (at once when nothing is in flight). */
void sim_leave(struct sim *s, size_t i);
/* True while node i has been told to leave and has not drained yet. */
bool sim_draining(const struct sim *s, size_t i);

/* Runs events until virtual time t (ms). */
void sim_run_until(struct sim *s, uint64_t t);
void sim_run_for(struct sim *s, uint64_t ms);
uint64_t sim_now(const struct sim *s);

bool sim_running(const struct sim *s, size_t i);
struct membership *sim_node(struct sim *s, size_t i);

/* The status node a's view holds for node b, or -1 if a does not know b. */
int sim_status(struct sim *s, size_t a, size_t b);

/* True when every running node sees exactly the running nodes alive and
 * every other node it knows as dead or left, and knows every running node. */
bool sim_converged(struct sim *s);

const struct sim_stats *sim_stats(const struct sim *s);

/* ---- replication (node/repl.c) on top of membership ---- */

/* Gives every node a coordinator and replica with an in-memory store that
 * survives crashes (what was durably stored stays). Call before starting
 * nodes. Replica messages travel like stream messages: never lost to
 * datagram loss, but cut by partitions and crashes, and then the sender
 * learns the link failed. */
void sim_enable_repl(struct sim *s, const struct repl_config *rc);

/* A client request and, once done, its answer. */
struct sim_op {
    bool done;
    int code;
    uint64_t version;
    uint8_t value[64];
    size_t value_len;
    char text[160];       /* the answer's text, cut to fit */
    uint64_t session_hlc; /* the client's clock: sent, then merged */
};

/* Sends a put (MSG_PUT), get, del or where to node i on behalf of a client
 * whose session clock is op->session_hlc. @retval false: i is not running. */
bool sim_request(struct sim *s, size_t i, uint8_t type, const char *key,
                 const char *value, int consistency, struct sim_op *op);

/* Node i's wall clock runs skew_ms ahead (negative: behind). */
void sim_set_skew(struct sim *s, size_t i, int64_t skew_ms);

/* What node i has stored for key. @retval false: nothing. */
bool sim_stored(struct sim *s, size_t i, const char *key, uint64_t *version);

/* Hints node i holds. */
size_t sim_hints(struct sim *s, size_t i);

/* The node's identity as members see it. */
const struct wire_member *sim_member(struct sim *s, size_t i);

/* Starts every node, each joining through node 0, 10 ms apart, then runs
 * 20 s for the view to settle. */
void sim_start_all(struct sim *s);

/* ---- anti-entropy (node/ae.h) ---- */

struct ae_config;
struct ae;

/* Every node started from now on runs anti-entropy with ac (as it runs repl,
 * which sim_enable_repl must turn on first). */
void sim_enable_ae(struct sim *s, const struct ae_config *ac);

/* Every write on node i fails with code (KV_ERR_FULL, KV_ERR_IO) from now
 * on; 0: writes succeed again. */
void sim_store_fail(struct sim *s, size_t i, int code);

/* Node i loses its store (a lost data directory); crash it first. */
void sim_wipe(struct sim *s, size_t i);

/* The outcome of a repair forced with sim_repair. */
struct sim_repair {
    bool done;
    int code;
    uint64_t pulled, pushed, bytes;
};

/* kvcli repair on node i (range -1: all). @retval false: not running. */
bool sim_repair(struct sim *s, size_t i, int range, struct sim_repair *r);

/* ---- ownership changes (node/topo.h, DESIGN §7b) ---- */

/* Starts node i as a new node joining a cluster that holds data: it waits
 * for its turn, streams the ranges it will own, then is read. */
void sim_join(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds);

/* Streams of nodes started from now on go at bytes_s in batches of
 * batch bytes (--stream-mb-s), so that a test can crash one midway. */
void sim_set_stream(struct sim *s, uint64_t bytes_s, uint32_t batch);

/* kvcli decommission on node i (r->done and r->code once it ends; at once
 * when refused). @retval false: i is not running. */
bool sim_decommission(struct sim *s, size_t i, bool force,
                      struct sim_repair *r);

/* kvcli removenode victim, sent to node i. */
bool sim_removenode(struct sim *s, size_t i, size_t victim,
                    struct sim_repair *r);

/* Damages key's stored value on node i (its checksum no longer fits).
 * @retval false: node i holds no such record. */
bool sim_corrupt(struct sim *s, size_t i, const char *key);

/* Node i's stored value of key, up to cap bytes into out. @retval its
 * length, or SIZE_MAX when node i holds none. */
size_t sim_value(struct sim *s, size_t i, const char *key, uint8_t *out,
                 size_t cap);

/* The ring phase of node b in node a's view (-1: a is down or does not
 * know b). */
int sim_phase(struct sim *s, size_t a, size_t b);

/* Node i's anti-entropy (NULL while down). */
struct ae *sim_ae(struct sim *s, size_t i);

/* Node i's core (NULL while down), and the env it acts through. */
struct core;
struct env;
struct core *sim_core(struct sim *s, size_t i);
const struct env *sim_env(struct sim *s, size_t i);

/* The nodes key belongs on, as node i's ring says (at most max). */
size_t sim_replicas_of(struct sim *s, size_t i, const char *key, size_t *out,
                       size_t max);

/* BLAKE2b-256 of the event trace so far (every delivery and every status
 * change, with its time), hex-encoded into out (65 bytes). */
void sim_trace_hex(struct sim *s, char out[65]);

#endif
