/* Ownership changes in the simulator (DESIGN §7b, node/topo.h: topo.c drives
 * the changes, topo_stream.c moves the data): nodes join a
 * cluster that holds data, others are decommissioned or removed once dead,
 * while clients write unique keys at quorum through every node and read
 * acknowledged ones back at quorum; drivers and sources crash mid-stream
 * and partitions cut streams. The checkers: no quorum read issued after a
 * write was acknowledged misses it, and at the end every acknowledged write
 * reads back. SIM_SEED=N replays a run; make sim-seeds runs 300. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/common.h"
#include "../../node/core.h"
#include "sim.h"

#define SLOTS 7
#define FIRST 4 /* nodes that form the cluster */
#define WRITES 1500
#define SEEDS 6

struct write {
    char key[16], value[16];
    struct sim_op op;
    bool sent;
    uint64_t acked_at; /* when the ack was first seen (0: not yet) */
};

struct read {
    size_t w; /* the write it reads back */
    struct sim_op op;
};

struct run {
    struct sim *s;
    uint64_t seed, x;
    struct write w[WRITES];
    struct read *rd;
    size_t n_rd, cap_rd;
    bool started[SLOTS], gone[SLOTS];
    unsigned joins, decommissions, removals, crashes, partitions;
};

static bool acked(const struct write *w)
{
    return w->sent && w->op.done && w->op.code == 0;
}

static size_t pick_running(struct run *r)
{
    for (;;) {
        size_t i = sim_splitmix64(&r->x) % SLOTS;
        if (sim_running(r->s, i))
            return i;
    }
}

static size_t seeds_of(struct run *r, size_t self, size_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < SLOTS; i++)
        if (i != self && r->started[i] && !r->gone[i])
            out[n++] = i;
    return n;
}

/* Every node that is up and normal in its own view. */
static size_t normal_count(struct run *r)
{
    size_t n = 0;
    for (size_t i = 0; i < SLOTS; i++)
        n += sim_running(r->s, i) && sim_phase(r->s, i, i) == RING_NORMAL;
    return n;
}

/* A quorum read of an acknowledged write, now: it must find it. */
static void read_back(struct run *r, size_t wi)
{
    /* Never moved: the simulator answers into it. */
    if (r->n_rd == r->cap_rd)
        return;
    struct read *x = &r->rd[r->n_rd];
    memset(x, 0, sizeof(*x));
    x->w = wi;
    if (sim_request(r->s, pick_running(r), MSG_GET, r->w[wi].key, NULL,
                    CONS_QUORUM, &x->op))
        r->n_rd++;
}

static void check_reads(struct run *r, size_t *missed)
{
    for (size_t i = 0; i < r->n_rd; i++) {
        const struct read *x = &r->rd[i];
        if (!x->op.done || x->op.code == KV_ERR_UNAVAILABLE ||
            x->op.code == KV_ERR_TIMEOUT)
            continue; /* no answer is not a wrong answer */
        const struct write *w = &r->w[x->w];
        bool ok = x->op.code == 0 && x->op.value_len == strlen(w->value) &&
                  memcmp(x->op.value, w->value, x->op.value_len) == 0;
        if (!ok) {
            if (getenv("SIM_LOG"))
                fprintf(stderr, "read of %s (acked at %llu) got code %d\n",
                        w->key, (unsigned long long)w->acked_at, x->op.code);
            (*missed)++;
        }
    }
}

static struct sim *cluster(struct run *r)
{
    struct membership_config mc;
    membership_config_defaults(&mc);
    struct repl_config rc;
    repl_config_defaults(&rc);
    rc.request_timeout_ms = 2000;
    struct sim *s = sim_new(r->seed, SLOTS, &mc);
    sim_set_delay(s, 2, 8);
    sim_enable_repl(s, &rc);
    /* Node 0 starts alone and forms the ring; the others join it at once,
     * each streaming (nothing, or what was written meanwhile). */
    sim_start(s, 0, NULL, 0);
    r->started[0] = true;
    size_t seed0 = 0;
    for (size_t i = 1; i < FIRST; i++) {
        sim_run_for(s, 10);
        sim_join(s, i, &seed0, 1);
        r->started[i] = true;
    }
    return s;
}

