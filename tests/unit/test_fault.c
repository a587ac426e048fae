/* fault: rules, blocks and the clock offset decide what happens to
 * traffic, only when the layer is on; rates come out near what was asked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "../../common/common.h"
#include "../../node/fault.h"

static struct fault_rule rule(const char *peer, uint32_t drop)
{
    struct fault_rule r;
    memset(&r, 0, sizeof(r));
    snprintf(r.peer, sizeof(r.peer), "%s", peer);
    r.dirs = FAULT_IN | FAULT_OUT;
    r.transports = FAULT_UDP;
    r.drop = drop;
    return r;
}

static void test_off_refuses_every_change_and_passes_everything(void **s)
{
    (void)s;
    struct fault *f = fault_new(false, 1);
    assert_non_null(f);
    struct fault_rule r = rule("*", FAULT_PPM);
    assert_int_equal(fault_set_rule(f, &r), KV_ERR_PERM);
    const char *p[] = {"127.0.0.1:7401"};
    assert_int_equal(fault_block(f, p, 1), KV_ERR_PERM);
    assert_int_equal(fault_set_clock_offset(f, 1000), KV_ERR_PERM);
    assert_int_equal(fault_clear(f), KV_ERR_PERM);
    struct fault_verdict v;
    fault_decide(f, "127.0.0.1:7401", FAULT_OUT, FAULT_UDP, &v);
    assert_false(v.drop || v.dup || v.reorder || v.corrupt || v.delay_ms);
    assert_int_equal(fault_wall_ms(f, 5000), 5000);
    fault_free(f);
}

static void test_rates_are_kept_and_the_peer_rule_wins(void **s)
{
    (void)s;
    struct fault *f = fault_new(true, 42);
    struct fault_rule any = rule("*", 200000); /* 20% */
    assert_int_equal(fault_set_rule(f, &any), 0);
    struct fault_rule one = rule("10.0.0.2:7400", 0);
    one.dirs = FAULT_OUT;
    one.transports = FAULT_UDP;
    one.corrupt = FAULT_PPM;
    one.delay_ms = 30;
    one.jitter_ms = 10;
    assert_int_equal(fault_set_rule(f, &one), 0);
    size_t dropped = 0;
    struct fault_verdict v;
    for (int i = 0; i < 100000; i++) {
        fault_decide(f, "10.0.0.3:7400", FAULT_IN, FAULT_UDP, &v);
        dropped += v.drop;
        assert_false(v.corrupt);
    }
    assert_in_range(dropped, 19000, 21000);
    assert_int_equal(fault_counters(f)->dropped, dropped);
    /* The rule naming the peer, for its direction and transport only. */
    for (int i = 0; i < 1000; i++) {
        fault_decide(f, "10.0.0.2:7400", FAULT_OUT, FAULT_UDP, &v);
        assert_true(v.corrupt && !v.drop);
        assert_in_range(v.delay_ms, 30, 40);
    }
    size_t other = 0;
    for (int i = 0; i < 1000; i++) {
        fault_decide(f, "10.0.0.2:7400", FAULT_IN, FAULT_UDP, &v);
        other += v.drop;
        assert_false(v.corrupt);
    }
    assert_true(other > 100 && other < 300); /* the "*" rule */
    /* A rule of zeros removes it. */
    one.corrupt = 0;
    one.delay_ms = one.jitter_ms = 0;
    assert_int_equal(fault_set_rule(f, &one), 0);
    const struct fault_rule *rules;
    assert_int_equal(fault_rules(f, &rules), 1);
    fault_free(f);
}

static void test_bad_rules_are_refused(void **s)
{
    (void)s;
    struct fault *f = fault_new(true, 1);
    struct fault_rule r = rule("*", FAULT_PPM + 1);
    assert_int_equal(fault_set_rule(f, &r), KV_ERR_INVAL);
    r = rule("", 1);
    assert_int_equal(fault_set_rule(f, &r), KV_ERR_INVAL);
    r = rule("*", 1);
    r.dirs = 0;
    assert_int_equal(fault_set_rule(f, &r), KV_ERR_INVAL);
    r = rule("*", 1);
    r.transports = 8;
    assert_int_equal(fault_set_rule(f, &r), KV_ERR_INVAL);
    /* Stream faults act on the sending side only. */
    r = rule("*", 1);
    r.transports = FAULT_TCP;
    assert_int_equal(fault_set_rule(f, &r), KV_ERR_INVAL);
    r.dirs = FAULT_OUT;
    assert_int_equal(fault_set_rule(f, &r), 0);
    r.drop = 0;
    assert_int_equal(fault_set_rule(f, &r), 0); /* removed again */
    for (int i = 0; i < FAULT_MAX_RULES; i++) {
        char peer[32];
        snprintf(peer, sizeof(peer), "10.0.0.%d:1", i);
        r = rule(peer, 1);
        assert_int_equal(fault_set_rule(f, &r), 0);
    }
    r = rule("10.0.1.1:1", 1);
    assert_int_equal(fault_set_rule(f, &r), KV_ERR_FULL);
    fault_free(f);
}

