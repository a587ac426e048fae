/* membership (node/membership.c and membership_view.c), message by
 * message: a fake environment captures what the state machine sends, so
 * single rules of SWIM and Lifeguard can be checked without a simulator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/common.h"
#include "../../node/membership.h"
#include "../../node/membership_int.h"
#include "../fake/env.h"

/* The capturing environment (tests/fake/env.h): sent[] holds what was sent. */
static struct fake_env fake;

static void advance(uint64_t t)
{
    fake_env_advance(&fake, t);
}

static struct wire_member member(int i)
{
    struct wire_member w;
    memset(&w, 0, sizeof(w));
    memset(w.pubkey, i, sizeof(w.pubkey));
    crypto_node_id(w.id, w.pubkey);
    snprintf(w.addr, sizeof(w.addr), "10.0.0.%d:7400", i);
    snprintf(w.region, sizeof(w.region), "r");
    snprintf(w.zone, sizeof(w.zone), "z%d", i);
    w.version = PROTO_VERSION;
    return w;
}

static struct membership *self_node(void)
{
    fake_env_clear(&fake);
    fake_env_init(&fake, NULL, NULL);
    struct membership_config c;
    membership_config_defaults(&c);
    struct wire_member me = member(1);
    struct membership *m = membership_new(&c, &fake.env, &me);
    assert_non_null(m);
    membership_start(m, NULL, 0);
    return m;
}

/* Delivers a message from member `from` carrying the given records. */
static void deliver_flags(struct membership *m, uint8_t type, uint32_t seq,
                          int from, struct wire_member *recs, size_t n,
                          uint8_t flags)
{
    struct wire_member f = member(from);
    struct gossip_msg g = {.type = type,
                           .seq = seq,
                           .flags = flags,
                           .members = recs,
                           .n_members = n};
    memcpy(g.from, f.id, sizeof(g.from));
    membership_on_message(m, f.addr, &g);
}

static void deliver(struct membership *m, uint8_t type, uint32_t seq, int from,
                    struct wire_member *recs, size_t n)
{
    deliver_flags(m, type, seq, from, recs, n, 0);
}

/* The last full state this node sent, or NULL. */
static const struct gossip_msg *last_state_sent(void)
{
    for (size_t i = fake.n_sent; i-- > 0;)
        if (fake.sent[i].g.type == GOSSIP_SYNC ||
            fake.sent[i].g.type == GOSSIP_SYNC_REPLY)
            return &fake.sent[i].g;
    return NULL;
}

/* Insiders cannot make a node a reflector (security review L8): a SYNC
 * from one address is answered once a second at most, and a PING_REQ is
 * relayed only for a member, to the address the view holds for it. */
static void test_sync_replies_and_relays_cannot_be_aimed(void **state)
{
    (void)state;
    struct membership *m = self_node();
    struct wire_member b = member(2), c = member(3);
    deliver(m, GOSSIP_SYNC, 0, 2, &b, 1);
    assert_non_null(last_state_sent());
    fake_env_clear(&fake);
    for (int i = 0; i < 50; i++)
        deliver(m, GOSSIP_SYNC, 0, 2, &b, 1);
    assert_null(last_state_sent());
    advance(fake.now + SYNC_REPLY_MIN_MS);
    fake_env_clear(&fake);
    deliver(m, GOSSIP_SYNC, 0, 2, &b, 1);
    assert_non_null(last_state_sent());

    /* c is no member: a PING_REQ for it pings nobody. */
    fake_env_clear(&fake);
    struct gossip_msg req = {.type = GOSSIP_PING_REQ, .seq = 9};
    memcpy(req.from, b.id, sizeof(req.from));
    memcpy(req.target, c.id, sizeof(req.target));
    snprintf(req.target_addr, sizeof(req.target_addr), "192.0.2.1:53");
    membership_on_message(m, b.addr, &req);
    assert_int_equal(fake.n_sent, 0);
    /* Once c is a member, it is pinged where the view says, not where the
     * request says. */
    deliver(m, GOSSIP_PING, 1, 3, &c, 1);
    fake_env_clear(&fake);
    membership_on_message(m, b.addr, &req);
    assert_int_equal(fake.n_sent, 1);
    assert_int_equal(fake.sent[0].g.type, GOSSIP_PING);
    assert_string_equal(fake.sent[0].addr, c.addr);
    membership_free(m);
}

