/* ring: token format, determinism, balance, and zone- and region-aware
 * preference lists (DESIGN §5). */
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
#include "../../node/ring.h"

/* A node whose key is derived from i, as a real node's id is its key's hash;
 * seed picks another family of keys for the distribution test. */
static struct ring_node node(uint64_t seed, unsigned i, const char *region,
                             const char *zone)
{
    struct ring_node n;
    memset(&n, 0, sizeof(n));
    uint8_t pub[32], in[16];
    be64_put(in, seed);
    be64_put(in + 8, i);
    crypto_generichash(pub, sizeof(pub), in, sizeof(in), NULL, 0);
    crypto_node_id(n.id, pub);
    snprintf(n.region, sizeof(n.region), "%s", region);
    snprintf(n.zone, sizeof(n.zone), "%s", zone);
    return n;
}

/* The k-th of a reproducible stream of key tokens for seed x. */
static uint64_t next_token(uint64_t *x)
{
    uint8_t seed[randombytes_SEEDBYTES] = {0}, out[8];
    be64_put(seed, (*x)++);
    randombytes_buf_deterministic(out, sizeof(out), seed);
    return be64_get(out);
}

static double max_over_mean(const struct ring *r)
{
    size_t n = ring_size(r);
    double share[64], max = 0;
    ring_ownership(r, share);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += share[i];
        if (share[i] > max)
            max = share[i];
    }
    assert_true(sum > 0.999999 && sum < 1.000001);
    return max * (double)n;
}

static void test_vnode_token_is_a_fixed_format(void **state)
{
    (void)state;
    uint8_t id[16];
    for (int i = 0; i < 16; i++)
        id[i] = (uint8_t)i;
    /* BLAKE2b-64 of id ‖ be32(i), checked against Python's hashlib. */
    assert_int_equal(ring_vnode_token(id, 0), 0xa49916b334bb90b7ULL);
    assert_int_equal(ring_vnode_token(id, 63), 0x1b30e72d40c47a1eULL);
}

static void test_equal_views_give_equal_rings(void **state)
{
    (void)state;
    struct ring_node a[6], b[6];
    for (unsigned i = 0; i < 6; i++) {
        a[i] = node(1, i, "r", i % 2 ? "z1" : "z2");
        b[5 - i] = a[i];
    }
    struct ring *ra = ring_build(a, 6, 64), *rb = ring_build(b, 6, 64);
    uint64_t x = 7;
    for (int k = 0; k < 5000; k++) {
        size_t pa[3], pb[3];
        uint64_t t = next_token(&x);
        assert_int_equal(ring_preference_n(ra, t, 3, pa), 3);
        assert_int_equal(ring_preference_n(rb, t, 3, pb), 3);
        for (int i = 0; i < 3; i++)
            assert_memory_equal(ring_node_at(ra, pa[i])->id,
                                ring_node_at(rb, pb[i])->id, 16);
    }
    ring_free(ra);
    ring_free(rb);
}

static void test_ten_nodes_most_loaded_owns_at_most_1_3_mean(void **state)
{
    (void)state;
    struct ring_node ns[10];
    for (unsigned i = 0; i < 10; i++)
        ns[i] = node(1, i, "r", "z");
    struct ring *r = ring_build(ns, 10, RING_DEFAULT_VNODES);
    double ratio = max_over_mean(r);
    printf("ring: 10 nodes x 64 vnodes: most loaded owns %.3f x the mean\n",
           ratio);
    assert_true(ratio <= 1.3);
    ring_free(r);

    /* The same over many clusters of random ids: a figure for the design,
     * not a pass/fail line (64 hashed tokens give each node's share a
     * relative spread of about 1/sqrt(64)). */
    enum { TRIALS = 200 };
    double ratios[TRIALS];
    int over = 0;
    for (unsigned t = 0; t < TRIALS; t++) {
        for (unsigned i = 0; i < 10; i++)
            ns[i] = node(100 + t, i, "r", "z");
        r = ring_build(ns, 10, RING_DEFAULT_VNODES);
        ratios[t] = max_over_mean(r);
        over += ratios[t] > 1.3;
        ring_free(r);
    }
    for (int i = 1; i < TRIALS; i++) /* insertion sort: 200 values */
        for (int j = i; j > 0 && ratios[j] < ratios[j - 1]; j--) {
            double tmp = ratios[j];
            ratios[j] = ratios[j - 1];
            ratios[j - 1] = tmp;
        }
    printf("ring: over %d random 10-node clusters: max/mean p50 %.3f, p90 "
           "%.3f, p99 %.3f; above 1.3 in %d\n",
           TRIALS, ratios[TRIALS / 2], ratios[TRIALS * 9 / 10],
           ratios[TRIALS * 99 / 100], over);
}

