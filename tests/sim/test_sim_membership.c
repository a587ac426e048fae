/* Membership in the deterministic simulator: many nodes, faults, seeds.
 * Every test prints its seed; SIM_SEED=N reruns with that seed, event for
 * event, and SIM_TEST=PATTERN runs only the tests whose names match
 * (SIM_DEBUG=1 prints every status change). */
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

static struct membership_config cfg(void)
{
    struct membership_config c;
    membership_config_defaults(&c);
    return c;
}

/* Starts node 0, then nodes 1..n-1 joining through node 0. */
static void start_all(struct sim *s, size_t n)
{
    size_t seed0 = 0;
    sim_start(s, 0, NULL, 0);
    for (size_t i = 1; i < n; i++) {
        sim_run_for(s, 10);
        sim_start(s, i, &seed0, 1);
    }
}

/* Runs whole periods until converged; returns the periods taken, or
 * max + 1. */
static unsigned run_until_converged(struct sim *s, unsigned max)
{
    for (unsigned p = 1; p <= max; p++) {
        sim_run_for(s, 1000);
        if (sim_converged(s))
            return p;
    }
    return max + 1;
}

/* A cluster of n nodes joined through node 0 that agrees on one view. */
static struct sim *converged(uint64_t seed, size_t n,
                             const struct membership_config *c)
{
    struct sim *s = sim_new(seed, n, c);
    start_all(s, n);
    SIM_ASSERT(run_until_converged(s, 60) <= 60, seed, "no convergence");
    return s;
}

static void test_100_nodes_through_one_seed_reach_one_view(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(1001);
    struct membership_config c = cfg();
    struct sim *s = sim_new(seed, 100, &c);
    start_all(s, 100);
    unsigned periods = run_until_converged(s, 120);
    printf("sim: 100 nodes joined through one seed converged in %u periods "
           "(seed %llu)\n",
           periods, (unsigned long long)seed);
    SIM_ASSERT(periods <= 120, seed,
               "no single complete view after 120 "
               "periods");
    for (size_t i = 0; i < 100; i++)
        SIM_ASSERT(membership_size(sim_node(s, i)) == 100, seed,
                   "node %zu knows %zu members", i,
                   membership_size(sim_node(s, i)));
    SIM_ASSERT(sim_stats(s)->false_dead == 0, seed, "false deaths");
    sim_free(s);
}

/* The bound the configured timeouts give for a crash to be known dead
 * everywhere: a full probe round of one member, the end of that probe, the
 * longest suspicion, the last-chance ping (at the worst local health), and
 * the spread of the news (λ·log periods). */
static uint64_t crash_bound_ms(const struct membership_config *c, size_t n,
                               uint64_t max_suspicion)
{
    uint64_t spread = (uint64_t)c->retransmit_mult * 4 * c->period_ms;
    uint64_t last_chance = (uint64_t)c->ack_timeout_ms * c->lhm_max;
    return (uint64_t)(n + 1) * c->period_ms + max_suspicion + last_chance +
           spread;
}

static void test_crashed_node_is_declared_dead_within_bound(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(2002);
    struct membership_config c = cfg();
    const size_t n = 20, victim = 7;
    struct sim *s = converged(seed, n, &c);
    uint64_t max_susp = membership_suspicion_timeout(sim_node(s, 0), 0);
    uint64_t bound = crash_bound_ms(&c, n, max_susp);
    sim_crash(s, victim);
    uint64_t t0 = sim_now(s), took = 0;
    while (sim_now(s) - t0 <= bound) {
        sim_run_for(s, 100);
        bool all = true;
        for (size_t i = 0; i < n; i++)
            if (i != victim && sim_status(s, i, victim) != MEMBER_DEAD)
                all = false;
        if (all) {
            took = sim_now(s) - t0;
            break;
        }
    }
    printf("sim: crash of 1 in %zu known dead everywhere after %llu ms "
           "(bound %llu ms, seed %llu)\n",
           n, (unsigned long long)took, (unsigned long long)bound,
           (unsigned long long)seed);
    SIM_ASSERT(took > 0, seed,
               "not every node declared the crash dead "
               "within %llu ms",
               (unsigned long long)bound);
    SIM_ASSERT(sim_stats(s)->false_dead == 0, seed, "false deaths");
    sim_free(s);
}

