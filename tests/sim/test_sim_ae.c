/* Anti-entropy in the deterministic simulator: node/ae.c on top of
 * membership and replication, five nodes at N = 3. A replica that lost its
 * whole store is rebuilt by one repair, or by background rounds alone; a
 * repair cut off by a partition fails loudly and the next one finishes; the
 * trees every write keeps current equal a rebuild from the store, on every
 * node, for every peer and range. SIM_SEED=N replays a run; each test also
 * sweeps a few seeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/common.h"
#include "../../node/ae.h"
#include "../../node/core.h"
#include "sim.h"

#define N_NODES 5
#define KEYS 400
#define SEEDS 6

struct key {
    char key[16], value[16];
    struct sim_op op;
};

static struct ae_config ac;

static struct sim *cluster(uint64_t seed, unsigned interval_ms)
{
    struct membership_config mc;
    membership_config_defaults(&mc);
    struct repl_config rc;
    repl_config_defaults(&rc);
    rc.request_timeout_ms = 2000;
    ae_config_defaults(&ac);
    ac.interval_ms = interval_ms;
    ac.scrub_interval_ms = 0;
    ac.step_timeout_ms = 2000;
    /* Builds span many ticks, with writes landing in between. */
    ac.build_batch = 25;
    ac.build_steps = 1;
    struct sim *s = sim_new(seed, N_NODES, &mc);
    sim_set_delay(s, 1, 4);
    sim_enable_repl(s, &rc);
    sim_enable_ae(s, &ac);
    sim_start_all(s);
    return s;
}

/* Writes KEYS keys at quorum through every node in turn; all must be
 * acknowledged (no faults yet). */
static struct key *write_keys(struct sim *s, uint64_t seed, const char *tag)
{
    struct key *k = calloc(KEYS, sizeof(*k));
    assert_non_null(k);
    for (size_t i = 0; i < KEYS; i++) {
        snprintf(k[i].key, sizeof(k[i].key), "k%zu", i);
        snprintf(k[i].value, sizeof(k[i].value), "%s%zu", tag, i);
        assert_true(sim_request(s, i % N_NODES, MSG_PUT, k[i].key, k[i].value,
                                CONS_QUORUM, &k[i].op));
        sim_run_for(s, 5);
    }
    sim_run_for(s, 3000);
    for (size_t i = 0; i < KEYS; i++)
        SIM_ASSERT(k[i].op.done && k[i].op.code == 0, seed,
                   "write %zu not acknowledged (%d)", i, k[i].op.code);
    return k;
}

/* (key, replica) pairs where the replica lacks the acknowledged version. */
static size_t missing(struct sim *s, const struct key *k, size_t *on_node2)
{
    size_t miss = 0, two = 0;
    for (size_t i = 0; i < KEYS; i++) {
        size_t reps[3];
        size_t n = sim_replicas_of(s, 0, k[i].key, reps, 3);
        assert_int_equal(n, 3);
        for (size_t j = 0; j < n; j++) {
            uint64_t v = 0;
            if (!sim_stored(s, reps[j], k[i].key, &v) || v < k[i].op.version) {
                miss++;
                two += reps[j] == 2;
            }
        }
    }
    if (on_node2)
        *on_node2 = two;
    return miss;
}

static void lose_store(struct sim *s, size_t v)
{
    sim_crash(s, v);
    sim_wipe(s, v);
    size_t seeds[N_NODES - 1], n = 0;
    for (size_t i = 0; i < N_NODES; i++)
        if (i != v)
            seeds[n++] = i;
    sim_restart(s, v, seeds, n);
    sim_run_for(s, 10000);
}

static void run_repair(struct sim *s, size_t v, struct sim_repair *r)
{
    assert_true(sim_repair(s, v, -1, r));
    for (int t = 0; t < 600 && !r->done; t++)
        sim_run_for(s, 100);
    assert_true(r->done);
}