static void test_eleventh_node_takes_its_share_and_only_that(void **state)
{
    (void)state;
    struct ring_node ns[11];
    for (unsigned i = 0; i < 11; i++)
        ns[i] = node(1, i, "r", "z");
    struct ring *r10 = ring_build(ns, 10, 64), *r11 = ring_build(ns, 11, 64);
    double share[11];
    ring_ownership(r11, share);
    size_t newcomer = 0;
    for (size_t i = 0; i < 11; i++)
        if (memcmp(ring_node_at(r11, i)->id, ns[10].id, 16) == 0)
            newcomer = i;
    printf("ring: an 11th node takes %.4f of the key space (limit %.4f)\n",
           share[newcomer], 1.5 / 11);
    assert_true(share[newcomer] <= 1.5 / 11);
    /* Consistent hashing: a key changes owner only to the newcomer. */
    uint64_t x = 99;
    for (int k = 0; k < 20000; k++) {
        size_t a, b;
        uint64_t t = next_token(&x);
        ring_preference_n(r10, t, 1, &a);
        ring_preference_n(r11, t, 1, &b);
        if (memcmp(ring_node_at(r10, a)->id, ring_node_at(r11, b)->id, 16))
            assert_int_equal(b, newcomer);
    }
    ring_free(r10);
    ring_free(r11);
}

static void test_three_zones_n3_every_list_spans_three_zones(void **state)
{
    (void)state;
    const char *zones[3] = {"a", "b", "c"};
    struct ring_node ns[10];
    for (unsigned i = 0; i < 10; i++) /* 4, 3 and 3 nodes per zone */
        ns[i] = node(2, i, "eu", zones[i % 3]);
    struct ring *r = ring_build(ns, 10, 64);
    uint64_t x = 5;
    for (int k = 0; k < 20000; k++) {
        size_t p[3];
        assert_int_equal(ring_preference_n(r, next_token(&x), 3, p), 3);
        const char *z0 = ring_node_at(r, p[0])->zone;
        const char *z1 = ring_node_at(r, p[1])->zone;
        const char *z2 = ring_node_at(r, p[2])->zone;
        assert_true(strcmp(z0, z1) && strcmp(z1, z2) && strcmp(z0, z2));
    }
    ring_free(r);
}

static void test_regions_come_before_zones(void **state)
{
    (void)state;
    /* Two regions: eu with zones a and b (4 nodes), us with one zone (2). */
    struct ring_node ns[6] = {node(3, 0, "eu", "a"), node(3, 1, "eu", "a"),
                              node(3, 2, "eu", "b"), node(3, 3, "eu", "b"),
                              node(3, 4, "us", "x"), node(3, 5, "us", "x")};
    struct ring *r = ring_build(ns, 6, 64);
    uint64_t x = 11;
    for (int k = 0; k < 20000; k++) {
        size_t p[3];
        assert_int_equal(ring_preference_n(r, next_token(&x), 3, p), 3);
        const struct ring_node *a = ring_node_at(r, p[0]),
                               *b = ring_node_at(r, p[1]),
                               *c = ring_node_at(r, p[2]);
        /* The first two are in different regions; the three span three
         * zones (both eu zones and us). */
        assert_true(strcmp(a->region, b->region) != 0);
        assert_true(strcmp(a->zone, b->zone) && strcmp(b->zone, c->zone) &&
                    strcmp(a->zone, c->zone));
    }
    ring_free(r);
}

static struct ring_placement placement(const char *text)
{
    struct ring_placement p;
    char err[160];
    assert_int_equal(ring_placement_parse(&p, text, err, sizeof(err)), 0);
    return p;
}

