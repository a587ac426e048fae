/* A fake network between n nodes: latency with jitter, nodes that are
 * slower than others, regions with a latency and jitter per pair, datagram
 * loss and duplication, partitions, and
 * pluggable filters that cut traffic by any rule a test likes (Tarantool's
 * test/unit/fakenet.c keeps a filter list per socket the same way). Streams
 * are never lost to loss or duplication, only cut: their sender then learns
 * the link failed. */
#ifndef ESSAIM_FAKE_NET_H
#define ESSAIM_FAKE_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"

#define FAKE_NET_MAX_FILTERS 8
#define FAKE_NET_MAX_REGIONS 8

/* Returns true to cut traffic from node `from` to node `to`. */
typedef bool (*fake_net_filter_fn)(void *arg, size_t from, size_t to,
                                   bool datagram);

struct fake_net {
    size_t n;
    double loss, dup; /* datagrams only */
    uint32_t delay_min, jitter;
    uint32_t *slow_ms; /* per node: extra delay to and from it */
    /* per node: its region (0..FAKE_NET_MAX_REGIONS-1); messages between
     * two regions take wan[a][b] more, plus up to wan_jitter[a][b] */
    uint8_t *region;
    uint32_t wan[FAKE_NET_MAX_REGIONS][FAKE_NET_MAX_REGIONS];
    uint32_t wan_jitter[FAKE_NET_MAX_REGIONS][FAKE_NET_MAX_REGIONS];
    int *group; /* per node: its side of a partition */
    bool partitioned;
    struct {
        fake_net_filter_fn fn;
        void *arg;
    } filters[FAKE_NET_MAX_FILTERS];
    size_t n_filters;
};

/* What becomes of one message: lost, or delivered copies times, each
 * delay[i] ms from now. */
struct fake_route {
    bool lost;
    unsigned copies;
    uint64_t delay[2];
};

void fake_net_init(struct fake_net *net, size_t n);
void fake_net_free(struct fake_net *net);

/* group[i] is node i's side; traffic between sides is cut. NULL heals. */
void fake_net_partition(struct fake_net *net, const int *group);

/* Adds a filter (at most FAKE_NET_MAX_FILTERS). @retval false: full. */
bool fake_net_add_filter(struct fake_net *net, fake_net_filter_fn fn,
                         void *arg);
void fake_net_clear_filters(struct fake_net *net);

/* True when traffic from `from` to `to` is cut (a partition or a filter). */
bool fake_net_cut(const struct fake_net *net, size_t from, size_t to,
                  bool datagram);

/* Decides one message's fate, drawing from the loop's PRNG. */
struct fake_route fake_net_route(const struct fake_net *net,
                                 struct fake_loop *loop, size_t from, size_t to,
                                 bool datagram);

#endif