static unsigned wiped_replica_one_repair(uint64_t seed)
{
    struct sim *s = cluster(seed, 0);
    struct key *k = write_keys(s, seed, "v");
    lose_store(s, 2);
    size_t two;
    SIM_ASSERT(missing(s, k, &two) > 0 && two > 0, seed,
               "the wiped node should lack its keys");
    struct sim_repair r;
    run_repair(s, 2, &r);
    SIM_ASSERT(r.code == 0, seed, "repair failed: %d", r.code);
    SIM_ASSERT(r.pulled >= two, seed, "pulled %llu of %zu",
               (unsigned long long)r.pulled, two);
    SIM_ASSERT(missing(s, k, NULL) == 0, seed, "%zu replicas still lack keys",
               missing(s, k, NULL));
    /* Every range converged, on the node that ran it. */
    uint64_t at[AE_RANGES];
    ae_converged(sim_ae(s, 2), at);
    for (size_t i = 0; i < AE_RANGES; i++)
        SIM_ASSERT(at[i] > 0, seed, "range %zu never converged", i);
    /* A second repair has nothing left to move. */
    run_repair(s, 2, &r);
    SIM_ASSERT(r.code == 0 && r.pulled == 0 && r.pushed == 0, seed,
               "second repair moved %llu/%llu", (unsigned long long)r.pulled,
               (unsigned long long)r.pushed);
    free(k);
    sim_free(s);
    return 1;
}

static void test_a_wiped_replica_is_rebuilt_by_one_repair(void **state)
{
    (void)state;
    sim_each_seed(1, SEEDS, wiped_replica_one_repair);
}

static unsigned background_rounds(uint64_t seed)
{
    struct sim *s = cluster(seed, 3000);
    struct key *k = write_keys(s, seed, "b");
    lose_store(s, 2);
    sim_run_for(s, 30000);
    SIM_ASSERT(missing(s, k, NULL) == 0, seed,
               "%zu replicas lack keys after 30 s of background rounds",
               missing(s, k, NULL));
    free(k);
    sim_free(s);
    return 1;
}

static void test_background_rounds_rebuild_a_wiped_replica(void **state)
{
    (void)state;
    sim_each_seed(11, SEEDS, background_rounds);
}

/* Three regions of four nodes (zones a and b), 50 ms apart, with the given
 * --replicas and rounds every interval_ms (0: only on request), holding
 * GEO_KEYS keys written at all. */
#define GEO_NODES 12
#define GEO_KEYS 300

static const char *const geo_regions[3] = {"eu", "us", "ap"};
static char geo_key[GEO_KEYS][16];
static struct sim_op geo_op[GEO_KEYS];

static struct sim *geo_cluster(uint64_t seed, const char *replicas,
                               unsigned interval_ms)
{
    struct membership_config mc;
    membership_config_defaults(&mc);
    struct repl_config rc;
    repl_config_defaults(&rc);
    char err[160];
    assert_int_equal(
        ring_placement_parse(&rc.placement, replicas, err, sizeof(err)), 0);
    ae_config_defaults(&ac);
    ac.interval_ms = interval_ms;
    ac.scrub_interval_ms = 0;
    ac.step_timeout_ms = 3000;
    struct sim *s = sim_new(seed, GEO_NODES, &mc);
    sim_set_delay(s, 1, 2);
    for (size_t i = 0; i < GEO_NODES; i++)
        sim_set_place(s, i, geo_regions[i % 3], (i / 3) % 2 ? "b" : "a");
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            sim_set_wan(s, geo_regions[a], geo_regions[b], 50, 5);
    sim_enable_repl(s, &rc);
    sim_enable_ae(s, &ac);
    sim_start_all(s);
    memset(geo_op, 0, sizeof(geo_op));
    for (size_t i = 0; i < GEO_KEYS; i++) {
        snprintf(geo_key[i], sizeof(geo_key[i]), "g%zu", i);
        assert_true(sim_request(s, i % GEO_NODES, MSG_PUT, geo_key[i], "v",
                                CONS_ALL, &geo_op[i]));
        sim_run_for(s, 5);
    }
    sim_run_for(s, 3000);
    for (size_t i = 0; i < GEO_KEYS; i++)
        SIM_ASSERT(geo_op[i].done && geo_op[i].code == 0, seed,
                   "write %zu not acknowledged (%d)", i, geo_op[i].code);
    return s;
}

