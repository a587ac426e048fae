/* Consistent hashing with virtual tokens and topology-aware placement
 * (DESIGN §5). See ring.h. */
#include "ring.h"

#include "../common/common.h"

#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
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
    /* per region: its nodes and distinct zones (n_regions of them) */
    struct ring_region {
        const char *name; /* in nodes[] */
        size_t nodes, zones;
    } * regions;
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
    r->regions = calloc(r->n_regions, sizeof(*r->regions));
    size_t *idx = malloc(n * sizeof(*idx));
    if (!r->regions || !idx) {
        free(idx);
        ring_free(r);
        return NULL;
    }
    size_t nr = 0;
    for (size_t j = 0; j < n; j++) {
        size_t k = 0;
        while (k < nr && strcmp(r->regions[k].name, r->nodes[j].region) != 0)
            k++;
        if (k == nr)
            r->regions[nr++].name = r->nodes[j].region;
    }
    for (size_t k = 0; k < nr; k++) {
        size_t m = 0;
        for (size_t j = 0; j < n; j++)
            if (strcmp(r->nodes[j].region, r->regions[k].name) == 0)
                idx[m++] = j;
        r->regions[k].nodes = m;
        r->regions[k].zones = count_distinct(r->nodes, idx, m, same_zone);
    }
    free(idx);
    return r;
}

void ring_free(struct ring *r)
{
    if (!r)
        return;
    free(r->nodes);
    free(r->tokens);
    free(r->regions);
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

/* Takes up to n more nodes into out[got..): clockwise from the key, nodes
 * of `region` only (NULL: any), preferring first new regions (with any
 * region), then new zones, then any node not yet taken. Each pass stops
 * early once nothing it prefers can remain. @retval the new count. */
static size_t take(const struct ring *r, size_t start, const char *region,
                   size_t n, size_t *out, size_t got)
{
    /* Zones are new among the region's picks, or among all of them. */
    size_t first = region ? got : 0, all_zones = r->n_zones;
    if (region) {
        /* At most the region's nodes; its zones end the zone pass. */
        const struct ring_region *g = NULL;
        for (size_t i = 0; i < r->n_regions && !g; i++)
            if (strcmp(r->regions[i].name, region) == 0)
                g = &r->regions[i];
        if (!g)
            return got;
        if (n > g->nodes)
            n = g->nodes;
        all_zones = g->zones;
    }
    size_t want = got + n;
    for (int pass = region ? 1 : 0; pass < 3 && got < want; pass++) {
        size_t regions = count_distinct(r->nodes, out, got, same_region);
        size_t zones =
            count_distinct(r->nodes, out + first, got - first, same_zone);
        for (size_t k = 0; k < r->n_tokens && got < want; k++) {
            if (pass == 0 && regions == r->n_regions)
                break;
            if (pass == 1 && zones == all_zones)
                break;
            const struct ring_node *c =
                &r->nodes[r->tokens[(start + k) % r->n_tokens].node];
            if (region && strcmp(c->region, region) != 0)
                continue;
            size_t idx = (size_t)(c - r->nodes);
            bool taken = false, new_region = true, new_zone = true;
            for (size_t i = 0; i < got; i++) {
                taken |= out[i] == idx;
                new_region &= !same_region(&r->nodes[out[i]], c);
                if (i >= first)
                    new_zone &= !same_zone(&r->nodes[out[i]], c);
            }
            if (taken)
                continue;
            bool ok = pass == 0 ? new_region : pass == 1 ? new_zone : true;
            if (!ok)
                continue;
            out[got++] = idx;
            regions += new_region;
            zones += new_zone;
        }
    }
    return got;
}

size_t ring_preference_list(const struct ring *r, uint64_t token,
                            const struct ring_placement *p, size_t *out)
{
    if (p->n_regions == 0)
        return ring_preference_n(r, token, p->n, out);
    size_t start = first_at_or_after(r, token), got = 0;
    for (size_t i = 0; i < p->n_regions; i++)
        got = take(r, start, p->regions[i].name, p->regions[i].count, out, got);
    return got;
}

size_t ring_preference_n(const struct ring *r, uint64_t token, size_t n,
                         size_t *out)
{
    return take(r, first_at_or_after(r, token), NULL, n < r->n ? n : r->n, out,
                0);
}

size_t ring_walk(const struct ring *r, uint64_t token,
                 const struct ring_placement *p, size_t *out)
{
    size_t got = ring_preference_list(r, token, p, out);
    return take(r, first_at_or_after(r, token), NULL, r->n - got, out, got);
}

size_t ring_region_nodes(const struct ring *r, const char *region)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += strcmp(r->nodes[i].region, region) == 0;
    return n;
}

