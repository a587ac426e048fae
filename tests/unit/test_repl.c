/* repl's single rules (node/repl.c, repl_coord.c, repl_hints.c) against a
 * capturing environment: where a write goes, when it is acknowledged, what a
 * shortfall says, hints on a failed link, and peers whose clock runs too far
 * ahead. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/common.h"
#include "../../node/repl.h"
#include "../../node/ring.h"
#include "../fake/env.h"

#define WALL 1700000000000ull

/* The capturing environment (tests/fake/env.h); the store is canned below. */
static struct fake_env fake;

/* The last answer repl gave a client, and its text. */
#define ANSWERED (fake.n_replies > 0)
#define ANSWER (fake.replies[fake.n_replies - 1].m)

static const char *answer_text(void)
{
    static char text[256];
    snprintf(text, sizeof(text), "%.*s", (int)ANSWER.u.result.text_len,
             ANSWER.u.result.text);
    return text;
}

static size_t n_submits;

static int t_get(void *c, const uint8_t *k, size_t l, struct storage_record *r)
{
    (void)c;
    (void)k;
    (void)l;
    (void)r;
    return KV_ERR_NOT_FOUND;
}

static struct storage_write *submitted[8];

static void t_submit(void *c, struct storage_write *w)
{
    (void)c;
    if (n_submits < 8)
        submitted[n_submits] = w;
    n_submits++;
}

/* Hints held here: for one owner, one record each round it is asked. */
static uint8_t hint_owner[16];
static bool have_hint;

static int t_hints(void *c, const uint8_t *owner, size_t max,
                   struct storage_record **out, size_t *n)
{
    (void)c;
    (void)max;
    *out = NULL;
    *n = 0;
    if (!have_hint || memcmp(owner, hint_owner, 16) != 0)
        return 0;
    struct storage_record *rec = calloc(1, sizeof(*rec));
    uint8_t *kv = malloc(16);
    assert_non_null(rec);
    assert_non_null(kv);
    memcpy(kv, "moved-keyvalue", 14);
    rec->key = kv;
    rec->key_len = 9;
    rec->value = kv + 9;
    rec->value_len = 5;
    rec->version = 5u << 16;
    memset(rec->origin, 0x10, 16);
    *out = rec;
    *n = 1;
    return 0;
}

static int t_hint_owners(void *c, uint8_t (*out)[16], size_t max, size_t *n)
{
    (void)c;
    *n = have_hint && max > 0;
    if (*n)
        memcpy(out[0], hint_owner, 16);
    return 0;
}

static struct wire_member members[5];
static struct hlc clk;

/* A repl for node 0 of five, in five zones, all alive. */
static struct repl *make(void)
{
    struct repl_config rc;
    repl_config_defaults(&rc);
    static const struct storage_port store = {.get = t_get,
                                              .submit = t_submit,
                                              .hints = t_hints,
                                              .hint_owners = t_hint_owners};
    fake_env_clear(&fake);
    fake_env_init(&fake, &store, NULL);
    fake.now = 0;
    for (int i = 0; i < 5; i++) {
        memset(&members[i], 0, sizeof(members[i]));
        memset(members[i].id, 0x10 * (i + 1), 16);
        snprintf(members[i].zone, sizeof(members[i].zone), "z%d", i);
        members[i].status = MEMBER_ALIVE;
    }
    n_submits = 0;
    have_hint = false;
    clk.last = 0;
    struct repl *r = repl_new(&rc, &fake.env, members[0].id, &clk);
    repl_set_members(r, members, 5);
    repl_set_ready(r, true);
    return r;
}

/* A key whose preference list does not include node 0 (all remote). */
static const char *remote_key(struct repl *r)
{
    static char key[32];
    for (int i = 0;; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        struct msg m = {.type = MSG_PUT, .id = 1};
        m.u.req = (struct msg_req){(const uint8_t *)key, strlen(key),
                                   (const uint8_t *)"v", 1,
                                   CONS_QUORUM,          0};
        size_t before = fake.n_sent;
        n_submits = 0;
        assert_int_equal(repl_client_request(r, &m, &m), 0);
        if (n_submits == 0 && fake.n_sent - before == 3)
            return key;
        for (size_t k = 0; k < n_submits && k < 8; k++)
            repl_on_stored(r, submitted[k]); /* node 0 held a copy */
    }
}