static void test_per_region_counts_place_that_many_in_each(void **state)
{
    (void)state;
    /* eu: zones a, b, c with 2 nodes each; us: zones a, b with 2 each;
     * ap: one node. */
    struct ring_node ns[11];
    const char *eu_zones[3] = {"a", "b", "c"};
    for (unsigned i = 0; i < 6; i++)
        ns[i] = node(6, i, "eu", eu_zones[i % 3]);
    for (unsigned i = 6; i < 10; i++)
        ns[i] = node(6, i, "us", i % 2 ? "a" : "b");
    ns[10] = node(6, 10, "ap", "a");
    struct ring *r = ring_build(ns, 11, 64);
    struct ring_placement p = placement("us:3,eu:3");
    char warn[160];
    assert_false(ring_placement_short(r, &p, warn, sizeof(warn)));
    uint64_t x = 21;
    for (int k = 0; k < 5000; k++) {
        size_t l[RING_MAX_REPLICAS], w[11];
        uint64_t t = next_token(&x);
        size_t n = ring_preference_list(r, t, &p, l);
        assert_int_equal(n, 6);
        size_t eu = 0, us = 0;
        for (size_t i = 0; i < n; i++) {
            const struct ring_node *a = ring_node_at(r, l[i]);
            eu += strcmp(a->region, "eu") == 0;
            us += strcmp(a->region, "us") == 0;
            for (size_t j = 0; j < i; j++)
                assert_true(l[i] != l[j]);
        }
        assert_int_equal(eu, 3);
        assert_int_equal(us, 3);
        /* eu's three span its three zones; us's three span both of its. */
        const struct ring_node *e0 = ring_node_at(r, l[0]),
                               *e1 = ring_node_at(r, l[1]),
                               *e2 = ring_node_at(r, l[2]);
        assert_string_equal(e0->region, "eu"); /* regions in name order */
        assert_true(strcmp(e0->zone, e1->zone) && strcmp(e1->zone, e2->zone) &&
                    strcmp(e0->zone, e2->zone));
        assert_true(strcmp(ring_node_at(r, l[3])->zone,
                           ring_node_at(r, l[4])->zone) != 0);
        /* The walk starts with the list and then holds every other node. */
        assert_int_equal(ring_walk(r, t, &p, w), 11);
        assert_memory_equal(w, l, n * sizeof(l[0]));
        bool seen[11] = {false};
        for (size_t i = 0; i < 11; i++)
            seen[w[i]] = true;
        for (size_t i = 0; i < 11; i++)
            assert_true(seen[i]);
    }
    /* A region short of nodes keeps what it has, and says so. */
    p = placement("ap:2,eu:1");
    assert_true(ring_placement_short(r, &p, warn, sizeof(warn)));
    assert_non_null(strstr(warn, "region ap has 1 node for 2 replicas"));
    size_t l[RING_MAX_REPLICAS];
    assert_int_equal(ring_preference_list(r, 99, &p, l), 2);
    /* A region no node is in holds nothing. */
    p = placement("mars:2");
    assert_int_equal(ring_preference_list(r, 99, &p, l), 0);
    ring_free(r);
}

static void test_placement_text_is_canonical(void **state)
{
    (void)state;
    char a[GOSSIP_REPLICAS_MAX], b[GOSSIP_REPLICAS_MAX];
    struct ring_placement p = placement("us:2,eu:3"),
                          q = placement("eu:3,us:2");
    ring_placement_format(&p, a, sizeof(a));
    ring_placement_format(&q, b, sizeof(b));
    assert_string_equal(a, "eu:3,us:2");
    assert_string_equal(a, b);
    p = placement("5");
    ring_placement_format(&p, a, sizeof(a));
    assert_string_equal(a, "5");
    assert_int_equal(ring_placement_total(&p), 5);
    char err[160];
    /* Past the text gossip carries. */
    assert_int_equal(
        ring_placement_parse(&p,
                             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1,"
                             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb:1,cc:1",
                             err, sizeof(err)),
        KV_ERR_INVAL);
    assert_non_null(strstr(err, "characters"));
}

static void test_preference_list_is_distinct_and_capped(void **state)
{
    (void)state;
    struct ring_node ns[2] = {node(4, 0, "r", "z"), node(4, 1, "r", "z")};
    struct ring *r = ring_build(ns, 2, 8);
    size_t p[5];
    assert_int_equal(ring_preference_n(r, 12345, 5, p), 2);
    assert_true(p[0] != p[1]);
    assert_null(ring_build(ns, 0, 8));
    ring_free(r);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vnode_token_is_a_fixed_format),
        cmocka_unit_test(test_equal_views_give_equal_rings),
        cmocka_unit_test(test_ten_nodes_most_loaded_owns_at_most_1_3_mean),
        cmocka_unit_test(test_eleventh_node_takes_its_share_and_only_that),
        cmocka_unit_test(test_three_zones_n3_every_list_spans_three_zones),
        cmocka_unit_test(test_regions_come_before_zones),
        cmocka_unit_test(test_preference_list_is_distinct_and_capped),
        cmocka_unit_test(test_per_region_counts_place_that_many_in_each),
        cmocka_unit_test(test_placement_text_is_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