/* (key, replica) pairs where the replica lacks the key. */
static size_t geo_lacking(struct sim *s, uint64_t seed, size_t per_key)
{
    size_t lacking = 0;
    for (size_t i = 0; i < GEO_KEYS; i++) {
        size_t reps[REPL_MAX_REPLICAS];
        size_t n = sim_replicas_of(s, 0, geo_key[i], reps, REPL_MAX_REPLICAS);
        SIM_ASSERT(n == per_key, seed, "%zu replicas of %s", n, geo_key[i]);
        for (size_t j = 0; j < n; j++) {
            uint64_t v = 0;
            lacking += !sim_stored(s, reps[j], geo_key[i], &v) ||
                       v < geo_op[i].version;
        }
    }
    return lacking;
}

/* With --replicas ap:2,eu:2,us:2 (a key on 6 of the 12), every ap node
 * loses its store at once; rounds on the timer alone bring every key back
 * over the WAN: each interval crosses between one replica per region, then
 * spreads within ap. */
static unsigned regions_rebuild(uint64_t seed)
{
    struct sim *s = geo_cluster(seed, "ap:2,eu:2,us:2", 3000);
    size_t others[GEO_NODES], n_others = 0;
    for (size_t i = 0; i < GEO_NODES; i++)
        if (i % 3 != 2)
            others[n_others++] = i;
    for (size_t i = 2; i < GEO_NODES; i += 3) {
        sim_crash(s, i);
        sim_wipe(s, i);
    }
    for (size_t i = 2; i < GEO_NODES; i += 3)
        sim_restart(s, i, others, n_others);
    size_t lacking = geo_lacking(s, seed, 6);
    SIM_ASSERT(lacking > 0, seed, "the wiped region lacks nothing");
    for (int t = 0; t < 120 && lacking; t++) {
        sim_run_for(s, 1000);
        lacking = geo_lacking(s, seed, 6);
    }
    SIM_ASSERT(lacking == 0, seed,
               "%zu replicas lack keys after 120 s of background rounds",
               lacking);
    sim_free(s);
    return 1;
}

static void test_regions_rebuilt_by_rounds_across_the_wan(void **state)
{
    (void)state;
    sim_each_seed(41, 3, regions_rebuild);
}

/* WAN bytes of anti-entropy per node and round once nothing differs: rounds
 * on the timer, or kvcli repair (every replica) on each node in turn. */
static uint64_t wan_per_round(uint64_t seed, const char *replicas, bool timer)
{
    struct sim *s = geo_cluster(seed, replicas, timer ? 3000 : 0);
    sim_run_for(s, 10000);
    uint64_t rounds = 0, b0 = sim_stats(s)->wan_node_bytes;
    for (size_t i = 0; i < GEO_NODES; i++)
        rounds -= ae_counters(sim_ae(s, i))->rounds;
    if (timer) {
        sim_run_for(s, 30000);
    } else {
        for (size_t i = 0; i < GEO_NODES; i++) {
            struct sim_repair r;
            run_repair(s, i, &r);
            SIM_ASSERT(r.code == 0, seed, "repair on %zu: %d", i, r.code);
        }
    }
    for (size_t i = 0; i < GEO_NODES; i++)
        rounds += ae_counters(sim_ae(s, i))->rounds;
    uint64_t bytes = sim_stats(s)->wan_node_bytes - b0;
    SIM_ASSERT(rounds > 0, seed, "no round ran");
    sim_free(s);
    return bytes / rounds;
}

/* Across regions a round compares each range with one replica per region
 * of each interval, not with every replica there: with a full copy per
 * region, one exchange per range and pair of regions. */
static void test_rounds_cross_the_wan_once_per_range(void **state)
{
    (void)state;
    uint64_t seed = sim_seed(51);
    static const char *const settings[2] = {"ap:4,eu:4,us:4", "ap:2,eu:2,us:2"};
    for (int k = 0; k < 2; k++) {
        uint64_t timer = wan_per_round(seed, settings[k], true);
        uint64_t every = wan_per_round(seed, settings[k], false);
        print_message("      --replicas %s: %llu WAN bytes per round on the "
                      "timer, %llu with every replica (kvcli repair)\n",
                      settings[k], (unsigned long long)timer,
                      (unsigned long long)every);
        /* A full copy per region: 1 of the 4 replicas there per range,
         * a third of the bytes at most; 2 of 4: two thirds. */
        SIM_ASSERT(timer * 3 < every * (k == 0 ? 1 : 2), seed,
                   "rounds on the timer cross the WAN as much as repairs");
    }
}

