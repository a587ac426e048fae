/* Consistent hashing with virtual tokens and topology-aware placement
 * (DESIGN §5). See ring.h. */
#include "ring.h"

#include "../common/common.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct token {
    uint64_t token;
    uint32_t node; /* index into nodes */
};

struct ring {
    struct ring_node *nodes; /* sorted by id */
    size_t n;
    struct token *tokens; /* sorted by token */
    size_t n_tokens;
    size_t n_regions, n_zones; /* distinct, to stop walks early */
};

uint64_t ring_vnode_token(const uint8_t id[CRYPTO_NODE_ID_BYTES], uint32_t i)
{
    uint8_t in[CRYPTO_NODE_ID_BYTES + 4], h[8];
    memcpy(in, id, CRYPTO_NODE_ID_BYTES);
    be32_put(in + CRYPTO_NODE_ID_BYTES, i);
    crypto_generichash(h, sizeof(h), in, sizeof(in), NULL, 0);
    return be64_get(h);
}

static int cmp_node(const void *a, const void *b)
{
    return memcmp(((const struct ring_node *)a)->id,
                  ((const struct ring_node *)b)->id, CRYPTO_NODE_ID_BYTES);
}

static int cmp_token(const void *a, const void *b)
{
    const struct token *x = a, *y = b;
    if (x->token != y->token)
        return x->token < y->token ? -1 : 1;
    /* Equal tokens (2^-64 apart from chance): order by node, so that every
     * node still builds the same ring. */
    return x->node < y->node ? -1 : x->node > y->node;
}

static bool same_region(const struct ring_node *a, const struct ring_node *b)
{
    return strcmp(a->region, b->region) == 0;
}

static bool same_zone(const struct ring_node *a, const struct ring_node *b)
{
    return same_region(a, b) && strcmp(a->zone, b->zone) == 0;
}

/* Counts distinct regions (or zones, by `same`) among n nodes: nodes[idx[i]]
 * when idx is given, else nodes[i]. A pairwise scan: n is a replica count or
 * a ring's size, and a ring is built once per view change. */
static size_t
count_distinct(const struct ring_node *nodes, const size_t *idx, size_t n,
               bool (*same)(const struct ring_node *, const struct ring_node *))
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++) {
        const struct ring_node *x = &nodes[idx ? idx[i] : i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = same(x, &nodes[idx ? idx[j] : j]);
        d += !seen;
    }
    return d;
}

struct ring *ring_build(const struct ring_node *nodes, size_t n,
                        unsigned vnodes)
{
    if (n == 0 || vnodes == 0)
        return NULL;
    struct ring *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->n = n;
    r->n_tokens = n * vnodes;
    r->nodes = malloc(n * sizeof(*r->nodes));
    r->tokens = malloc(r->n_tokens * sizeof(*r->tokens));
    if (!r->nodes || !r->tokens) {
        ring_free(r);
        return NULL;
    }
    memcpy(r->nodes, nodes, n * sizeof(*nodes));
    qsort(r->nodes, n, sizeof(*r->nodes), cmp_node);
    for (size_t j = 0; j < n; j++)
        for (unsigned i = 0; i < vnodes; i++)
            r->tokens[j * vnodes + i] = (struct token){
                ring_vnode_token(r->nodes[j].id, i), (uint32_t)j};
    qsort(r->tokens, r->n_tokens, sizeof(*r->tokens), cmp_token);
    r->n_regions = count_distinct(r->nodes, NULL, n, same_region);
    r->n_zones = count_distinct(r->nodes, NULL, n, same_zone);
    return r;
}

void ring_free(struct ring *r)
{
    if (!r)
        return;
    free(r->nodes);
    free(r->tokens);
    free(r);
}

size_t ring_size(const struct ring *r)
{
    return r->n;
}

const struct ring_node *ring_node_at(const struct ring *r, size_t i)
{
    return i < r->n ? &r->nodes[i] : NULL;
}

size_t ring_token_count(const struct ring *r)
{
    return r->n_tokens;
}

uint64_t ring_token_at(const struct ring *r, size_t k)
{
    return r->tokens[k].token;
}

/* Index of the first token >= t, wrapping to 0 past the end. */
static size_t first_at_or_after(const struct ring *r, uint64_t t)
{
    size_t lo = 0, hi = r->n_tokens;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->tokens[mid].token < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == r->n_tokens ? 0 : lo;
}

size_t ring_preference_list(const struct ring *r, uint64_t token, size_t n,
                            size_t *out)
{
    if (n > r->n)
        n = r->n;
    size_t start = first_at_or_after(r, token), got = 0;
    /* Pass 0 takes nodes in new regions, pass 1 nodes in new zones, pass 2
     * any node not yet taken; each pass walks clockwise from the key. A pass
     * stops early once nothing it prefers can remain. */
    for (int pass = 0; pass < 3 && got < n; pass++) {
        size_t regions = count_distinct(r->nodes, out, got, same_region);
        size_t zones = count_distinct(r->nodes, out, got, same_zone);
        for (size_t k = 0; k < r->n_tokens && got < n; k++) {
            if (pass == 0 && regions == r->n_regions)
                break;
            if (pass == 1 && zones == r->n_zones)
                break;
            const struct ring_node *c =
                &r->nodes[r->tokens[(start + k) % r->n_tokens].node];
            size_t idx = (size_t)(c - r->nodes);
            bool taken = false, new_region = true, new_zone = true;
            for (size_t i = 0; i < got; i++) {
                taken |= out[i] == idx;
                new_region &= !same_region(&r->nodes[out[i]], c);
                new_zone &= !same_zone(&r->nodes[out[i]], c);
            }
            if (taken)
                continue;
            bool want = pass == 0 ? new_region : pass == 1 ? new_zone : true;
            if (!want)
                continue;
            out[got++] = idx;
            regions += new_region;
            zones += new_zone;
        }
    }
    return got;
}

void ring_ownership(const struct ring *r, double *share)
{
    for (size_t j = 0; j < r->n; j++)
        share[j] = 0;
    /* Token k owns (token k-1, token k]; the first wraps around. */
    for (size_t k = 0; k < r->n_tokens; k++) {
        uint64_t prev = r->tokens[(k + r->n_tokens - 1) % r->n_tokens].token;
        uint64_t span = r->tokens[k].token - prev; /* mod 2^64 */
        if (r->n_tokens == 1)
            span = UINT64_MAX;
        share[r->tokens[k].node] += (double)span / 18446744073709551616.0;
    }
}
