/* The fake network (net.h). */
#include "net.h"

#include <stdlib.h>
#include <string.h>

void fake_net_init(struct fake_net *net, size_t n)
{
    memset(net, 0, sizeof(*net));
    net->n = n;
    net->slow_ms = calloc(n ? n : 1, sizeof(*net->slow_ms));
    net->group = calloc(n ? n : 1, sizeof(*net->group));
    net->region = calloc(n ? n : 1, sizeof(*net->region));
    if (!net->slow_ms || !net->group || !net->region)
        abort();
}

void fake_net_free(struct fake_net *net)
{
    free(net->slow_ms);
    free(net->group);
    free(net->region);
    net->slow_ms = NULL;
    net->group = NULL;
    net->region = NULL;
}

void fake_net_partition(struct fake_net *net, const int *group)
{
    net->partitioned = group != NULL;
    for (size_t i = 0; i < net->n; i++)
        net->group[i] = group ? group[i] : 0;
}

bool fake_net_add_filter(struct fake_net *net, fake_net_filter_fn fn, void *arg)
{
    if (net->n_filters == FAKE_NET_MAX_FILTERS)
        return false;
    net->filters[net->n_filters].fn = fn;
    net->filters[net->n_filters].arg = arg;
    net->n_filters++;
    return true;
}

void fake_net_clear_filters(struct fake_net *net)
{
    net->n_filters = 0;
}

bool fake_net_cut(const struct fake_net *net, size_t from, size_t to,
                  bool datagram)
{
    if (net->partitioned && net->group[from] != net->group[to])
        return true;
    for (size_t i = 0; i < net->n_filters; i++)
        if (net->filters[i].fn(net->filters[i].arg, from, to, datagram))
            return true;
    return false;
}

struct fake_route fake_net_route(const struct fake_net *net,
                                 struct fake_loop *loop, size_t from, size_t to,
                                 bool datagram)
{
    struct fake_route r = {0};
    if (fake_net_cut(net, from, to, datagram) ||
        (datagram && fake_loop_uniform(loop) < net->loss)) {
        r.lost = true;
        return r;
    }
    r.copies = datagram && fake_loop_uniform(loop) < net->dup ? 2 : 1;
    for (unsigned c = 0; c < r.copies; c++) {
        r.delay[c] = net->delay_min + net->slow_ms[from] + net->slow_ms[to];
        if (net->jitter)
            r.delay[c] += fake_loop_rand(loop) % (net->jitter + 1);
        uint8_t a = net->region[from], b = net->region[to];
        r.delay[c] += net->wan[a][b];
        if (net->wan_jitter[a][b])
            r.delay[c] += fake_loop_rand(loop) % (net->wan_jitter[a][b] + 1);
    }
    return r;
}