static void test_ack_leads_with_the_senders_own_record(void **state)
{
    (void)state;
    struct membership *m = self_node();
    struct wire_member b = member(2);
    deliver(m, GOSSIP_PING, 42, 2, &b, 1);
    assert_int_equal(fake.n_sent, 1);
    assert_int_equal(fake.sent[0].g.type, GOSSIP_ACK);
    assert_int_equal(fake.sent[0].g.seq, 42);
    assert_string_equal(fake.sent[0].addr, b.addr);
    assert_true(fake.sent[0].g.n_members >= 1);
    struct wire_member me = member(1);
    assert_memory_equal(fake.sent[0].members[0].id, me.id, 16);
    membership_free(m);
}

static void
test_suspicion_of_self_is_refuted_with_higher_incarnation(void **state)
{
    (void)state;
    struct membership *m = self_node();
    struct wire_member me = member(1);
    me.status = MEMBER_SUSPECT;
    me.incarnation = 5;
    deliver(m, GOSSIP_PING, 1, 2, &me, 1);
    const struct member_view *v = membership_get(m, 0);
    assert_int_equal(v->info.status, MEMBER_ALIVE);
    assert_int_equal(v->info.incarnation, 6);
    assert_int_equal(membership_health(m), 1); /* Lifeguard: we were slow */
    membership_free(m);
}

static void test_ping_to_a_suspect_carries_the_suspicion_first(void **state)
{
    (void)state;
    struct membership *m = self_node();
    struct wire_member b = member(2), c = member(3);
    deliver(m, GOSSIP_PING, 1, 2, &b, 1); /* learn b alive */
    b.status = MEMBER_SUSPECT;
    memcpy(b.suspecter, c.id, 16);
    deliver(m, GOSSIP_PING, 2, 3, &b, 1); /* c says b is suspect */
    assert_int_equal(membership_find(m, b.id)->info.status, MEMBER_SUSPECT);
    fake_env_clear(&fake);
    advance(fake.now + 3000); /* probes go out */
    bool found = false;
    for (size_t i = 0; i < fake.n_sent; i++) {
        if (fake.sent[i].g.type != GOSSIP_PING ||
            strcmp(fake.sent[i].addr, b.addr) != 0)
            continue;
        found = true;
        assert_memory_equal(fake.sent[i].members[0].id, b.id, 16);
        assert_int_equal(fake.sent[i].members[0].status, MEMBER_SUSPECT);
    }
    assert_true(found);
    membership_free(m);
}

static void test_forged_record_is_ignored(void **state)
{
    (void)state;
    struct membership *m = self_node();
    struct wire_member b = member(2);
    b.id[0] ^= 1; /* no longer the hash of its key */
    deliver(m, GOSSIP_PING, 1, 3, &b, 1);
    assert_null(membership_find(m, b.id));
    assert_int_equal(membership_size(m), 1);
    membership_free(m);
}

static void test_unknown_dead_member_is_not_added(void **state)
{
    (void)state;
    struct membership *m = self_node();
    struct wire_member b = member(2);
    b.status = MEMBER_DEAD;
    deliver(m, GOSSIP_SYNC_REPLY, 0, 3, &b, 1);
    assert_null(membership_find(m, b.id));
    b.status = MEMBER_ALIVE;
    deliver(m, GOSSIP_SYNC_REPLY, 0, 3, &b, 1);
    assert_non_null(membership_find(m, b.id));
    assert_int_equal(membership_live_count(m), 2);
    membership_free(m);
}

/* Ring phases (DESIGN §7b) travel with a higher incarnation, whatever
 * the status: a removal sets a dead member's phase for it, and every live
 * member is told at once. A node that starts without knowing its phase
 * takes the one the cluster holds for it; a stop is announced as dead. */