bool ring_placement_short(const struct ring *r, const struct ring_placement *p,
                          char *buf, size_t cap)
{
    for (size_t i = 0; i < p->n_regions; i++) {
        size_t have = ring_region_nodes(r, p->regions[i].name);
        if (have < p->regions[i].count) {
            snprintf(buf, cap,
                     "region %s has %zu node%s for %u replicas; its keys keep "
                     "%zu cop%s there until nodes join it",
                     p->regions[i].name, have, have == 1 ? "" : "s",
                     p->regions[i].count, have, have == 1 ? "y" : "ies");
            return true;
        }
    }
    return false;
}

/* ---- placements ---- */

void ring_placement_set_n(struct ring_placement *p, unsigned n)
{
    memset(p, 0, sizeof(*p));
    p->n = n;
}

unsigned ring_placement_total(const struct ring_placement *p)
{
    unsigned t = p->n;
    for (size_t i = 0; i < p->n_regions; i++)
        t += p->regions[i].count;
    return t;
}

/* A count: 1 to RING_MAX_REPLICAS decimal digits, whole. */
static bool parse_count(const char *s, size_t len, unsigned *out)
{
    unsigned v = 0;
    if (len == 0 || len > 2)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return true;
}

static int cmp_region(const void *a, const void *b)
{
    return strcmp(((const struct ring_region_count *)a)->name,
                  ((const struct ring_region_count *)b)->name);
}

#define SYNTAX "expected N or REGION:N[,REGION:N...]"

int ring_placement_parse(struct ring_placement *p, const char *s, char *err,
                         size_t errlen)
{
    memset(p, 0, sizeof(*p));
    unsigned v;
    if (!strchr(s, ':')) {
        if (!parse_count(s, strlen(s), &v) || v < 1 || v > RING_MAX_REPLICAS) {
            snprintf(err, errlen, "--replicas '%s': %s, N from 1 to %d", s,
                     SYNTAX, RING_MAX_REPLICAS);
            return KV_ERR_INVAL;
        }
        p->n = v;
        return 0;
    }
    for (const char *item = s;;) {
        const char *end = strchr(item, ',');
        size_t len = end ? (size_t)(end - item) : strlen(item);
        const char *colon = memchr(item, ':', len);
        size_t name_len = colon ? (size_t)(colon - item) : 0;
        if (!colon || name_len == 0 || name_len >= GOSSIP_NAME_MAX ||
            !parse_count(colon + 1, len - name_len - 1, &v)) {
            snprintf(err, errlen,
                     "--replicas '%s': %s (a region name is 1 to "
                     "%d characters)",
                     s, SYNTAX, GOSSIP_NAME_MAX - 1);
            return KV_ERR_INVAL;
        }
        struct ring_region_count rc = {.count = v};
        memcpy(rc.name, item, name_len);
        if (v < 1) {
            snprintf(err, errlen,
                     "--replicas: region %s has a count of 0 "
                     "(each is 1 to %d)",
                     rc.name, RING_MAX_REPLICAS);
            return KV_ERR_INVAL;
        }
        for (size_t i = 0; i < p->n_regions; i++)
            if (strcmp(p->regions[i].name, rc.name) == 0) {
                snprintf(err, errlen, "--replicas: region %s is named twice",
                         rc.name);
                return KV_ERR_INVAL;
            }
        if (p->n_regions == RING_MAX_REGIONS) {
            snprintf(err, errlen, "--replicas: at most %d regions",
                     RING_MAX_REGIONS);
            return KV_ERR_INVAL;
        }
        p->regions[p->n_regions++] = rc;
        if (ring_placement_total(p) > RING_MAX_REPLICAS) {
            snprintf(err, errlen, "--replicas: at most %d replicas in all",
                     RING_MAX_REPLICAS);
            return KV_ERR_INVAL;
        }
        if (!end)
            break;
        item = end + 1;
    }
    qsort(p->regions, p->n_regions, sizeof(p->regions[0]), cmp_region);
    char text[GOSSIP_REPLICAS_MAX + 1];
    ring_placement_format(p, text, sizeof(text));
    if (strlen(text) >= GOSSIP_REPLICAS_MAX) {
        snprintf(err, errlen, "--replicas: at most %d characters",
                 GOSSIP_REPLICAS_MAX - 1);
        return KV_ERR_INVAL;
    }
    return 0;
}

void ring_placement_format(const struct ring_placement *p, char *buf,
                           size_t cap)
{
    if (cap == 0)
        return;
    if (p->n_regions == 0) {
        snprintf(buf, cap, "%u", p->n);
        return;
    }
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < p->n_regions && at < cap; i++) {
        int w = snprintf(buf + at, cap - at, "%s%s:%u", i ? "," : "",
                         p->regions[i].name, p->regions[i].count);
        if (w < 0)
            break;
        at += (size_t)w;
    }
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