static void answer_from(struct repl *r, size_t i, int code)
{
    struct msg a = {
        .type = MSG_REPLICA_ANSWER, .id = fake.sent[i].m.id, .hlc = WALL << 16};
    a.u.replica.code = code;
    a.u.replica.key = fake.sent[i].m.u.replica.key; /* an answer names it */
    a.u.replica.key_len = fake.sent[i].m.u.replica.key_len;
    repl_on_peer_message(r, fake.sent[i].to, &a);
}

static void test_write_goes_to_three_and_is_acknowledged_at_two(void **s)
{
    (void)s;
    struct repl *r = make();
    remote_key(r);
    size_t first = fake.n_sent - 3;
    fake_env_clear_replies(&fake);
    answer_from(r, first, 0);
    assert_false(ANSWERED);
    answer_from(r, first + 1, 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    assert_true(ANSWER.u.result.version > 0);
    repl_free(r);
}

/* The preference list of key on a ring of members[0..n), as ids' first
 * bytes. */
static size_t pref_of(const char *key, size_t n, uint8_t *out)
{
    struct ring_node rn[5];
    memset(rn, 0, sizeof(rn));
    for (size_t i = 0; i < n; i++) {
        memcpy(rn[i].id, members[i].id, 16);
        memcpy(rn[i].zone, members[i].zone, sizeof(rn[i].zone));
    }
    struct ring *ring = ring_build(rn, n, RING_DEFAULT_VNODES);
    size_t idx[3];
    size_t k = ring_preference_n(
        ring, storage_token((const uint8_t *)key, strlen(key)), 3, idx);
    for (size_t i = 0; i < k; i++)
        out[i] = ring_node_at(ring, idx[i])->id[0];
    ring_free(ring);
    return k;
}

static bool has(const uint8_t *list, size_t n, uint8_t b)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == b)
            return true;
    return false;
}

static long sent_to(uint8_t b, size_t from)
{
    for (size_t i = from; i < fake.n_sent; i++)
        if (!fake.sent[i].gossip && fake.sent[i].to[0] == b)
            return (long)i;
    return -1;
}

/* A client's put of "v" (MSG_PUT) or get (MSG_GET) of key at quorum. */
static void client_request(struct repl *r, uint8_t type, const char *key,
                           uint64_t id)
{
    static struct msg m; /* the client pointer answers go to */
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.id = id;
    m.u.req = (struct msg_req){(const uint8_t *)key, strlen(key),
                               (const uint8_t *)"v", type == MSG_PUT,
                               CONS_QUORUM,          0};
    assert_int_equal(repl_client_request(r, &m, &m), 0);
}

/* A key (prefix and a number, into key[32]) that node 0 holds neither
 * before nor after node 4 joins, and that node 4 takes: the replica it
 * displaces, and one replica on both sides. */
static void join_key(const char *prefix, char *key, uint8_t *displaced,
                     uint8_t *common)
{
    uint8_t before[3], after[3];
    for (int i = 0;; i++) {
        snprintf(key, 32, "%s%d", prefix, i);
        pref_of(key, 4, before);
        pref_of(key, 5, after);
        if (!has(before, 3, 0x10) && !has(after, 3, 0x10) &&
            has(after, 3, 0x50))
            break;
    }
    for (size_t i = 0; i < 3; i++) {
        if (!has(after, 3, before[i]))
            *displaced = before[i];
        else
            *common = before[i];
    }
}

/* While node 4 joins (DESIGN §7b), a write reaches the key's replicas on
 * both sides of the change and is acknowledged only once a quorum of each
 * side has it: the replica the joiner displaces and one other are a
 * quorum before the change, not after it. A read asks the side before. */