static void test_ring_phases_travel_with_the_incarnation(void **state)
{
    (void)state;
    struct membership *m = self_node();
    struct wire_member two = member(2), three = member(3);
    deliver(m, GOSSIP_PING, 1, 2, &two, 1);
    three.status = MEMBER_ALIVE;
    deliver(m, GOSSIP_PING, 2, 2, &three, 1);
    /* Three dies; a record of it, dead, in phase leaving, one incarnation
     * up, is taken. */
    three.status = MEMBER_DEAD;
    deliver(m, GOSSIP_PING, 3, 2, &three, 1);
    assert_int_equal(membership_find(m, three.id)->info.status, MEMBER_DEAD);
    three.incarnation = 1;
    three.ring = RING_LEAVING;
    deliver(m, GOSSIP_PING, 4, 2, &three, 1);
    assert_int_equal(membership_find(m, three.id)->info.ring, RING_LEAVING);
    assert_int_equal(membership_find(m, three.id)->info.incarnation, 1);
    /* The same phase change under an older incarnation is not. */
    three.incarnation = 0;
    three.ring = RING_NORMAL;
    deliver(m, GOSSIP_PING, 5, 2, &three, 1);
    assert_int_equal(membership_find(m, three.id)->info.ring, RING_LEAVING);
    /* This node's own phase: set, under a higher incarnation, and told to
     * the live member at once. */
    fake_env_clear_sent(&fake);
    uint64_t inc = membership_get(m, 0)->info.incarnation;
    assert_int_equal(
        membership_set_ring(m, membership_get(m, 0)->info.id, RING_JOINING), 0);
    assert_int_equal(membership_get(m, 0)->info.ring, RING_JOINING);
    assert_true(membership_get(m, 0)->info.incarnation > inc);
    bool told = false;
    for (size_t i = 0; i < fake.n_sent; i++)
        told |= strcmp(fake.sent[i].addr, two.addr) == 0 &&
                fake.sent[i].g.n_members >= 1 &&
                fake.sent[i].g.members[0].ring == RING_JOINING;
    assert_true(told);
    assert_int_equal(membership_set_ring(m, member(9).id, RING_LEFT),
                     KV_ERR_NOT_FOUND);
    /* A stop is dead, not left. */
    membership_stop(m);
    assert_int_equal(membership_get(m, 0)->info.status, MEMBER_DEAD);
    membership_free(m);

    /* A node that starts waiting takes the phase the cluster holds. */
    fake_env_clear(&fake);
    fake_env_init(&fake, NULL, NULL);
    struct membership_config c;
    membership_config_defaults(&c);
    struct wire_member me = member(1);
    me.ring = RING_WAITING;
    m = membership_new(&c, &fake.env, &me);
    assert_non_null(m);
    membership_start(m, NULL, 0);
    me.ring = RING_NORMAL;
    me.incarnation = 4;
    me.status = MEMBER_DEAD; /* as the others saw it stop */
    deliver(m, GOSSIP_PING, 6, 2, &me, 1);
    assert_int_equal(membership_get(m, 0)->info.ring, RING_NORMAL);
    assert_int_equal(membership_get(m, 0)->info.status, MEMBER_ALIVE);
    assert_true(membership_get(m, 0)->info.incarnation > 4);
    membership_free(m);
}