/* One ownership change or fault, drawn by the seed. */
static void act(struct run *r, struct sim_repair *op, size_t *crashed,
                bool *parted, bool *for_good)
{
    struct sim *s = r->s;
    unsigned what = (unsigned)(sim_splitmix64(&r->x) % 6);
    size_t seeds[SLOTS];
    if (*parted) { /* heal first */
        sim_partition(s, NULL);
        *parted = false;
        return;
    }
    /* A node lost for good is removed once the others hold it dead. */
    if (*crashed != SIZE_MAX && *for_good) {
        what = 4;
    } else if (*crashed != SIZE_MAX && what < 2) { /* restart it */
        size_t n = seeds_of(r, *crashed, seeds);
        sim_restart(s, *crashed, seeds, n);
        *crashed = SIZE_MAX;
        return;
    }
    switch (what) {
    case 0: /* a new node joins */
        for (size_t i = 0; i < SLOTS; i++)
            if (!r->started[i]) {
                size_t n = seeds_of(r, i, seeds);
                sim_join(s, i, seeds, n);
                r->started[i] = true;
                r->joins++;
                return;
            }
        return;
    case 1: /* a node is decommissioned */
        if (!op->done || normal_count(r) <= 4)
            return;
        for (size_t k = 0; k < SLOTS; k++) {
            size_t i = sim_splitmix64(&r->x) % SLOTS;
            if (sim_running(s, i) && sim_phase(s, i, i) == RING_NORMAL) {
                sim_decommission(s, i, false, op);
                r->decommissions += op->code == 0;
                return;
            }
        }
        return;
    case 2: /* a node crashes (maybe while it drives or feeds a stream) */
        if (*crashed == SIZE_MAX) {
            size_t i = pick_running(r);
            if (normal_count(r) > 3) {
                sim_crash(s, i);
                *crashed = i;
                *for_good = sim_splitmix64(&r->x) % 3 == 0;
                r->crashes++;
            }
        }
        return;
    case 3: /* a partition cuts one node off for a while */
    {
        int group[SLOTS] = {0};
        group[pick_running(r)] = 1;
        sim_partition(s, group);
        *parted = true;
        r->partitions++;
        return;
    }
    case 4: /* the crashed node is declared gone: removenode */
        if (*crashed != SIZE_MAX && op->done && normal_count(r) >= 3) {
            size_t via = pick_running(r);
            if (sim_status(s, via, *crashed) == MEMBER_DEAD &&
                sim_phase(s, via, *crashed) == RING_NORMAL) {
                sim_removenode(s, via, *crashed, op);
                if (getenv("SIM_LOG"))
                    fprintf(stderr, "removenode %zu via %zu: code %d\n",
                            *crashed, via, op->code);
                if (op->code == 0) {
                    r->gone[*crashed] = true; /* never restarted by act */
                    *crashed = SIZE_MAX;
                    *for_good = false;
                    r->removals++;
                }
            }
        }
        return;
    default:
        return;
    }
}