static unsigned partition_then_heal(uint64_t seed)
{
    struct sim *s = cluster(seed, 0);
    struct key *k = write_keys(s, seed, "p");
    lose_store(s, 2);
    /* Cut the wiped node off mid-repair: the round cannot finish, and says
     * so. */
    struct sim_repair r;
    assert_true(sim_repair(s, 2, -1, &r));
    sim_run_for(s, 3);
    int group[N_NODES] = {0, 0, 1, 0, 0};
    sim_partition(s, group);
    for (int t = 0; t < 600 && !r.done; t++)
        sim_run_for(s, 100);
    SIM_ASSERT(r.done && r.code == KV_ERR_UNAVAILABLE, seed,
               "a repair cut off by a partition ended with %d", r.code);
    sim_partition(s, NULL);
    sim_run_for(s, 10000);
    run_repair(s, 2, &r);
    SIM_ASSERT(r.code == 0, seed, "repair after the heal failed: %d", r.code);
    SIM_ASSERT(missing(s, k, NULL) == 0, seed, "%zu replicas lack keys",
               missing(s, k, NULL));
    free(k);
    sim_free(s);
    return 1;
}

static void test_a_repair_cut_off_fails_and_the_next_one_finishes(void **state)
{
    (void)state;
    sim_each_seed(21, SEEDS, partition_then_heal);
}

/* Every node's live trees (kept by writes, overwrites, deletes and repairs
 * after a first build, and on a restarted node by writes that land while its
 * trees are being built) equal a rebuild from its store. */
static unsigned trees_match(uint64_t seed)
{
    struct sim *s = cluster(seed, 2000);
    sim_run_for(s, 3000); /* a background round builds the trees */
    struct key *k = write_keys(s, seed, "x");
    /* Node 3 starts over: its trees are built a slice per tick while the
     * overwrites below land on it. */
    sim_crash(s, 3);
    size_t seeds[] = {0, 1, 2, 4};
    sim_restart(s, 3, seeds, 4);
    sim_run_for(s, 3000);
    free(write_keys(s, seed, "y")); /* overwrites */
    struct sim_op del[KEYS / 4];
    for (size_t i = 0; i < KEYS / 4; i++) {
        memset(&del[i], 0, sizeof(del[i]));
        sim_request(s, i % N_NODES, MSG_DEL, k[i * 4].key, NULL, CONS_QUORUM,
                    &del[i]);
    }
    sim_run_for(s, 10000);
    for (size_t i = 0; i < KEYS / 4; i++)
        SIM_ASSERT(del[i].done && del[i].code == 0, seed,
                   "delete %zu: done %d, code %d", i, del[i].done, del[i].code);
    size_t compared = 0;
    for (size_t i = 0; i < N_NODES; i++) {
        /* A new anti-entropy over node i's store, built from scratch. */
        struct ae *fresh = ae_new(&ac, sim_env(s, i), sim_member(s, i)->id);
        assert_non_null(fresh);
        ae_set_ring(fresh, core_ring(sim_core(s, i)));
        for (size_t j = 0; j < N_NODES; j++) {
            if (j == i)
                continue;
            const uint8_t *peer = sim_member(s, j)->id;
            for (unsigned r = 0; r < AE_RANGES; r++) {
                uint8_t live[AE_HASH_BYTES], built[AE_HASH_BYTES],
                    theirs[AE_HASH_BYTES];
                int rc = ae_root(sim_ae(s, i), peer, r, live);
                if (rc == KV_ERR_NOT_FOUND)
                    continue; /* i and j share no key */
                assert_int_equal(rc, 0);
                assert_int_equal(ae_root(fresh, peer, r, built), 0);
                SIM_ASSERT(memcmp(live, built, sizeof(live)) == 0, seed,
                           "node %zu's tree for node %zu, range %u, differs "
                           "from a rebuild",
                           i, j, r);
                /* And the two replicas agree (background rounds ran). */
                assert_int_equal(
                    ae_root(sim_ae(s, j), sim_member(s, i)->id, r, theirs), 0);
                SIM_ASSERT(memcmp(live, theirs, sizeof(live)) == 0, seed,
                           "nodes %zu and %zu differ on range %u", i, j, r);
                compared++;
            }
        }
        ae_free(fresh);
    }
    /* Five nodes, three replicas: every pair shares keys in most ranges, so
     * most of the 5 * 4 * 16 (node, peer, range) trees were compared; none
     * compared would pass with no tree at all. */
    SIM_ASSERT(compared >= N_NODES * (N_NODES - 1) * AE_RANGES / 2, seed,
               "only %zu trees compared", compared);
    free(k);
    sim_free(s);
    return 1;
}