static void test_slow_node_is_not_declared_dead(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(3003);
    struct membership_config c = cfg();
    const size_t n = 10, slow = 3;
    struct sim *s = converged(seed, n, &c);
    /* 450 ms each way: every answer to or from it misses the 500 ms ack
     * timeout, for 30 s. */
    sim_set_slow(s, slow, 450);
    sim_run_for(s, 30000);
    sim_set_slow(s, slow, 0);
    sim_run_for(s, 30000);
    printf("sim: slow node: %llu false deaths, %llu status changes "
           "(seed %llu)\n",
           (unsigned long long)sim_stats(s)->false_dead,
           (unsigned long long)sim_stats(s)->status_changes,
           (unsigned long long)seed);
    SIM_ASSERT(sim_stats(s)->false_dead == 0, seed,
               "a slow node was declared dead");
    SIM_ASSERT(sim_converged(s), seed, "views differ after the slow spell");
    sim_free(s);
}

/* Three regions of ten nodes, 150 ms round trips between any two (75 ms
 * each way, 10% jitter), 1 ms within one: over 1,000 protocol periods no
 * node suspects another for being far (DESIGN §7). */
static unsigned wan_run(uint64_t seed)
{
    struct membership_config c = cfg();
    static const char *const regions[3] = {"eu", "us", "ap"};
    static const char *const zones[3] = {"a", "b", "c"};
    const size_t n = 30;
    struct sim *s = sim_new(seed, n, &c);
    sim_set_delay(s, 1, 0);
    for (size_t i = 0; i < n; i++)
        sim_set_place(s, i, regions[i % 3], zones[(i / 3) % 3]);
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            sim_set_wan(s, regions[a], regions[b], 75, 15);
    start_all(s, n);
    SIM_ASSERT(run_until_converged(s, 60) <= 60, seed, "no convergence");
    uint64_t suspects = sim_stats(s)->false_suspect;
    uint64_t dead = sim_stats(s)->false_dead;
    for (int p = 0; p < 1000; p++)
        sim_run_for(s, c.period_ms);
    uint64_t got = sim_stats(s)->false_suspect - suspects;
    SIM_ASSERT(got == 0, seed, "%llu false suspicions over 1000 periods",
               (unsigned long long)got);
    SIM_ASSERT(sim_stats(s)->false_dead == dead, seed, "false deaths");
    SIM_ASSERT(sim_converged(s), seed, "views differ");
    /* The round trips measured are the WAN's: a member in another region
     * is ~150 ms away, one in the same region ~2 ms. */
    const struct member_view *far = NULL, *near = NULL;
    struct membership *m0 = sim_node(s, 0);
    for (size_t i = 1; i < membership_size(m0); i++) {
        const struct member_view *v = membership_get(m0, i);
        if (!v->srtt_ms)
            continue;
        if (strcmp(v->info.region, "eu") == 0)
            near = v;
        else
            far = v;
    }
    SIM_ASSERT(far && far->srtt_ms >= 145 && far->srtt_ms <= 175, seed,
               "a far member's smoothed RTT is %u ms", far ? far->srtt_ms : 0);
    SIM_ASSERT(near && near->srtt_ms <= 5, seed,
               "a near member's smoothed RTT is %u ms",
               near ? near->srtt_ms : 0);
    sim_free(s);
    return 1;
}

static void test_three_regions_150ms_apart_have_no_false_suspicion(void **state)
{
    (void)state;
    unsigned runs = sim_each_seed(7100, 5, wan_run);
    printf("sim: 3 regions x 10 nodes, 150 ms RTT: 0 false suspicions over "
           "1000 periods, %u seeds\n",
           runs);
}

static void test_50_nodes_with_10pct_loss_have_no_false_positive(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(4004);
    struct membership_config c = cfg();
    struct sim *s = converged(seed, 50, &c);
    sim_set_loss(s, 0.10);
    sim_set_delay(s, 1, 20);
    sim_run_for(s, 1000 * 1000);
    printf("sim: 50 nodes, 10%% loss, 1000 periods: %llu false positives, "
           "%llu datagrams lost (seed %llu)\n",
           (unsigned long long)sim_stats(s)->false_dead,
           (unsigned long long)sim_stats(s)->dropped, (unsigned long long)seed);
    SIM_ASSERT(sim_stats(s)->false_dead == 0, seed, "%llu false positives",
               (unsigned long long)sim_stats(s)->false_dead);
    /* Under loss some suspicion is always open somewhere; once the loss
     * ends, every one is refuted and the views agree again. */
    sim_set_loss(s, 0);
    SIM_ASSERT(run_until_converged(s, 30) <= 30, seed,
               "views differ 30 periods after the loss ended");
    sim_free(s);
}