static void test_joins_only_through_a_joined_member(void **state)
{
    (void)state;
    struct membership *m = self_node();
    membership_free(m);
    struct membership_config c;
    membership_config_defaults(&c);

    struct wire_member me = member(1), seed = member(2), other = member(3);
    m = membership_new(&c, &fake.env, &me);
    assert_non_null(m);
    const char *seeds[] = {seed.addr};
    membership_start(m, seeds, 1);
    assert_false(membership_joined(m));
    const struct gossip_msg *s = last_state_sent();
    assert_non_null(s);
    assert_int_equal(s->type, GOSSIP_SYNC);
    assert_int_equal(s->flags & GOSSIP_FLAG_JOINED, 0);
    /* The seed was restarted too and knows only itself and us: its state is
     * a fragment, not the cluster. */
    struct wire_member frag[] = {seed, me};
    deliver(m, GOSSIP_SYNC_REPLY, 0, 2, frag, 2);
    assert_false(membership_joined(m));
    /* The seed is asked again each period until it has joined itself. */
    fake_env_clear(&fake);
    advance(fake.now + c.period_ms);
    s = last_state_sent();
    assert_non_null(s);
    assert_string_equal(fake.sent[0].addr, seed.addr);
    struct wire_member all[] = {seed, me, other};
    deliver_flags(m, GOSSIP_SYNC_REPLY, 0, 2, all, 3, GOSSIP_FLAG_JOINED);
    assert_true(membership_joined(m));
    assert_non_null(membership_find(m, other.id));
    /* Now its own states vouch for it. */
    fake_env_clear(&fake);
    deliver(m, GOSSIP_SYNC, 0, 3, &other, 1);
    s = last_state_sent();
    assert_non_null(s);
    assert_int_equal(s->type, GOSSIP_SYNC_REPLY);
    assert_int_equal(s->flags & GOSSIP_FLAG_JOINED, GOSSIP_FLAG_JOINED);
    membership_free(m);

    /* Every node restarted at once: after the join timeout, once every seed
     * has answered (none joined), the union of their states is the view. A
     * seed that does not answer keeps the node joining. */
    m = membership_new(&c, &fake.env, &me);
    assert_non_null(m);
    const char *two[] = {seed.addr, other.addr};
    membership_start(m, two, 2);
    deliver(m, GOSSIP_SYNC_REPLY, 0, 2, frag, 2);
    advance(fake.now + c.join_timeout_ms);
    assert_false(membership_joined(m)); /* the other seed never answered */
    char unheard[64];
    assert_int_equal(membership_unheard_seeds(m, unheard, sizeof(unheard)), 1);
    assert_string_equal(unheard, other.addr);
    struct wire_member frag3[] = {other, me};
    deliver(m, GOSSIP_SYNC_REPLY, 0, 3, frag3, 2);
    assert_true(membership_joined(m));
    assert_non_null(membership_find(m, seed.id));
    assert_non_null(membership_find(m, other.id));
    membership_free(m);
    /* Both answered early: joined when the timeout passes. */
    m = membership_new(&c, &fake.env, &me);
    assert_non_null(m);
    membership_start(m, two, 2);
    deliver(m, GOSSIP_SYNC_REPLY, 0, 2, frag, 2);
    deliver(m, GOSSIP_SYNC_REPLY, 0, 3, frag3, 2);
    assert_false(membership_joined(m));
    advance(fake.now + c.join_timeout_ms);
    assert_true(membership_joined(m));
    membership_free(m);
}

static void test_suspicion_timeout_shrinks_with_confirmations(void **state)
{
    (void)state;
    struct membership *m = self_node();
    for (int i = 2; i < 12; i++) {
        struct wire_member w = member(i);
        deliver(m, GOSSIP_PING, 1, i, &w, 1);
    }
    uint64_t t0 = membership_suspicion_timeout(m, 0);
    uint64_t t1 = membership_suspicion_timeout(m, 1);
    uint64_t t3 = membership_suspicion_timeout(m, 3);
    /* α·log10(11)·T .. β times that, per Lifeguard §4.2. */
    assert_true(t0 > t1 && t1 > t3);
    double min = 4 * log10(11.0) * 1000, max = 6 * min;
    assert_true(llabs((long long)t0 - (long long)max) <= 1);
    assert_true(llabs((long long)t3 - (long long)min) <= 1);
    assert_int_equal(membership_suspicion_timeout(m, 9), t3);
    membership_free(m);
}