static unsigned workload(uint64_t seed)
{
    struct run *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->seed = seed;
    r->x = seed ^ 0x70b0;
    r->cap_rd = 4 * WRITES;
    r->rd = calloc(r->cap_rd, sizeof(*r->rd));
    assert_non_null(r->rd);
    r->s = cluster(r);
    struct sim *s = r->s;
    struct sim_repair op = {.done = true};
    size_t crashed = SIZE_MAX;
    bool parted = false, for_good = false;
    uint64_t op_at = 0;
    for (size_t i = 0; i < WRITES; i++) {
        if (i % 60 == 59) {
            /* A decommission whose node crashed finishes after its restart,
             * with nobody to tell: the next change goes after a while. */
            if (!op.done && sim_now(s) - op_at > 60000)
                op.done = true;
            bool idle = op.done;
            act(r, &op, &crashed, &parted, &for_good);
            if (idle && !op.done)
                op_at = sim_now(s);
        }
        struct write *w = &r->w[i];
        snprintf(w->key, sizeof(w->key), "k%zu", i);
        snprintf(w->value, sizeof(w->value), "v%zu", i);
        w->sent = sim_request(s, pick_running(r), MSG_PUT, w->key, w->value,
                              CONS_QUORUM, &w->op);
        sim_run_for(s, 20);
        /* Reads of writes acknowledged by now, issued after their ack. */
        for (size_t k = 0; k < 2 && i > 0; k++) {
            size_t wi = sim_splitmix64(&r->x) % i;
            if (acked(&r->w[wi]))
                read_back(r, wi);
        }
    }
    /* Everything heals; the changes in progress finish. */
    sim_partition(s, NULL);
    (void)for_good;
    /* Every node that was not removed comes back (two replicas of a key
     * down at once is unavailability, not loss). */
    for (size_t i = 0; i < SLOTS; i++) {
        if (!r->started[i] || sim_running(s, i))
            continue;
        size_t via = pick_running(r);
        if (sim_status(s, via, i) == MEMBER_LEFT)
            continue;
        size_t seeds[SLOTS];
        size_t n = seeds_of(r, i, seeds);
        sim_restart(s, i, seeds, n);
    }
    for (int t = 0; t < 60 && !op.done; t++)
        sim_run_for(s, 1000);
    sim_run_for(s, 10000);
    size_t missed = 0, n_acked = 0;
    if (getenv("SIM_LOG"))
        for (size_t a = 0; a < SLOTS; a++) {
            fprintf(stderr, "node %zu%s sees:", a,
                    sim_running(s, a) ? "" : " (down)");
            for (size_t b = 0; b < SLOTS; b++)
                fprintf(stderr, " %d/%d", sim_status(s, a, b),
                        sim_phase(s, a, b));
            fprintf(stderr, "\n");
        }
    check_reads(r, &missed);
    SIM_ASSERT(missed == 0, seed,
               "%zu quorum reads missed an acknowledged write (%u joins, %u "
               "decommissions, %u removals, %u crashes, %u partitions)",
               missed, r->joins, r->decommissions, r->removals, r->crashes,
               r->partitions);
    /* The final check: every acknowledged write reads back at quorum. */
    size_t base = r->n_rd;
    for (size_t i = 0; i < WRITES; i++) {
        n_acked += acked(&r->w[i]);
        if (acked(&r->w[i]))
            read_back(r, i);
    }
    sim_run_for(s, 10000);
    size_t lost = 0;
    for (size_t i = base; i < r->n_rd; i++) {
        const struct read *x = &r->rd[i];
        const struct write *w = &r->w[x->w];
        bool ok = x->op.done && x->op.code == 0 &&
                  x->op.value_len == strlen(w->value) &&
                  memcmp(x->op.value, w->value, x->op.value_len) == 0;
        if (!ok && getenv("SIM_LOG"))
            fprintf(stderr, "final read of %s: code %d\n", w->key, x->op.code);
        lost += !ok;
    }
    SIM_ASSERT(n_acked > WRITES / 2, seed, "only %zu of %d writes acknowledged",
               n_acked, WRITES);
    SIM_ASSERT(lost == 0, seed,
               "%zu of %zu acknowledged writes lost (%u joins, %u "
               "decommissions, %u removals, %u crashes, %u partitions)",
               lost, n_acked, r->joins, r->decommissions, r->removals,
               r->crashes, r->partitions);
    if (getenv("SIM_LOG"))
        fprintf(stderr,
                "seed %llu: %zu acked, %zu reads, %u joins, %u "
                "decommissions, %u removals, %u crashes, %u partitions\n",
                (unsigned long long)seed, n_acked, r->n_rd, r->joins,
                r->decommissions, r->removals, r->crashes, r->partitions);
    unsigned changes = r->joins + r->decommissions + r->removals;
    free(r->rd);
    sim_free(s);
    free(r);
    return changes;
}

/* A cluster of `started` nodes out of `slots`, formed the way kvnode
 * forms one (node 0 alone, the others joining it), with streams at
 * bytes_s in batches of batch (0: the defaults) and hints replayed every
 * replay_ms (0: the default); it runs 20 s to settle. */