static void test_partitioned_halves_heal_into_one_view(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(5005);
    struct membership_config c = cfg();
    c.push_pull_ms = 5000;
    const size_t n = 20;
    struct sim *s = converged(seed, n, &c);
    int group[20];
    for (size_t i = 0; i < n; i++)
        group[i] = i < n / 2;
    sim_partition(s, group);
    sim_run_for(s, 90000);
    /* Each side now holds the other dead: the checkers see it, so they are
     * able to fail (a death of a running node, views that differ). */
    SIM_ASSERT(sim_status(s, 0, n - 1) == MEMBER_DEAD, seed,
               "the partition was not noticed");
    SIM_ASSERT(sim_stats(s)->false_dead > 0, seed,
               "the false-death counter missed a partition's deaths");
    SIM_ASSERT(!sim_converged(s), seed, "converged across a partition");
    sim_partition(s, NULL);
    unsigned periods = run_until_converged(s, 300);
    printf("sim: halves of %zu healed into one view %u periods after the "
           "partition ended (seed %llu)\n",
           n, periods, (unsigned long long)seed);
    SIM_ASSERT(periods <= 300, seed, "no single view 300 periods after heal");
    sim_free(s);
}

static void run_scenario(uint64_t seed, char hex[65])
{
    struct membership_config c = cfg();
    struct sim *s = sim_new(seed, 20, &c);
    start_all(s, 20);
    sim_set_loss(s, 0.05);
    sim_set_dup(s, 0.02);
    sim_set_delay(s, 1, 30);
    sim_run_for(s, 20000);
    sim_crash(s, 4);
    sim_run_for(s, 20000);
    size_t seed0 = 0;
    sim_restart(s, 4, &seed0, 1);
    sim_run_for(s, 20000);
    sim_trace_hex(s, hex);
    sim_free(s);
}

static void test_same_seed_gives_identical_trace(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(6006);
    char a[65], b[65], c[65];
    run_scenario(seed, a);
    run_scenario(seed, b);
    run_scenario(seed + 1, c);
    printf("sim: trace of seed %llu: %s\n", (unsigned long long)seed, a);
    SIM_ASSERT(strcmp(a, b) == 0, seed, "two runs differ: %s vs %s", a, b);
    SIM_ASSERT(strcmp(a, c) != 0, seed, "another seed gave the same trace");
}

static void test_restarted_node_returns_with_higher_incarnation(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(7007);
    struct membership_config c = cfg();
    const size_t n = 10, victim = 5;
    struct sim *s = converged(seed, n, &c);
    sim_crash(s, victim);
    sim_run_for(s, 60000);
    SIM_ASSERT(sim_status(s, 0, victim) == MEMBER_DEAD, seed, "not dead");
    size_t seed0 = 0;
    sim_restart(s, victim, &seed0, 1);
    SIM_ASSERT(run_until_converged(s, 60) <= 60, seed,
               "the restarted node is not alive everywhere");
    const struct member_view *v = membership_get(sim_node(s, victim), 0);
    SIM_ASSERT(v->info.incarnation > 0, seed, "incarnation did not rise");
    sim_free(s);
}

/* A stop (SIGTERM) is announced as down, not gone: the others mark it dead
 * at once (long before they would suspect it) and keep its ranges; a leave
 * (the end of a decommission) is gone. */
static void test_a_stop_is_down_and_a_leave_is_gone(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(8008);
    struct membership_config c = cfg();
    const size_t n = 10;
    struct sim *s = converged(seed, n, &c);
    sim_leave(s, 2);
    membership_leave(sim_node(s, 3));
    sim_leave(s, 3);
    sim_run_for(s, 2 * c.period_ms);
    for (size_t i = 0; i < n; i++)
        if (i != 2 && i != 3) {
            SIM_ASSERT(sim_status(s, i, 2) == MEMBER_DEAD, seed,
                       "node %zu holds status %d for the stopped node", i,
                       sim_status(s, i, 2));
            SIM_ASSERT(sim_status(s, i, 3) == MEMBER_LEFT, seed,
                       "node %zu holds status %d for the leaver", i,
                       sim_status(s, i, 3));
        }
    sim_free(s);
}