static void test_a_newer_life_brings_its_new_settings(void **state)
{
    (void)state;
    struct membership *m = self_node();
    struct wire_member b = member(2);
    snprintf(b.replicas, sizeof(b.replicas), "eu:2");
    deliver(m, GOSSIP_PING, 1, 2, &b, 1);
    /* Restarted elsewhere with another --replicas: a higher incarnation. */
    b.incarnation = 4;
    snprintf(b.addr, sizeof(b.addr), "10.9.9.9:7400");
    snprintf(b.region, sizeof(b.region), "us");
    snprintf(b.replicas, sizeof(b.replicas), "eu:3");
    deliver(m, GOSSIP_PING, 2, 3, &b, 1);
    const struct member_view *v = membership_find(m, b.id);
    assert_string_equal(v->info.addr, "10.9.9.9:7400");
    assert_string_equal(v->info.region, "us");
    assert_string_equal(v->info.replicas, "eu:3");
    /* An older record changes nothing. */
    b.incarnation = 3;
    snprintf(b.replicas, sizeof(b.replicas), "eu:1");
    deliver(m, GOSSIP_PING, 3, 3, &b, 1);
    assert_string_equal(membership_find(m, b.id)->info.replicas, "eu:3");
    membership_free(m);
}

static void test_incarnations_cannot_be_pushed_to_wrap(void **state)
{
    (void)state;
    struct membership *m = self_node();
    /* Security review M1: "dead at UINT64_MAX" would make this node refute
     * with UINT64_MAX + 1 = 0, never newer again. It is refused. */
    struct wire_member me = member(1);
    const struct member_view *v = membership_get(m, 0);
    uint64_t before = v->info.incarnation;
    me.status = MEMBER_DEAD;
    me.incarnation = UINT64_MAX - 1;
    deliver(m, GOSSIP_PING, 1, 2, &me, 1);
    assert_int_equal(v->info.status, MEMBER_ALIVE);
    assert_int_equal(v->info.incarnation, before);
    /* At the cap it is taken, and refuted with one more, which others
     * take as the alive record it is. */
    me.incarnation = UINT64_C(1) << 62;
    deliver(m, GOSSIP_PING, 2, 2, &me, 1);
    assert_int_equal(v->info.status, MEMBER_ALIVE);
    assert_true(v->info.incarnation == (UINT64_C(1) << 62) + 1);
    struct wire_member b = member(3);
    deliver(m, GOSSIP_PING, 3, 3, &b, 1);
    b.incarnation = (UINT64_C(1) << 62) + 1;
    deliver(m, GOSSIP_PING, 4, 2, &b, 1);
    assert_int_equal(membership_find(m, b.id)->info.incarnation,
                     (UINT64_C(1) << 62) + 1);
    /* A death past the cap is not. */
    b.status = MEMBER_DEAD;
    b.incarnation = (UINT64_C(1) << 62) + 5;
    deliver(m, GOSSIP_PING, 5, 2, &b, 1);
    assert_int_equal(membership_find(m, b.id)->info.status, MEMBER_ALIVE);
    membership_free(m);
}

static void test_a_view_takes_at_most_max_members(void **state)
{
    (void)state;
    fake_env_clear(&fake);
    fake_env_init(&fake, NULL, NULL);
    struct membership_config c;
    membership_config_defaults(&c);
    assert_int_equal(c.max_members, MEMBERSHIP_MAX_MEMBERS);
    c.max_members = 5;
    struct wire_member me = member(1), many[8];
    for (int i = 0; i < 8; i++)
        many[i] = member(10 + i);
    struct membership *m = membership_new(&c, &fake.env, &me);
    membership_start(m, NULL, 0);
    /* One push of eight new members (security review M2): four are taken,
     * the rest refused, and this node is unharmed. */
    deliver(m, GOSSIP_SYNC, 1, 10, many, 8);
    assert_int_equal(membership_size(m), 5);
    assert_null(membership_find(m, many[7].id));
    assert_int_equal(membership_get(m, 0)->info.status, MEMBER_ALIVE);
    membership_free(m);
}

/* A joined node takes at most MEMBERSHIP_NEW_PER_MESSAGE new members from
 * one message; the rest come with later ones (security review M2). */
