/* The node core's own rules in the simulator: how a node stops. A stopping
 * node answers what it took, refuses what comes after, exits once drained,
 * and a node killed in the middle of its drain loses no acknowledged write.
 * SIM_SEED=N replays a run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/common.h"
#include "sim.h"

#define N_NODES 5
#define SEEDS 40

struct write {
    char key[24], value[24];
    struct sim_op op;
    bool sent;
};

/* Five nodes with WAN-like latency, so that writes are in flight for tens of
 * milliseconds: a stop always finds something to drain. */
static struct sim *cluster(uint64_t seed)
{
    struct membership_config mc;
    membership_config_defaults(&mc);
    struct repl_config rc;
    repl_config_defaults(&rc);
    rc.request_timeout_ms = 2000;
    struct sim *s = sim_new(seed, N_NODES, &mc);
    sim_set_delay(s, 15, 10);
    sim_enable_repl(s, &rc);
    sim_start_all(s);
    return s;
}

static bool acked(const struct write *w)
{
    return w->sent && w->op.done && w->op.code == 0;
}

/* Reads every acknowledged write back at quorum through nodes other than
 * `avoid`, and fails the test on any that is missing or wrong. */
static void read_back(struct sim *s, uint64_t seed, struct write *w, size_t n,
                      size_t avoid)
{
    struct sim_op *rd = calloc(n, sizeof(*rd));
    assert_non_null(rd);
    for (size_t i = 0; i < n; i++)
        if (acked(&w[i]))
            assert_true(
                sim_request(s, (avoid + 1 + i % (N_NODES - 1)) % N_NODES,
                            MSG_GET, w[i].key, NULL, CONS_QUORUM, &rd[i]));
    sim_run_for(s, 5000);
    for (size_t i = 0; i < n; i++) {
        if (!acked(&w[i]))
            continue;
        SIM_ASSERT(rd[i].done && rd[i].code == 0, seed,
                   "acknowledged %s read back with code %d", w[i].key,
                   rd[i].code);
        SIM_ASSERT(rd[i].value_len == strlen(w[i].value) &&
                       memcmp(rd[i].value, w[i].value, rd[i].value_len) == 0,
                   seed, "%s read back a wrong value", w[i].key);
    }
    free(rd);
}

#define BURST 60

static unsigned stop_drains(uint64_t seed)
{
    struct sim *s = cluster(seed);
    const size_t leaver = seed % N_NODES;
    struct write w[BURST + 1];
    memset(w, 0, sizeof(w));
    for (size_t i = 0; i < BURST; i++) {
        snprintf(w[i].key, sizeof(w[i].key), "d%zu", i);
        snprintf(w[i].value, sizeof(w[i].value), "v%zu", i);
        w[i].sent = sim_request(s, leaver, MSG_PUT, w[i].key, w[i].value,
                                CONS_QUORUM, &w[i].op);
        assert_true(w[i].sent);
    }
    sim_run_for(s, 1);
    sim_leave(s, leaver);
    SIM_ASSERT(sim_draining(s, leaver), seed,
               "node %zu exited with %d writes in flight", leaver, BURST);
    /* A request after the stop is refused at once, as the service does. */
    snprintf(w[BURST].key, sizeof(w[BURST].key), "late");
    snprintf(w[BURST].value, sizeof(w[BURST].value), "late");
    w[BURST].sent = sim_request(s, leaver, MSG_PUT, w[BURST].key,
                                w[BURST].value, CONS_QUORUM, &w[BURST].op);
    SIM_ASSERT(w[BURST].op.done && w[BURST].op.code == KV_ERR_UNAVAILABLE, seed,
               "a put to a stopping node got code %d (done %d)",
               w[BURST].op.code, w[BURST].op.done);
    for (int t = 0; t < 300 && sim_running(s, leaver); t++)
        sim_run_for(s, 10);
    SIM_ASSERT(!sim_running(s, leaver), seed,
               "node %zu still running 3 s after its stop", leaver);
    /* What it took before the stop was answered before it exited. */
    size_t n_acked = 0;
    for (size_t i = 0; i < BURST; i++) {
        SIM_ASSERT(w[i].op.done, seed, "%s never answered", w[i].key);
        n_acked += acked(&w[i]);
    }
    SIM_ASSERT(n_acked == BURST, seed,
               "only %zu of %d writes acknowledged with every node up", n_acked,
               BURST);
    sim_run_for(s, 3000);
    for (size_t i = 0; i < N_NODES; i++)
        if (i != leaver)
            /* A stop is down, not gone (DESIGN §7): it keeps its ranges. */
            SIM_ASSERT(sim_status(s, i, leaver) == MEMBER_DEAD, seed,
                       "node %zu sees the stopped node as %d", i,
                       sim_status(s, i, leaver));
    read_back(s, seed, w, BURST, leaver);
    sim_free(s);
    return 1;
}

static void test_a_stopping_node_answers_what_it_took_then_exits(void **state)
{
    (void)state;
    sim_each_seed(1, SEEDS, stop_drains);
}

#define WRITES 400

/* Writes through every node, every 2 ms; the leaver is told to stop in the
 * middle and killed a few ms later while it still drains, then restarted.
 * Returns 1 when the kill landed inside the drain. */