static struct sim *formed(uint64_t seed, size_t slots, size_t started,
                          uint64_t bytes_s, uint32_t batch, uint32_t replay_ms)
{
    struct membership_config mc;
    membership_config_defaults(&mc);
    struct repl_config rc;
    repl_config_defaults(&rc);
    if (replay_ms)
        rc.hint_replay_ms = replay_ms;
    struct sim *s = sim_new(seed, slots, &mc);
    sim_enable_repl(s, &rc);
    if (bytes_s)
        sim_set_stream(s, bytes_s, batch);
    sim_start(s, 0, NULL, 0);
    size_t seed0 = 0;
    for (size_t i = 1; i < started; i++) {
        sim_run_for(s, 10);
        sim_join(s, i, &seed0, 1);
    }
    sim_run_for(s, 20000);
    return s;
}

/* n writes at consistency all, through nodes 0..3 in turn, of keys
 * PREFIX0.. with value (NULL: "a value of some thirty bytes I"). */
static void load(struct sim *s, struct sim_op *w, size_t n, const char *prefix,
                 const char *value)
{
    memset(w, 0, n * sizeof(*w));
    for (size_t k = 0; k < n; k++) {
        char key[32], v[64];
        snprintf(key, sizeof(key), "%s%zu", prefix, k);
        snprintf(v, sizeof(v), "a value of some thirty bytes %zu", k);
        sim_request(s, k % 4, MSG_PUT, key, value ? value : v, CONS_ALL, &w[k]);
        if (k % 50 == 49)
            sim_run_for(s, 50);
    }
    sim_run_for(s, 3000);
}

#define CKEYS 30

/* A record damaged on the disk of the replica a joining node streams it
 * from fails its checksum at the receiver, is logged and counted, and is
 * taken from another replica: the new node ends up with every value as it
 * was written. */
static unsigned corrupt_source(uint64_t seed)
{
    struct sim *s = formed(seed, 5, 4, 0, 0, 0);
    size_t seeds[4] = {0, 1, 2, 3};
    char key[CKEYS][16], value[CKEYS][16];
    struct sim_op w[CKEYS];
    memset(w, 0, sizeof(w));
    for (size_t k = 0; k < CKEYS; k++) {
        snprintf(key[k], sizeof(key[k]), "c%zu", k);
        snprintf(value[k], sizeof(value[k]), "value-%zu", k);
        assert_true(
            sim_request(s, k % 4, MSG_PUT, key[k], value[k], CONS_ALL, &w[k]));
    }
    sim_run_for(s, 2000);
    /* One replica of each key, the next one round the four, is damaged. */
    size_t damaged = 0;
    for (size_t k = 0; k < CKEYS; k++) {
        SIM_ASSERT(w[k].done && w[k].code == 0, seed, "write %zu: %d", k,
                   w[k].code);
        for (size_t j = 0; j < 4; j++)
            if (sim_corrupt(s, (k + j) % 4, key[k])) {
                damaged++;
                break;
            }
    }
    SIM_ASSERT(damaged == CKEYS, seed, "%zu of %d damaged", damaged, CKEYS);
    sim_join(s, 4, seeds, 4);
    sim_run_for(s, 30000);
    SIM_ASSERT(sim_phase(s, 0, 4) == RING_NORMAL, seed, "node 4 is %d",
               sim_phase(s, 0, 4));
    size_t held = 0;
    for (size_t k = 0; k < CKEYS; k++) {
        uint8_t v[32];
        size_t n = sim_value(s, 4, key[k], v, sizeof(v));
        if (n == SIZE_MAX)
            continue;
        held++;
        SIM_ASSERT(n == strlen(value[k]) && memcmp(v, value[k], n) == 0, seed,
                   "node 4 holds a wrong value of %s", key[k]);
    }
    uint64_t corrupt = topo_counters(core_topo(sim_core(s, 4)))->corrupt;
    SIM_ASSERT(held > 0, seed, "node 4 took no key");
    sim_free(s);
    return (unsigned)corrupt;
}

static void test_a_corrupt_record_is_taken_from_another_replica(void **state)
{
    (void)state;
    unsigned corrupt = sim_each_seed(1, 3, corrupt_source);
    if (!getenv("SIM_SEED"))
        assert_true(corrupt > 0); /* some stream did meet one */
    print_message("      %u damaged records refused by joining nodes, "
                  "every value taken whole from another replica\n",
                  corrupt);
}

