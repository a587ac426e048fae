/* A fake event loop: virtual time, a seeded PRNG and an event heap ordered
 * by (time, sequence number), so events at the same millisecond run in the
 * order they were scheduled and a run depends on nothing but its seed. Every
 * event the owner chooses to record goes into a BLAKE2b trace, so two runs
 * can be compared event for event (FoundationDB's habit; Tarantool's
 * test/unit/fakeev.c is the same idea without the trace). */
#ifndef ESSAIM_FAKE_LOOP_H
#define ESSAIM_FAKE_LOOP_H

#include <sodium.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An event: when, and what its owner makes of it. bytes, when set, belongs
 * to the event and is freed after it runs (or with the loop). */
struct fake_event {
    uint64_t at, seq;
    int kind; /* the owner's; a negative kind is a cancelled event */
    size_t node, src;
    uint64_t gen;
    uint8_t *bytes;
    size_t len;
    void *ptr;
};

struct fake_loop {
    uint64_t now, next_seq, rng;
    struct fake_event *heap;
    size_t n, cap;
    crypto_generichash_state trace;
};

/* splitmix64: small, fast, and good enough to drive a simulation. */
uint64_t fake_splitmix64(uint64_t *x);

void fake_loop_init(struct fake_loop *l, uint64_t seed);
void fake_loop_free(struct fake_loop *l);

uint64_t fake_loop_rand(struct fake_loop *l);
double fake_loop_uniform(struct fake_loop *l); /* in [0, 1) */

/* Schedules e (its seq is assigned here). */
void fake_loop_push(struct fake_loop *l, struct fake_event e);

/* Runs every event due at or before t, in order, through run(arg, e) with
 * now at the event's time, then sets now to t. Events run may push more. */
void fake_loop_run_until(struct fake_loop *l, uint64_t t,
                         void (*run)(void *arg, struct fake_event *e),
                         void *arg);

/* The events not run yet, in no particular order: the owner may cancel one
 * (kind = -1) or take its ptr. */
size_t fake_loop_pending(const struct fake_loop *l);
struct fake_event *fake_loop_event(struct fake_loop *l, size_t i);

/* Adds bytes to the trace, and its BLAKE2b-256 so far, hex (65 bytes). */
void fake_loop_trace(struct fake_loop *l, const void *p, size_t n);
void fake_loop_trace_hex(const struct fake_loop *l, char out[65]);

#endif
