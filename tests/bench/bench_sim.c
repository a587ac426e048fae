/* Membership figures from the simulator, for `make bench`: messages and
 * bytes each node sends per protocol period in a steady cluster, periods
 * for one update to reach every node, and periods for a cluster joined
 * through one seed to agree. Figures, not verdicts. */
#include "../sim/sim.h"

#include "../../common/common.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void bench(size_t n, uint64_t seed)
{
    struct membership_config c;
    membership_config_defaults(&c);
    struct sim *s = sim_new(seed, n, &c);
    size_t seed0 = 0;
    sim_start(s, 0, NULL, 0);
    for (size_t i = 1; i < n; i++) {
        sim_run_for(s, 1);
        sim_start(s, i, &seed0, 1);
    }
    unsigned join = 0;
    while (!sim_converged(s) && join < 600) {
        sim_run_for(s, c.period_ms);
        join++;
    }
    /* Steady state: let the join's broadcasts drain, then count. */
    sim_run_for(s, 30 * c.period_ms);
    struct sim_stats before = *sim_stats(s);
    const unsigned periods = 60;
    sim_run_for(s, periods * c.period_ms);
    const struct sim_stats *after = sim_stats(s);
    double msgs = (double)(after->udp_msgs - before.udp_msgs +
                           after->sync_msgs - before.sync_msgs) /
                  (double)n / periods;
    double bytes = (double)(after->udp_bytes - before.udp_bytes +
                            after->sync_bytes - before.sync_bytes) /
                   (double)n / periods;
    double udp_bytes =
        (double)(after->udp_bytes - before.udp_bytes) / (double)n / periods;

    /* One node changes its record; count periods (in tenths) until every
     * node holds the new incarnation. */
    struct membership *m0 = sim_node(s, 0);
    struct wire_member self = membership_get(m0, 0)->info;
    membership_update_self(m0, &self);
    uint64_t want = membership_get(m0, 0)->info.incarnation;
    uint64_t t0 = sim_now(s);
    bool all = false;
    while (!all && sim_now(s) - t0 < 300ull * c.period_ms) {
        sim_run_for(s, c.period_ms / 10);
        all = true;
        for (size_t i = 1; i < n && all; i++) {
            const struct member_view *v =
                membership_find(sim_node(s, i), self.id);
            all = v && v->info.incarnation >= want;
        }
    }
    double spread = (double)(sim_now(s) - t0) / c.period_ms;
    printf("sim %5zu nodes  join %3u periods  %5.2f msgs/node/period  "
           "%7.0f B/node/period (%5.0f B datagrams)  update reaches all in "
           "%4.1f periods%s\n",
           n, join, msgs, bytes, udp_bytes, spread, all ? "" : " (not all)");
    sim_free(s);
}

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    uint64_t seed = argc > 1 ? strtoull(argv[1], NULL, 10) : 42;
    printf("== membership in the simulator (T = 1 s, seed %llu)\n",
           (unsigned long long)seed);
    const size_t sizes[] = {10, 100, 1000};
    for (size_t i = 0; i < 3; i++)
        bench(sizes[i], seed);
    return 0;
}