static void test_blocks_partition_and_clear_heals(void **s)
{
    (void)s;
    struct fault *f = fault_new(true, 7);
    const char *p[] = {"10.0.0.2:7400", "10.0.0.3:7400"};
    assert_int_equal(fault_block(f, p, 2), 0);
    struct fault_verdict v;
    fault_decide(f, "10.0.0.3:7400", FAULT_IN, FAULT_TCP, &v);
    assert_true(v.drop);
    fault_decide(f, "10.0.0.4:7400", FAULT_IN, FAULT_TCP, &v);
    assert_false(v.drop);
    assert_int_equal(fault_counters(f)->blocked, 1);
    /* An offset that would overflow the arithmetic is refused (L7). */
    assert_int_equal(fault_set_clock_offset(f, INT64_MIN), KV_ERR_INVAL);
    assert_int_equal(fault_set_clock_offset(f, FAULT_MAX_CLOCK_OFFSET_MS + 1),
                     KV_ERR_INVAL);
    assert_int_equal(fault_set_clock_offset(f, -2000), 0);
    assert_int_equal(fault_wall_ms(f, 10000), 8000);
    assert_int_equal(fault_wall_ms(f, 1000), 0);
    assert_int_equal(fault_clear(f), 0);
    fault_decide(f, "10.0.0.3:7400", FAULT_IN, FAULT_TCP, &v);
    assert_false(v.drop);
    assert_int_equal(fault_wall_ms(f, 10000), 10000);
    fault_free(f);
}

static void test_corrupt_flips_exactly_one_bit(void **s)
{
    (void)s;
    struct fault *f = fault_new(true, 9);
    for (int round = 0; round < 100; round++) {
        uint8_t buf[37] = {0};
        fault_corrupt(f, buf, sizeof(buf));
        int bits = 0;
        for (size_t i = 0; i < sizeof(buf); i++)
            bits += __builtin_popcount(buf[i]);
        assert_int_equal(bits, 1);
    }
    fault_free(f);
}

/* ---- frame faults on a real channel ---- */

static uint8_t psk[32], key_i[32], key_r[32];

/* Feeds everything a queued into b; returns b's first error. Each whole
 * message b takes is counted in *got. */
static int pipe_bytes(struct chan *a, struct chan *b, int *got)
{
    const uint8_t *p, *m;
    size_t n, off = 0, used, ml;
    chan_output(a, &p, &n);
    while (off < n) {
        int rc = chan_input(b, p + off, n - off, &used);
        if (rc)
            return rc;
        off += used;
        if (chan_take(b, &m, &ml))
            (*got)++;
    }
    chan_output_done(a, n);
    return 0;
}

static void pair(struct chan **i, struct chan **r)
{
    int got = 0;
    assert_int_equal(
        chan_new(i, NOISE_INITIATOR, PROTO_PROLOGUE_PEER, psk, key_i, 4096), 0);
    assert_int_equal(
        chan_new(r, NOISE_RESPONDER, PROTO_PROLOGUE_PEER, psk, key_r, 4096), 0);
    assert_int_equal(pipe_bytes(*i, *r, &got), 0);
    assert_int_equal(pipe_bytes(*r, *i, &got), 0);
    assert_int_equal(pipe_bytes(*i, *r, &got), 0);
    assert_true(chan_established(*i) && chan_established(*r));
}

/* Sends "one" under verdict v, then "two" cleanly; returns the receiver's
 * first error and how many messages it took before it. */
static int send_two(struct fault *f, const struct fault_verdict *v, int *got)
{
    struct chan *i, *r;
    pair(&i, &r);
    uint8_t *held = NULL;
    size_t held_len = 0;
    const struct fault_verdict clean = {0};
    assert_int_equal(
        fault_chan_send(f, i, v, (const uint8_t *)"one", 3, &held, &held_len),
        0);
    assert_int_equal(fault_chan_send(f, i, &clean, (const uint8_t *)"two", 3,
                                     &held, &held_len),
                     0);
    assert_null(held); /* a held message went out after the next one */
    *got = 0;
    int rc = pipe_bytes(i, r, got);
    chan_free(i);
    chan_free(r);
    return rc;
}

static void test_stream_faults_never_pass_authentication(void **s)
{
    (void)s;
    struct fault *f = fault_new(true, 3);
    int got;
    struct fault_verdict v = {0};
    assert_int_equal(send_two(f, &v, &got), 0);
    assert_int_equal(got, 2);
    /* Each frame fault: the receiver takes nothing past the damage, and
     * refuses the stream at authentication. */
    const struct fault_verdict faults[] = {
        {.drop = true}, {.dup = true}, {.corrupt = true}, {.reorder = true}};
    const int before[] = {0, 1, 0, 0};
    for (size_t k = 0; k < 4; k++) {
        for (int round = 0; round < 20; round++) {
            assert_int_equal(send_two(f, &faults[k], &got), KV_ERR_AUTH);
            assert_int_equal(got, before[k]);
        }
    }
    fault_free(f);
}

int main(void)
{
    assert_int_equal(crypto_init(), 0);
    randombytes_buf(psk, sizeof(psk));
    randombytes_buf(key_i, sizeof(key_i));
    randombytes_buf(key_r, sizeof(key_r));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off_refuses_every_change_and_passes_everything),
        cmocka_unit_test(test_rates_are_kept_and_the_peer_rule_wins),
        cmocka_unit_test(test_bad_rules_are_refused),
        cmocka_unit_test(test_blocks_partition_and_clear_heals),
        cmocka_unit_test(test_corrupt_flips_exactly_one_bit),
        cmocka_unit_test(test_stream_faults_never_pass_authentication),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