static void test_a_write_needs_a_quorum_on_both_sides_of_a_join(void **s)
{
    (void)s;
    struct repl *r = make();
    uint64_t digest = repl_digest(r);
    members[4].ring = RING_JOINING;
    repl_set_members(r, members, 5);
    assert_true(repl_digest(r) != digest);
    char key[32];
    uint8_t displaced, common;
    join_key("join-", key, &displaced, &common);
    fake_env_clear(&fake);
    client_request(r, MSG_PUT, key, 1);
    assert_int_equal(fake.n_sent, 4); /* three before, and the joiner */
    answer_from(r, (size_t)sent_to(displaced, 0), 0);
    answer_from(r, (size_t)sent_to(common, 0), 0);
    assert_false(ANSWERED); /* a quorum before the join, one after */
    answer_from(r, (size_t)sent_to(0x50, 0), 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    /* A read asks the replicas before the change only. */
    fake_env_clear(&fake);
    client_request(r, MSG_GET, key, 2);
    assert_true(sent_to(0x50, 0) < 0);
    assert_true(sent_to(displaced, 0) >= 0);
    repl_free(r);
}

/* A write planned before node 4 began joining, whose quorum comes after:
 * it is planned again on the new rings (node 4 is sent the write) and
 * acknowledged only once both sides have a quorum. */
static void test_a_write_is_planned_again_when_the_rings_change(void **s)
{
    (void)s;
    struct repl *r = make();
    members[4].ring = RING_WAITING;
    repl_set_members(r, members, 5);
    char key[32];
    uint8_t displaced, common;
    join_key("late-", key, &displaced, &common);
    fake_env_clear(&fake);
    client_request(r, MSG_PUT, key, 1);
    assert_int_equal(fake.n_sent, 3);
    members[4].ring = RING_JOINING;
    repl_set_members(r, members, 5);
    answer_from(r, (size_t)sent_to(displaced, 0), 0);
    answer_from(r, (size_t)sent_to(common, 0), 0);
    assert_false(ANSWERED);
    long joiner = sent_to(0x50, 0);
    assert_true(joiner >= 0); /* sent once the rings changed */
    answer_from(r, (size_t)joiner, 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    repl_free(r);
}

static void test_shortfall_says_how_many_were_needed_and_answered(void **s)
{
    (void)s;
    struct repl *r = make();
    remote_key(r);
    size_t first = fake.n_sent - 3;
    fake_env_clear_replies(&fake);
    answer_from(r, first, 0);
    answer_from(r, first + 1, KV_ERR_FULL);
    answer_from(r, first + 2, KV_ERR_FULL);
    /* Failures send hinted copies to the two other nodes; they fail too. */
    for (size_t i = first + 3; i < fake.n_sent; i++) {
        assert_true(fake.sent[i].m.u.replica.hinted);
        answer_from(r, i, KV_ERR_FULL);
    }
    for (size_t i = 0; i < n_submits; i++) { /* node 0's own hinted copy */
        submitted[i]->result = KV_ERR_FULL;
        repl_on_stored(r, submitted[i]);
    }
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, KV_ERR_FULL);
    assert_non_null(strstr(answer_text(), "2 of 3 replicas needed, 1 "
                                          "acknowledged"));
    assert_non_null(strstr(answer_text(), "may still have been applied"));
    repl_free(r);
}

static void test_failed_link_sends_a_hinted_copy_past_the_list(void **s)
{
    (void)s;
    struct repl *r = make();
    remote_key(r);
    size_t first = fake.n_sent - 3;
    uint8_t down[16];
    memcpy(down, fake.sent[first].to, 16);
    repl_on_peer_down(r, down);
    /* The next node past the preference list (node 0 itself, or another)
     * takes a copy with a hint naming the owner. */
    bool hinted = false;
    for (size_t i = 0; i < n_submits; i++)
        hinted |= submitted[i]->op == STORAGE_PUT_HINT &&
                  memcmp(submitted[i]->owner, down, 16) == 0;
    for (size_t i = first + 3; i < fake.n_sent; i++)
        if (fake.sent[i].m.u.replica.hinted &&
            memcmp(fake.sent[i].m.u.replica.owner, down, 16) == 0)
            hinted = true;
    assert_true(hinted);
    for (size_t i = 0; i < n_submits; i++)
        repl_on_stored(r, submitted[i]);
    repl_free(r);
}

static void
test_with_no_node_past_the_list_the_coordinator_keeps_a_hint(void **s)
{
    (void)s;
    struct repl *r = make();
    repl_set_members(r, members, 3); /* every node is in every list */
    struct msg m = {.type = MSG_PUT, .id = 1};
    m.u.req = (struct msg_req){(const uint8_t *)"k", 1, (const uint8_t *)"v", 1,
                               CONS_QUORUM,          0};
    assert_int_equal(repl_client_request(r, &m, &m), 0);
    assert_int_equal(fake.n_sent, 2); /* and node 0's own copy */
    uint8_t down[16];
    memcpy(down, fake.sent[0].to, 16);
    repl_on_peer_down(r, down);
    size_t hints = 0;
    for (size_t i = 0; i < n_submits; i++)
        hints += submitted[i]->op == STORAGE_PUT_HINT &&
                 memcmp(submitted[i]->owner, down, 16) == 0;
    assert_int_equal(hints, 1);
    assert_int_equal(fake.n_sent, 2); /* nobody else to send it to */
    for (size_t i = 0; i < n_submits; i++)
        repl_on_stored(r, submitted[i]);
    answer_from(r, 1, 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    repl_free(r);
}

/* A write at all with one preferred replica down cannot be acknowledged,
 * but the live replicas take it and a hint keeps it for the third: the
 * client is told it may still have been applied, never "not applied". */
static void
test_a_refused_write_that_replicas_took_may_have_been_applied(void **s)
{
    (void)s;
    struct repl *r = make();
    const char *key = remote_key(r);
    size_t first = fake.n_sent - 3;
    uint8_t down[16];
    memcpy(down, fake.sent[first].to, 16);
    for (int i = 0; i < 5; i++)
        if (memcmp(members[i].id, down, 16) == 0)
            members[i].status = MEMBER_DEAD;
    repl_set_members(r, members, 5);
    fake_env_clear(&fake);
    struct msg m = {.type = MSG_PUT, .id = 9};
    m.u.req = (struct msg_req){(const uint8_t *)key,
                               strlen(key),
                               (const uint8_t *)"v2",
                               2,
                               CONS_ALL,
                               0};
    assert_int_equal(repl_client_request(r, &m, &m), 0);
    assert_true(ANSWERED); /* at once: 3 of 3 cannot be had */
    assert_int_equal(ANSWER.u.result.code, KV_ERR_UNAVAILABLE);
    assert_non_null(strstr(answer_text(), "3 of 3 replicas needed, 0 "
                                          "acknowledged"));
    assert_non_null(strstr(answer_text(), "may still have been applied"));
    assert_null(strstr(answer_text(), "not applied"));
    /* ...and it was sent: to the two live replicas and, hinted, past them. */
    size_t writes = 0;
    for (size_t i = 0; i < fake.n_sent; i++)
        writes += fake.sent[i].m.type == MSG_REPLICA_WRITE;
    assert_true(writes >= 2);
    for (size_t i = 0; i < n_submits && i < 8; i++)
        repl_on_stored(r, submitted[i]);
    for (size_t i = 0; i < fake.n_sent; i++)
        answer_from(r, i, 0);
    repl_free(r);
}

/* A member that moves to another zone (a restart with --zone) changes the
 * ring even though the set of ids is the same: placement uses zones. */
static void test_a_zone_change_rebuilds_the_ring(void **s)
{
    (void)s;
    struct repl *r = make();
    const struct ring *before = repl_ring(r);
    repl_set_members(r, members, 5); /* nothing changed: the same ring */
    assert_ptr_equal(repl_ring(r), before);
    snprintf(members[2].zone, sizeof(members[2].zone), "z0");
    repl_set_members(r, members, 5);
    const struct ring *after = repl_ring(r);
    bool moved = false;
    for (size_t i = 0; i < ring_size(after); i++)
        moved |= memcmp(ring_node_at(after, i)->id, members[2].id, 16) == 0 &&
                 strcmp(ring_node_at(after, i)->zone, "z0") == 0;
    assert_true(moved);
    repl_free(r);
}

/* A node restarts while replicas still answer its earlier requests: those
 * late answers must not count for the requests of the new run. */
static void test_a_late_answer_from_before_a_restart_is_not_counted(void **s)
{
    (void)s;
    struct repl *r = make();
    remote_key(r);
    struct fake_sent old[3];
    memcpy(old, &fake.sent[fake.n_sent - 3], sizeof(old));
    uint64_t old_id = old[0].m.id;
    /* Restarted: a new repl, the same node, a new random draw. */
    repl_free(r);
    struct repl_config rc;
    repl_config_defaults(&rc);
    r = repl_new(&rc, &fake.env, members[0].id, &clk);
    repl_set_members(r, members, 5);
    repl_set_ready(r, true);
    fake_env_clear_replies(&fake);
    size_t before = fake.n_sent;
    n_submits = 0;
    remote_key(r);
    assert_true(fake.n_sent - before >= 3);
    uint64_t new_id = fake.sent[fake.n_sent - 1].m.id;
    assert_true(new_id != old_id);
    /* The old answers arrive: nothing is acknowledged. */
    for (size_t i = 0; i < 3; i++) {
        struct msg a = {
            .type = MSG_REPLICA_ANSWER, .id = old[i].m.id, .hlc = WALL << 16};
        a.u.replica.key = old[i].m.u.replica.key;
        a.u.replica.key_len = old[i].m.u.replica.key_len;
        repl_on_peer_message(r, old[i].to, &a);
    }
    assert_false(ANSWERED);
    /* An answer carrying the new request's id but naming another key (an id
     * reused, however unlikely) does not count either... */
    size_t last = fake.n_sent - 1;
    for (size_t i = last - 2; i <= last; i++) {
        struct msg a = {.type = MSG_REPLICA_ANSWER,
                        .id = fake.sent[i].m.id,
                        .hlc = WALL << 16};
        a.u.replica.key = (const uint8_t *)"another key";
        a.u.replica.key_len = 11;
        repl_on_peer_message(r, fake.sent[i].to, &a);
    }
    assert_false(ANSWERED);
    /* ...while the real answers do. */
    answer_from(r, last - 2, 0);
    answer_from(r, last - 1, 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    repl_free(r);
}

/* A record stamped too far ahead of this node's clock is refused even when
 * the node relaying it has a sound clock (a hint replay, a read repair);
 * versions read within the bound are merged into the clock. */
static void test_a_future_record_is_refused_whoever_relays_it(void **s)
{
    (void)s;
    struct repl *r = make();
    struct msg w = {.type = MSG_REPLICA_WRITE, .id = 5, .hlc = WALL << 16};
    w.u.replica.key = (const uint8_t *)"k";
    w.u.replica.key_len = 1;
    w.u.replica.value = (const uint8_t *)"v";
    w.u.replica.value_len = 1;
    w.u.replica.version = (WALL + 60000) << 16;
    fake_env_clear(&fake);
    n_submits = 0;
    repl_on_peer_message(r, members[1].id, &w);
    assert_int_equal(n_submits, 0);
    assert_int_equal(fake.n_sent, 1);
    assert_int_equal(fake.sent[0].m.type, MSG_REPLICA_ANSWER);
    assert_int_equal(fake.sent[0].m.u.replica.code, KV_ERR_CLOCK);
    /* A read: one replica answers a record 300 ms ahead (within the
     * bound), the others nothing; the clock moves past it. */
    struct msg g = {.type = MSG_GET, .id = 1};
    g.u.req = (struct msg_req){(const uint8_t *)"r", 1, NULL, 0, CONS_ONE, 0};
    fake_env_clear(&fake);
    assert_int_equal(repl_client_request(r, &g, &g), 0);
    for (size_t i = 0; i < fake.n_sent; i++) {
        struct msg a = {.type = MSG_REPLICA_ANSWER,
                        .id = fake.sent[i].m.id,
                        .hlc = WALL << 16};
        a.u.replica.found = true;
        a.u.replica.version = (WALL + 300) << 16;
        a.u.replica.key = fake.sent[i].m.u.replica.key;
        a.u.replica.key_len = fake.sent[i].m.u.replica.key_len;
        repl_on_peer_message(r, fake.sent[i].to, &a);
    }
    for (size_t i = 0; i < n_submits && i < 8; i++) {
        submitted[i]->result = KV_ERR_NOT_FOUND;
        repl_on_stored(r, submitted[i]);
    }
    assert_true(clk.last >= (WALL + 300) << 16);
    repl_free(r);
}

static void test_peer_clock_far_ahead_is_refused(void **s)
{
    (void)s;
    struct repl *r = make();
    struct msg m = {.type = MSG_REPLICA_READ, .id = 77};
    m.hlc = (WALL + 60000) << 16;
    m.u.replica.key = (const uint8_t *)"k";
    m.u.replica.key_len = 1;
    fake_env_clear(&fake);
    repl_on_peer_message(r, members[1].id, &m);
    assert_int_equal(fake.n_sent, 1);
    assert_int_equal(fake.sent[0].m.type, MSG_REPLICA_ANSWER);
    assert_int_equal(fake.sent[0].m.u.replica.code, KV_ERR_CLOCK);
    assert_int_equal(repl_counters(r)->clock_refused, 1);
    assert_true(hlc_physical_ms(clk.last) < WALL + 60000);
    /* Within max_clock_offset, the clock is merged. */
    m.hlc = (WALL + 100) << 16;
    repl_on_peer_message(r, members[1].id, &m);
    assert_true(hlc_physical_ms(clk.last) >= WALL + 100);
    repl_free(r);
}

static void test_not_joined_node_refuses_to_coordinate(void **s)
{
    (void)s;
    struct repl *r = make();
    repl_set_ready(r, false);
    struct msg m = {.type = MSG_GET, .id = 3};
    m.u.req = (struct msg_req){(const uint8_t *)"k", 1, NULL, 0, CONS_ONE, 0};
    fake_env_clear_replies(&fake);
    assert_int_equal(repl_client_request(r, &m, &m), 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, KV_ERR_UNAVAILABLE);
    assert_non_null(strstr(answer_text(), "joining"));
    repl_free(r);
}

/* Runs one round of hint replay for a hint whose owner is not on the ring;
 * every replica of the key is sent the record (node 0's copy is a local
 * write). The last target answers `last`; the others succeed.
 * @retval whether the hint was deleted. */
static bool rehome_round(struct repl *r, int last)
{
    fake_env_clear_sent(&fake);
    n_submits = 0;
    repl_tick(r);
    size_t local = n_submits, targets = fake.n_sent + local;
    /* The key's replicas now: three (N), not the gone owner. */
    assert_int_equal(targets, 3);
    for (size_t i = 0; i < fake.n_sent; i++) {
        assert_int_equal(fake.sent[i].m.type, MSG_REPLICA_WRITE);
        assert_false(fake.sent[i].m.u.replica.hinted);
        assert_memory_not_equal(fake.sent[i].to, hint_owner, 16);
    }
    for (size_t i = 0; i < local; i++) {
        assert_int_equal(submitted[i]->op, STORAGE_PUT);
        repl_on_stored(r, submitted[i]);
    }
    for (size_t i = 0; i < fake.n_sent; i++) {
        assert_int_equal(n_submits, local); /* not deleted before the last */
        answer_from(r, i, i + 1 == fake.n_sent ? last : 0);
    }
    bool deleted = n_submits == local + 1;
    if (deleted) {
        assert_int_equal(submitted[local]->op, STORAGE_DEL_HINT);
        assert_memory_equal(submitted[local]->owner, hint_owner, 16);
        repl_on_stored(r, submitted[local]);
    }
    return deleted;
}

static void test_hints_for_a_gone_owner_go_to_the_keys_replicas(void **s)
{
    (void)s;
    struct repl *r = make();
    memset(hint_owner, 0x99, 16); /* left, or forgotten: not on the ring */
    have_hint = true;
    /* One replica refuses: the hint stays for a later round. */
    assert_false(rehome_round(r, KV_ERR_FULL));
    assert_int_equal(repl_counters(r)->hints_replayed, 0);
    /* The next round succeeds everywhere: the hint goes. */
    fake.now += 500;
    assert_true(rehome_round(r, 0));
    assert_int_equal(repl_counters(r)->hints_replayed, 1);
    /* A node still joining may just not know the owner yet: it waits. */
    repl_set_ready(r, false);
    fake.now += 500;
    fake_env_clear_sent(&fake);
    n_submits = 0;
    repl_tick(r);
    assert_int_equal(fake.n_sent + n_submits, 0);
    repl_free(r);
}

static void test_only_members_read_replicas(void **s)
{
    (void)s;
    struct repl *r = make();
    /* A process that proved the cluster secret but is in no view. */
    uint8_t stranger[16];
    memset(stranger, 0xee, sizeof(stranger));
    struct msg q = {.type = MSG_REPLICA_READ, .id = 41, .hlc = WALL << 16};
    q.u.replica.key = (const uint8_t *)"secret";
    q.u.replica.key_len = 6;
    size_t before = fake.n_sent;
    repl_on_peer_message(r, stranger, &q);
    assert_int_equal(fake.n_sent, before + 1);
    const struct msg *a = &fake.sent[before].m;
    assert_int_equal(a->type, MSG_REPLICA_ANSWER);
    assert_int_equal(a->u.replica.code, KV_ERR_UNAVAILABLE);
    assert_false(a->u.replica.found);
    /* A member is answered. */
    repl_on_peer_message(r, members[1].id, &q);
    assert_int_equal(fake.n_sent, before + 2);
    assert_int_equal(fake.sent[before + 1].m.u.replica.code, 0);
    /* Nor may the stranger write: refused before anything is stored. */
    struct msg w = {.type = MSG_REPLICA_WRITE, .id = 42, .hlc = WALL << 16};
    w.u.replica.key = (const uint8_t *)"planted";
    w.u.replica.key_len = 7;
    w.u.replica.value = (const uint8_t *)"x";
    w.u.replica.value_len = 1;
    w.u.replica.version = WALL << 16;
    size_t stored = n_submits;
    repl_on_peer_message(r, stranger, &w);
    assert_int_equal(fake.n_sent, before + 3);
    assert_int_equal(fake.sent[before + 2].m.u.replica.code,
                     KV_ERR_UNAVAILABLE);
    assert_int_equal(n_submits, stored);
    repl_free(r);
}

int main(void)
{
    assert_true(sodium_init() >= 0);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_only_members_read_replicas),
        cmocka_unit_test(test_write_goes_to_three_and_is_acknowledged_at_two),
        cmocka_unit_test(test_a_write_needs_a_quorum_on_both_sides_of_a_join),
        cmocka_unit_test(test_a_write_is_planned_again_when_the_rings_change),
        cmocka_unit_test(test_shortfall_says_how_many_were_needed_and_answered),
        cmocka_unit_test(
            test_a_refused_write_that_replicas_took_may_have_been_applied),
        cmocka_unit_test(test_a_zone_change_rebuilds_the_ring),
        cmocka_unit_test(test_a_future_record_is_refused_whoever_relays_it),
        cmocka_unit_test(
            test_a_late_answer_from_before_a_restart_is_not_counted),
        cmocka_unit_test(test_failed_link_sends_a_hinted_copy_past_the_list),
        cmocka_unit_test(
            test_with_no_node_past_the_list_the_coordinator_keeps_a_hint),
        cmocka_unit_test(test_peer_clock_far_ahead_is_refused),
        cmocka_unit_test(test_not_joined_node_refuses_to_coordinate),
        cmocka_unit_test(test_hints_for_a_gone_owner_go_to_the_keys_replicas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