static void
test_left_members_are_forgotten_and_dead_ones_kept_past_reap_time(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(9009);
    struct membership_config c = cfg();
    c.reap_ms = 90000; /* longer than the crash bound, so "dead" is seen */
    const size_t n = 8, victim = 6, leaver = 5;
    struct sim *s = converged(seed, n, &c);
    sim_crash(s, victim);
    membership_leave(sim_node(s, leaver));
    sim_leave(s, leaver);
    uint64_t bound =
        crash_bound_ms(&c, n, membership_suspicion_timeout(sim_node(s, 0), 0));
    sim_run_for(s, bound);
    for (size_t i = 0; i < n; i++)
        if (i != victim && i != leaver) {
            SIM_ASSERT(sim_status(s, i, victim) == MEMBER_DEAD, seed,
                       "node %zu: not dead", i);
            SIM_ASSERT(sim_status(s, i, leaver) == MEMBER_LEFT, seed,
                       "node %zu: the leaver is not left", i);
        }
    /* After reap_ms (checked every 10 periods) the member that left is
     * forgotten, and not brought back by the push-pulls of nodes that
     * forgot it later; the dead one is kept (it may come back). */
    sim_run_for(s, c.reap_ms + 10 * c.period_ms + 2 * c.push_pull_ms);
    for (size_t i = 0; i < n; i++)
        if (i != victim && i != leaver) {
            SIM_ASSERT(sim_status(s, i, leaver) == -1, seed,
                       "node %zu still holds the member that left", i);
            SIM_ASSERT(sim_status(s, i, victim) == MEMBER_DEAD, seed,
                       "node %zu forgot the dead member", i);
        }
    SIM_ASSERT(membership_size(sim_node(s, 0)) == n - 1, seed, "size %zu",
               membership_size(sim_node(s, 0)));
    /* And the dead one, back, is alive in every view again. */
    size_t all[8] = {0, 1, 2, 3, 4, 7};
    sim_restart(s, victim, all, 6);
    sim_run_for(s, 10 * c.push_pull_ms);
    for (size_t i = 0; i < n; i++)
        if (i != leaver)
            SIM_ASSERT(sim_status(s, i, victim) == MEMBER_ALIVE, seed,
                       "node %zu: the dead member did not come back", i);
    sim_free(s);
}

/* A one-way cut: node 0's datagrams to node 1 are lost, nothing else is.
 * Node 0's direct probes of node 1 fail, but the indirect probes through
 * the others succeed (SWIM §3.1), so nobody declares node 1 dead; once the
 * filter goes, every view is whole. */
static bool cut_0_to_1(void *arg, size_t from, size_t to, bool datagram)
{
    (void)arg;
    return datagram && from == 0 && to == 1;
}

static void test_a_one_way_cut_is_bridged_by_indirect_probes(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(1212);
    struct membership_config c = cfg();
    const size_t n = 6;
    struct sim *s = converged(seed, n, &c);
    uint64_t false_dead = sim_stats(s)->false_dead;
    sim_add_filter(s, cut_0_to_1, NULL);
    sim_run_for(s, 60000);
    SIM_ASSERT(sim_stats(s)->false_dead == false_dead, seed,
               "%llu false deaths under a one-way cut",
               (unsigned long long)(sim_stats(s)->false_dead - false_dead));
    for (size_t i = 0; i < n; i++)
        SIM_ASSERT(sim_status(s, i, 1) != MEMBER_DEAD, seed,
                   "node %zu holds node 1 dead", i);
    sim_clear_filters(s);
    sim_run_for(s, 10000);
    SIM_ASSERT(sim_converged(s), seed, "views differ after the cut");
    sim_free(s);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    if (getenv("SIM_TEST"))
        cmocka_set_test_filter(getenv("SIM_TEST"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_one_way_cut_is_bridged_by_indirect_probes),
        cmocka_unit_test(test_100_nodes_through_one_seed_reach_one_view),
        cmocka_unit_test(test_crashed_node_is_declared_dead_within_bound),
        cmocka_unit_test(test_slow_node_is_not_declared_dead),
        cmocka_unit_test(test_50_nodes_with_10pct_loss_have_no_false_positive),
        cmocka_unit_test(test_partitioned_halves_heal_into_one_view),
        cmocka_unit_test(test_same_seed_gives_identical_trace),
        cmocka_unit_test(test_restarted_node_returns_with_higher_incarnation),
        cmocka_unit_test(test_a_stop_is_down_and_a_leave_is_gone),
        cmocka_unit_test(
            test_three_regions_150ms_apart_have_no_false_suspicion),
        cmocka_unit_test(
            test_left_members_are_forgotten_and_dead_ones_kept_past_reap_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