static unsigned kill_mid_drain(uint64_t seed)
{
    struct sim *s = cluster(seed);
    uint64_t x = seed ^ 0xd4a1;
    const size_t leaver = sim_splitmix64(&x) % N_NODES;
    const size_t stop_at = WRITES / 4 + sim_splitmix64(&x) % (WRITES / 2);
    const uint64_t kill_after = sim_splitmix64(&x) % 30;
    struct write *w = calloc(WRITES, sizeof(*w));
    assert_non_null(w);
    bool killed_draining = false, stopped = false;
    uint64_t stop_time = 0;
    for (size_t i = 0; i < WRITES; i++) {
        if (i == stop_at) {
            sim_leave(s, leaver);
            stopped = true;
            stop_time = sim_now(s);
        }
        if (stopped && !killed_draining && sim_draining(s, leaver) &&
            sim_now(s) >= stop_time + kill_after) {
            sim_crash(s, leaver); /* kill -9 in the middle of the drain */
            killed_draining = true;
        }
        snprintf(w[i].key, sizeof(w[i].key), "k%zu", i);
        snprintf(w[i].value, sizeof(w[i].value), "v%zu-%llu", i,
                 (unsigned long long)seed);
        size_t via = i % N_NODES;
        if (sim_running(s, via))
            w[i].sent = sim_request(s, via, MSG_PUT, w[i].key, w[i].value,
                                    CONS_QUORUM, &w[i].op);
        sim_run_for(s, 2);
    }
    /* The operator starts it again; hints and read repair do the rest. */
    if (!sim_running(s, leaver)) {
        size_t seeds[N_NODES - 1], n = 0;
        for (size_t i = 0; i < N_NODES; i++)
            if (i != leaver)
                seeds[n++] = i;
        sim_restart(s, leaver, seeds, n);
    }
    sim_run_for(s, 30000);
    size_t n_acked = 0;
    for (size_t i = 0; i < WRITES; i++)
        n_acked += acked(&w[i]);
    SIM_ASSERT(n_acked > WRITES / 2, seed, "only %zu of %d writes acknowledged",
               n_acked, WRITES);
    read_back(s, seed, w, WRITES, leaver);
    free(w);
    sim_free(s);
    return killed_draining;
}

static void
test_a_node_killed_mid_drain_loses_no_acknowledged_write(void **state)
{
    (void)state;
    if (getenv("SIM_SEED")) {
        sim_each_seed(0, 0, kill_mid_drain);
        return;
    }
    unsigned mid = sim_each_seed(1, SEEDS, kill_mid_drain);
    /* The premise: most kills land while the leaver still drains. */
    print_message("      %u of %d kills landed inside a drain\n", mid, SEEDS);
    assert_true(mid >= SEEDS / 2);
}

/* A node restarted with its wall clock 10 s behind still stamps new writes
 * above the ones it stamped before: its clock restarts above the highest
 * version its store holds. One node alone, so that no peer's clock can
 * carry it forward; a new client (no session clock) reads the later write
 * back. */
static unsigned clock_behind(uint64_t seed)
{
    struct membership_config mc;
    membership_config_defaults(&mc);
    struct repl_config rc;
    repl_config_defaults(&rc);
    struct sim *s = sim_new(seed, 1, &mc);
    sim_enable_repl(s, &rc);
    sim_start(s, 0, NULL, 0);
    sim_run_for(s, 1000);
    struct sim_op w1 = {0}, w2 = {0}, rd = {0};
    assert_true(sim_request(s, 0, MSG_PUT, "k", "before", CONS_QUORUM, &w1));
    sim_run_for(s, 100);
    SIM_ASSERT(w1.done && w1.code == 0, seed, "first write: %d", w1.code);
    sim_crash(s, 0);
    sim_set_skew(s, 0, -10000);
    sim_start(s, 0, NULL, 0);
    sim_run_for(s, 1000);
    assert_true(sim_request(s, 0, MSG_PUT, "k", "after", CONS_QUORUM, &w2));
    sim_run_for(s, 100);
    SIM_ASSERT(w2.done && w2.code == 0, seed, "second write: %d", w2.code);
    SIM_ASSERT(w2.version > w1.version, seed,
               "restarted 10 s behind, it stamped %llu below %llu",
               (unsigned long long)w2.version, (unsigned long long)w1.version);
    assert_true(sim_request(s, 0, MSG_GET, "k", NULL, CONS_QUORUM, &rd));
    sim_run_for(s, 100);
    SIM_ASSERT(rd.done && rd.code == 0 && rd.value_len == 5 &&
                   memcmp(rd.value, "after", 5) == 0,
               seed, "the later write was not read back (code %d)", rd.code);
    sim_free(s);
    return 1;
}

static void
test_a_node_restarted_with_its_clock_behind_stamps_above(void **state)
{
    (void)state;
    sim_each_seed(101, SEEDS, clock_behind);
}

int main(void)
{
    assert_true(sodium_init() >= 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_stopping_node_answers_what_it_took_then_exits),
        cmocka_unit_test(
            test_a_node_killed_mid_drain_loses_no_acknowledged_write),
        cmocka_unit_test(
            test_a_node_restarted_with_its_clock_behind_stamps_above),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