#define RKEYS 1500

/* A join, with node 4 crashed halfway through its streams (or not, for
 * the baseline): @retval the records it streamed in, over both lives. */
static uint64_t join_with_crash(uint64_t seed, bool crash, uint64_t *before,
                                uint64_t *resumed)
{
    /* 10 kB/s in 2 kB batches: the join takes seconds. */
    struct sim *s = formed(seed, 5, 4, 10000, 2000, 0);
    size_t seeds[4] = {0, 1, 2, 3};
    static struct sim_op w[RKEYS];
    load(s, w, RKEYS, "r", NULL);
    sim_join(s, 4, seeds, 4);
    *before = 0;
    if (crash) {
        sim_run_for(s, 4000);
        *before = topo_counters(core_topo(sim_core(s, 4)))->records_in;
        sim_crash(s, 4);
        sim_run_for(s, 500);
        sim_restart(s, 4, seeds, 4);
    }
    for (int t = 0; t < 120 && sim_phase(s, 0, 4) != RING_NORMAL; t++)
        sim_run_for(s, 1000);
    SIM_ASSERT(sim_phase(s, 0, 4) == RING_NORMAL, seed,
               "node 4 did not finish its join");
    const struct topo_counters *tc = topo_counters(core_topo(sim_core(s, 4)));
    uint64_t after = tc->records_in;
    *resumed = tc->resumed;
    sim_free(s);
    return *before + after;
}

/* A node that crashes in the middle of its join takes it up where its
 * saved progress says, and streams the rest only. */
static unsigned resume(uint64_t seed)
{
    uint64_t b0, r0, before, resumed;
    uint64_t full = join_with_crash(seed, false, &b0, &r0);
    uint64_t total = join_with_crash(seed, true, &before, &resumed);
    SIM_ASSERT(before > 0 && before < full, seed,
               "the crash did not land mid-stream (%llu of %llu records)",
               (unsigned long long)before, (unsigned long long)full);
    SIM_ASSERT(resumed == 1, seed, "the join was not resumed");
    /* Started over, it would stream again all it had before the crash;
     * resumed, only what came after the last save (at most 1 s of it). */
    SIM_ASSERT(total < full + before * 3 / 4, seed,
               "%llu records streamed across the crash, %llu without it",
               (unsigned long long)total, (unsigned long long)full);
    if (getenv("SIM_LOG"))
        fprintf(stderr,
                "resume: %llu before the crash, %llu in all, %llu "
                "without a crash\n",
                (unsigned long long)before, (unsigned long long)total,
                (unsigned long long)full);
    return 1;
}

static void test_a_join_resumes_after_a_crash(void **state)
{
    (void)state;
    sim_each_seed(1, 3, resume);
}

/* One change at a time: while a node joins (slowly), a decommission is
 * refused naming the joiner, and a second new node waits its turn; both
 * go once the first is done. */
static unsigned one_at_a_time(uint64_t seed)
{
    struct sim *s = formed(seed, 6, 4, 5000, 2000, 0);
    size_t seeds[4] = {0, 1, 2, 3};
    static struct sim_op w[RKEYS];
    load(s, w, RKEYS, "o", "some value of a few bytes");
    sim_join(s, 4, seeds, 4);
    sim_run_for(s, 3000);
    SIM_ASSERT(sim_phase(s, 0, 4) == RING_JOINING, seed,
               "node 4 is %d, not joining", sim_phase(s, 0, 4));
    sim_join(s, 5, seeds, 4);
    struct sim_repair op;
    assert_true(sim_decommission(s, 1, false, &op));
    SIM_ASSERT(op.done && op.code == KV_ERR_BUSY, seed,
               "a decommission during a join got %d", op.code);
    sim_run_for(s, 3000);
    SIM_ASSERT(sim_phase(s, 0, 5) == RING_WAITING, seed,
               "node 5 is %d while node 4 joins", sim_phase(s, 0, 5));
    for (int t = 0; t < 120 && (sim_phase(s, 0, 4) != RING_NORMAL ||
                                sim_phase(s, 0, 5) != RING_NORMAL);
         t++)
        sim_run_for(s, 1000);
    SIM_ASSERT(sim_phase(s, 0, 4) == RING_NORMAL &&
                   sim_phase(s, 0, 5) == RING_NORMAL,
               seed, "the joins did not both finish (%d, %d)",
               sim_phase(s, 0, 4), sim_phase(s, 0, 5));
    assert_true(sim_decommission(s, 1, false, &op));
    for (int t = 0; t < 120 && !op.done; t++)
        sim_run_for(s, 1000);
    SIM_ASSERT(op.done && op.code == 0, seed, "the decommission got %d",
               op.code);
    sim_free(s);
    return 1;
}

