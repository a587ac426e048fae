/* The deterministic simulator: many essaim nodes in one process, running the
 * real protocol code (node/membership.c) over virtual time, a seeded PRNG
 * and an in-memory network that drops, delays, duplicates, reorders and
 * partitions (DESIGN §3). The same seed gives the same run, event for event;
 * a failing test prints its seed. */
#ifndef ESSAIM_SIM_H
#define ESSAIM_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../node/membership.h"

struct sim;

struct sim_stats {
    uint64_t udp_msgs, udp_bytes;   /* sent, before any loss */
    uint64_t sync_msgs, sync_bytes; /* push-pull over the stream channel */
    uint64_t dropped;               /* lost, partitioned or to a crashed node */
    uint64_t false_dead;            /* a node declared a running node dead */
    uint64_t status_changes;
};

/* Creates n nodes (not started) with the given membership settings. */
struct sim *sim_new(uint64_t seed, size_t n, const struct membership_config *c);
void sim_free(struct sim *s);

/* Network faults. Loss applies to datagrams; delays to everything (a jitter
 * larger than the gap between two messages reorders them). */
void sim_set_loss(struct sim *s, double p);
void sim_set_dup(struct sim *s, double p);
void sim_set_delay(struct sim *s, uint32_t min_ms, uint32_t jitter_ms);
/* Extra delay on every message to or from node i (0: none). */
void sim_set_slow(struct sim *s, size_t i, uint32_t extra_ms);
/* group[i] is node i's side; messages between sides are lost. NULL heals. */
void sim_partition(struct sim *s, const int *group);

/* Starts node i, joining through the given seed nodes (none: alone). */
void sim_start(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds);
/* Stops node i without a word (kill -9): its state is lost. */
void sim_crash(struct sim *s, size_t i);
/* Starts a crashed node again with the same identity and an empty view. */
void sim_restart(struct sim *s, size_t i, const size_t *seeds, size_t n_seeds);
/* Node i leaves gracefully, then stops after one period. */
void sim_leave(struct sim *s, size_t i);

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

/* BLAKE2b-256 of the event trace so far (every delivery and every status
 * change, with its time), hex-encoded into out (65 bytes). */
void sim_trace_hex(struct sim *s, char out[65]);

#endif