static void test_trees_kept_by_writes_equal_a_rebuild(void **state)
{
    (void)state;
    sim_each_seed(31, SEEDS, trees_match);
}

/* A node whose clock runs 10 minutes fast writes a key it holds: the record
 * carries a version from the future. Its peers refuse its replica writes
 * (its clock), and anti-entropy must not carry the record to them either:
 * every node but the fast one stores nothing from the future, and a later
 * write through a healthy node is read back. */
static unsigned fast_clock(uint64_t seed)
{
    struct sim *s = cluster(seed, 1000);
    const size_t f = seed % N_NODES;
    char key[16];
    size_t reps[3], n = 0;
    for (int i = 0; n == 0 || (reps[0] != f && reps[1] != f && reps[2] != f);
         i++) {
        snprintf(key, sizeof(key), "fast-%d", i);
        n = sim_replicas_of(s, f, key, reps, 3);
        assert_int_equal(n, 3);
    }
    sim_set_skew(s, f, 600000);
    struct sim_op w = {0};
    assert_true(sim_request(s, f, MSG_PUT, key, "future", CONS_ONE, &w));
    sim_run_for(s, 10000); /* background rounds: every node, every second */
    SIM_ASSERT(w.done && w.code == 0, seed, "the fast write: %d", w.code);
    uint64_t horizon = (1700000000000ull + sim_now(s) + 60000) << 16;
    for (size_t i = 0; i < N_NODES; i++) {
        uint64_t v;
        if (i != f && sim_stored(s, i, key, &v))
            SIM_ASSERT(v < horizon, seed,
                       "node %zu took the future record from node %zu", i, f);
    }
    const size_t h = (f + 1) % N_NODES, r = (f + 2) % N_NODES;
    struct sim_op w2 = {0}, rd = {0};
    assert_true(sim_request(s, h, MSG_PUT, key, "later", CONS_QUORUM, &w2));
    sim_run_for(s, 1000);
    SIM_ASSERT(w2.done && w2.code == 0, seed, "the later write: %d", w2.code);
    assert_true(sim_request(s, r, MSG_GET, key, NULL, CONS_QUORUM, &rd));
    sim_run_for(s, 1000);
    SIM_ASSERT(rd.done && rd.code == 0 && rd.value_len == 5 &&
                   memcmp(rd.value, "later", 5) == 0,
               seed, "the later write was not read back (code %d, %.*s)",
               rd.code, (int)rd.value_len, (const char *)rd.value);
    sim_free(s);
    return 1;
}

static void
test_a_fast_clock_cannot_spread_a_future_record_through_repair(void **state)
{
    (void)state;
    sim_each_seed(41, SEEDS, fast_clock);
}

int main(void)
{
    log_set_level(getenv("SIM_LOG") ? LOG_DEBUG : LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_wiped_replica_is_rebuilt_by_one_repair),
        cmocka_unit_test(test_background_rounds_rebuild_a_wiped_replica),
        cmocka_unit_test(test_a_repair_cut_off_fails_and_the_next_one_finishes),
        cmocka_unit_test(test_regions_rebuilt_by_rounds_across_the_wan),
        cmocka_unit_test(test_rounds_cross_the_wan_once_per_range),
        cmocka_unit_test(test_trees_kept_by_writes_equal_a_rebuild),
        cmocka_unit_test(
            test_a_fast_clock_cannot_spread_a_future_record_through_repair),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