static void test_one_message_brings_a_bounded_number_of_new_members(void **s)
{
    (void)s;
    struct membership *m = self_node();
    assert_true(membership_joined(m));
    struct wire_member many[100];
    for (int i = 0; i < 100; i++)
        many[i] = member(20 + i);
    deliver(m, GOSSIP_SYNC, 1, 20, many, 100);
    assert_int_equal(membership_size(m), 1 + MEMBERSHIP_NEW_PER_MESSAGE);
    deliver(m, GOSSIP_SYNC, 2, 20, many, 100);
    assert_int_equal(membership_size(m), 101);
    membership_free(m);
}

/* Moves time 1 ms at a time until this node sends a ping (at most
 * `within` ms), and returns it. */
static const struct fake_sent *next_ping(uint64_t within)
{
    size_t from = fake.n_sent;
    for (uint64_t t = fake.now, end = fake.now + within; t < end; t++) {
        advance(t + 1);
        for (size_t k = from; k < fake.n_sent; k++)
            if (fake.sent[k].g.type == GOSSIP_PING)
                return &fake.sent[k];
    }
    return NULL;
}

static bool ping_req_sent(size_t from)
{
    for (size_t k = from; k < fake.n_sent; k++)
        if (fake.sent[k].g.type == GOSSIP_PING_REQ)
            return true;
    return false;
}

static void test_probe_timeout_follows_the_measured_rtt(void **state)
{
    (void)state;
    fake_env_clear(&fake);
    fake_env_init(&fake, NULL, NULL);
    struct membership_config c;
    membership_config_defaults(&c);
    c.ack_timeout_ms = 100; /* tuned for a LAN */
    struct wire_member me = member(1), far[2] = {member(2), member(3)};
    struct membership *m = membership_new(&c, &fake.env, &me);
    membership_start(m, NULL, 0);
    deliver(m, GOSSIP_PING, 1, 2, far, 2);
    const struct member_view *v = membership_find(m, far[0].id);
    assert_non_null(v);
    assert_int_equal(membership_ack_timeout(m, v), 100); /* nothing yet */
    /* Both members answer every ping 300 ms later, period after period. */
    for (int round = 0; round < 12; round++) {
        const struct fake_sent *p = next_ping(c.period_ms * 2);
        assert_non_null(p);
        uint32_t seq = p->g.seq;
        int to = strcmp(p->addr, far[0].addr) == 0 ? 2 : 3;
        advance(fake.now + 300);
        deliver(m, GOSSIP_ACK, seq, to, NULL, 0);
    }
    v = membership_find(m, far[0].id);
    assert_true(v->srtt_ms >= 290 && v->srtt_ms <= 310);
    uint64_t to = membership_ack_timeout(m, v);
    assert_true(to >= 300 && to <= c.period_ms / 2);
    /* A probe now waits past the LAN timeout before asking others. */
    size_t from = fake.n_sent;
    assert_non_null(next_ping(c.period_ms * 2));
    uint64_t t = fake.now;
    advance(t + 250);
    assert_false(ping_req_sent(from));
    advance(t + to + 1);
    assert_true(ping_req_sent(from)); /* and then it does */
    membership_free(m);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_probe_timeout_follows_the_measured_rtt),
        cmocka_unit_test(test_a_newer_life_brings_its_new_settings),
        cmocka_unit_test(test_incarnations_cannot_be_pushed_to_wrap),
        cmocka_unit_test(test_a_view_takes_at_most_max_members),
        cmocka_unit_test(
            test_one_message_brings_a_bounded_number_of_new_members),
        cmocka_unit_test(test_ack_leads_with_the_senders_own_record),
        cmocka_unit_test(test_sync_replies_and_relays_cannot_be_aimed),
        cmocka_unit_test(
            test_suspicion_of_self_is_refuted_with_higher_incarnation),
        cmocka_unit_test(test_ping_to_a_suspect_carries_the_suspicion_first),
        cmocka_unit_test(test_forged_record_is_ignored),
        cmocka_unit_test(test_unknown_dead_member_is_not_added),
        cmocka_unit_test(test_ring_phases_travel_with_the_incarnation),
        cmocka_unit_test(test_joins_only_through_a_joined_member),
        cmocka_unit_test(test_suspicion_timeout_shrinks_with_confirmations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