static void test_one_change_at_a_time(void **state)
{
    (void)state;
    sim_each_seed(1, 3, one_at_a_time);
}

#define HKEYS 200

/* A node decommissioned while it holds hints hands them on: here to their
 * owner, which is back but has not had them replayed (replay is slowed to
 * minutes), so that once the leaver is gone the owner holds each record
 * the leaver was holding for it. */
static unsigned hands_on_hints(uint64_t seed)
{
    struct sim *s = formed(seed, 5, 5, 0, 0, 600000);
    const size_t down = 4, leaver = 2; /* both in region r0 */
    sim_crash(s, down);
    sim_run_for(s, 15000); /* held dead: writes for it become hints */
    static struct sim_op w[HKEYS];
    memset(w, 0, sizeof(w));
    for (size_t k = 0; k < HKEYS; k++) {
        char key[16];
        snprintf(key, sizeof(key), "h%zu", k);
        sim_request(s, leaver, MSG_PUT, key, "v", CONS_QUORUM, &w[k]);
        sim_run_for(s, 5);
    }
    sim_run_for(s, 2000);
    size_t seeds[4] = {0, 1, 2, 3};
    sim_restart(s, down, seeds, 4);
    sim_run_for(s, 10000);
    const struct env *e = sim_env(s, leaver);
    struct storage_record *recs = NULL;
    size_t n = 0;
    assert_int_equal(
        e->store->hints(e->store_ctx, sim_member(s, down)->id, 1000, &recs, &n),
        0);
    SIM_ASSERT(n > 0, seed, "the leaver holds no hint for the down node");
    struct sim_repair op;
    assert_true(sim_decommission(s, leaver, false, &op));
    for (int t = 0; t < 60 && !op.done; t++)
        sim_run_for(s, 1000);
    SIM_ASSERT(op.done && op.code == 0, seed, "decommission: %d (done %d): %s",
               op.code, op.done,
               sim_core(s, leaver) ? topo_state(core_topo(sim_core(s, leaver)))
                                   : "(down)");
    sim_run_for(s, 2000);
    SIM_ASSERT(!sim_running(s, leaver), seed, "the leaver still runs");
    size_t missing = 0;
    for (size_t k = 0; k < n; k++) {
        char key[32];
        snprintf(key, sizeof(key), "%.*s", (int)recs[k].key_len,
                 (const char *)recs[k].key);
        uint64_t v = 0;
        missing += !sim_stored(s, down, key, &v) || v < recs[k].version;
    }
    SIM_ASSERT(missing == 0, seed,
               "%zu of the %zu hints the leaver held never reached their "
               "owner",
               missing, n);
    storage_hints_free(recs, n);
    sim_free(s);
    return (unsigned)n;
}

static void test_a_decommission_hands_on_its_hints(void **state)
{
    (void)state;
    unsigned held = sim_each_seed(1, 3, hands_on_hints);
    print_message("      %u hints handed on by decommissioned nodes\n", held);
}

static void test_changes_under_writes_lose_nothing(void **state)
{
    (void)state;
    unsigned changes = sim_each_seed(1, SEEDS, workload);
    print_message("      %u ownership changes over the seeds\n", changes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_changes_under_writes_lose_nothing),
        cmocka_unit_test(test_a_corrupt_record_is_taken_from_another_replica),
        cmocka_unit_test(test_a_join_resumes_after_a_crash),
        cmocka_unit_test(test_one_change_at_a_time),
        cmocka_unit_test(test_a_decommission_hands_on_its_hints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
