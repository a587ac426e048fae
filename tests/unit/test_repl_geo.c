/* repl across regions (node/repl_coord.c, DESIGN §6): replicas per region,
 * the local and per-region consistency levels, nearest-replica reads with
 * digests, and a node whose --replicas differs from its cluster's. Six
 * members in two regions, eu and us, zones a, b and c in each, with
 * --replicas eu:3,us:3: every key lives on all six. */
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
#include "../../node/repl.h"
#include "../../node/ring.h"
#include "../fake/env.h"
#include "../fake/store.h"

#define WALL 1700000000000ull
#define N 6

static struct fake_env fake;
static struct fake_store *fs;
static struct wire_member members[N];
static struct hlc clk;
/* The smoothed round trip coordinators see to each member (by index). */
static uint32_t rtts[N];

#define ANSWERED (fake.n_replies > 0)
#define ANSWER (fake.replies[fake.n_replies - 1].m)

static const char *answer_text(void)
{
    static char text[400];
    snprintf(text, sizeof(text), "%.*s", (int)ANSWER.u.result.text_len,
             ANSWER.u.result.text);
    return text;
}

static int member_index(const uint8_t *id)
{
    for (int i = 0; i < N; i++)
        if (memcmp(members[i].id, id, 16) == 0)
            return i;
    return -1;
}

static uint32_t rtt_of(void *arg, const uint8_t *id)
{
    (void)arg;
    int i = member_index(id);
    return i < 0 ? 0 : rtts[i];
}

/* A repl for member `self` (0..2 are in eu, 3..5 in us) with the given
 * --replicas; self_region renames self's region (NULL: as placed). */
static struct repl *make(int self, const char *replicas,
                         const char *self_region)
{
    struct repl_config rc;
    repl_config_defaults(&rc);
    char err[160];
    assert_int_equal(
        ring_placement_parse(&rc.placement, replicas, err, sizeof(err)), 0);
    fake_env_clear(&fake);
    fs = fake_store_new();
    fake_env_init(&fake, &fake_store_port, fs);
    for (int i = 0; i < N; i++) {
        memset(&members[i], 0, sizeof(members[i]));
        memset(members[i].id, 0x10 * (i + 1), 16);
        snprintf(members[i].region, sizeof(members[i].region), "%s",
                 i < 3 ? "eu" : "us");
        snprintf(members[i].zone, sizeof(members[i].zone), "%c", 'a' + i % 3);
        ring_placement_format(&rc.placement, members[i].replicas,
                              sizeof(members[i].replicas));
        members[i].status = MEMBER_ALIVE;
        rtts[i] = i < 3 ? 1 : 40;
    }
    if (self_region)
        snprintf(members[self].region, sizeof(members[self].region), "%s",
                 self_region);
    clk.last = 0;
    struct repl *r = repl_new(&rc, &fake.env, members[self].id, &clk);
    repl_set_rtt_source(r, rtt_of, NULL);
    repl_set_members(r, members, N);
    repl_set_ready(r, true);
    return r;
}

/* Commits the local writes waiting in the store. */
static void commit_local(struct repl *r);

static void done(struct repl *r)
{
    commit_local(r); /* hints held here, say */
    repl_free(r);
    fake_env_clear(&fake);
    fake_store_free(fs);
}

/* Commits the local writes waiting in the store. */
static void commit_local(struct repl *r)
{
    for (struct storage_write *w = fake_store_completed(fs), *next; w;
         w = next) {
        next = w->next;
        repl_on_stored(r, w);
    }
}

static void request(struct repl *r, uint8_t type, const char *key,
                    int consistency)
{
    struct msg m = {.type = type, .id = 9};
    m.u.req = (struct msg_req){(const uint8_t *)key, strlen(key),
                               (const uint8_t *)"v", type == MSG_PUT,
                               (uint8_t)consistency, 0};
    fake_env_clear_replies(&fake);
    assert_int_equal(repl_client_request(r, &m, &m), 0);
}

/* Answers every replica message sent to members in region (NULL: any)
 * from sent[from..) with code. */
static void answer_region(struct repl *r, size_t from, const char *region,
                          int code)
{
    for (size_t i = from; i < fake.n_sent; i++) {
        const struct fake_sent *s = &fake.sent[i];
        int k = member_index(s->to);
        if (s->gossip || k < 0 || s->m.type == MSG_REPLICA_ANSWER ||
            (region && strcmp(members[k].region, region) != 0))
            continue;
        struct msg a = {
            .type = MSG_REPLICA_ANSWER, .id = s->m.id, .hlc = WALL << 16};
        a.u.replica.code = code;
        a.u.replica.key = s->m.u.replica.key;
        a.u.replica.key_len = s->m.u.replica.key_len;
        a.u.replica.digest = s->m.u.replica.digest;
        repl_on_peer_message(r, s->to, &a);
    }
}

static void test_local_quorum_write_waits_for_its_region_only(void **st)
{
    (void)st;
    struct repl *r = make(0, "eu:3,us:3", NULL);
    request(r, MSG_PUT, "k", CONS_LOCAL_QUORUM);
    /* Every replica gets the write, the WAN ones included. */
    assert_int_equal(fake.n_sent, 5);
    commit_local(r);
    answer_region(r, 0, "us", 0);
    assert_false(ANSWERED); /* 1 of the 2 needed in eu; us does not count */
    answer_region(r, 0, "eu", 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    done(r);
}

static void test_each_quorum_needs_a_quorum_in_every_region(void **st)
{
    (void)st;
    struct repl *r = make(0, "eu:3,us:3", NULL);
    request(r, MSG_PUT, "k", CONS_EACH_QUORUM);
    commit_local(r);
    answer_region(r, 0, "eu", 0);
    assert_false(ANSWERED); /* eu has its quorum; us has none yet */
    answer_region(r, 0, "us", KV_ERR_UNAVAILABLE);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, KV_ERR_UNAVAILABLE);
    assert_non_null(strstr(answer_text(), "2 of 3 replicas in us needed"));
    done(r);

    r = make(0, "eu:3,us:3", NULL);
    request(r, MSG_PUT, "k", CONS_EACH_QUORUM);
    commit_local(r);
    answer_region(r, 0, "us", 0);
    assert_false(ANSWERED); /* 1 of 2 in eu */
    answer_region(r, 0, "eu", 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    done(r);
}

static void test_quorum_counts_every_replica_anywhere(void **st)
{
    (void)st;
    struct repl *r = make(0, "eu:3,us:3", NULL);
    request(r, MSG_PUT, "k", CONS_QUORUM);
    commit_local(r);
    answer_region(r, 0, "eu", 0);
    assert_false(ANSWERED); /* 3 of the 4 needed out of 6 */
    answer_region(r, 0, "us", 0);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    done(r);
}

static void test_local_level_refused_where_the_region_holds_none(void **st)
{
    (void)st;
    /* Node 0 stands in region ap, which holds no replica of anything. */
    struct repl *r = make(0, "eu:3,us:3", "ap");
    request(r, MSG_PUT, "k", CONS_LOCAL_QUORUM);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, KV_ERR_INVAL);
    assert_non_null(strstr(answer_text(), "no replica of this key is in "
                                          "region ap"));
    assert_int_equal(fake.n_sent, 0); /* nothing was written */
    request(r, MSG_GET, "k", CONS_LOCAL_ONE);
    assert_int_equal(ANSWER.u.result.code, KV_ERR_INVAL);
    /* quorum still works from there: eu has two nodes left for its three
     * replicas, us three. */
    request(r, MSG_PUT, "k", CONS_QUORUM);
    assert_false(ANSWERED);
    assert_int_equal(fake.n_sent, 5);
    done(r);
}

/* A record for key at version, as a replica's store holds it. */
static void store_local(const char *key, uint64_t version, const char *value)
{
    struct storage_write w = {.op = STORAGE_PUT,
                              .key = (const uint8_t *)key,
                              .key_len = strlen(key),
                              .value = (const uint8_t *)value,
                              .value_len = strlen(value),
                              .version = version};
    memset(w.origin, 0x42, sizeof(w.origin));
    fake_store_apply(fs, &w);
    assert_int_equal(w.result, 0);
}

static void
test_reads_ask_the_nearest_for_data_and_others_for_digests(void **st)
{
    (void)st;
    /* Node 3 (us) coordinates; eu's node 1 is nearest of the others. */
    struct repl *r = make(3, "eu:3,us:3", NULL);
    rtts[1] = 2;
    rtts[4] = 30;
    rtts[5] = 35;
    request(r, MSG_GET, "k", CONS_QUORUM);
    /* Node 3 reads its own store for the record (nearest: itself); the
     * five others are asked for a digest only. */
    assert_int_equal(fake.n_sent, 5);
    for (size_t i = 0; i < fake.n_sent; i++)
        assert_true(fake.sent[i].m.u.replica.digest);
    done(r);

    /* Not a replica itself (--replicas us:3, from an eu node): the
     * nearest replica gets the record request. */
    r = make(0, "us:3", NULL);
    rtts[3] = 50;
    rtts[4] = 20;
    rtts[5] = 60;
    request(r, MSG_GET, "k", CONS_ONE);
    assert_int_equal(fake.n_sent, 3);
    size_t data = 0;
    for (size_t i = 0; i < fake.n_sent; i++)
        if (!fake.sent[i].m.u.replica.digest) {
            data++;
            assert_int_equal(member_index(fake.sent[i].to), 4);
        }
    assert_int_equal(data, 1);
    done(r);
}

static void test_a_newer_digest_fetches_the_record(void **st)
{
    (void)st;
    struct repl *r = make(0, "eu:3,us:3", NULL);
    store_local("k", 100u << 16, "old");
    request(r, MSG_GET, "k", CONS_LOCAL_QUORUM);
    /* A local read asks only its region: nodes 1 and 2, for digests. */
    assert_int_equal(fake.n_sent, 2);
    size_t first = fake.n_sent;
    /* Node 1 holds a newer record: its digest says so. */
    struct msg a = {
        .type = MSG_REPLICA_ANSWER, .id = fake.sent[0].m.id, .hlc = WALL << 16};
    a.u.replica = (struct msg_replica){.key = (const uint8_t *)"k",
                                       .key_len = 1,
                                       .found = true,
                                       .digest = true,
                                       .version = 200u << 16};
    memset(a.u.replica.origin, 0x42, 16);
    repl_on_peer_message(r, fake.sent[0].to, &a);
    /* Two of three have answered, but the value in hand is older than
     * one named: the record is fetched, and the answer waits for it. */
    assert_false(ANSWERED);
    assert_int_equal(fake.n_sent, first + 1);
    assert_false(fake.sent[first].m.u.replica.digest);
    assert_memory_equal(fake.sent[first].to, fake.sent[0].to, 16);
    a.id = fake.sent[first].m.id;
    a.u.replica.digest = false;
    a.u.replica.value = (const uint8_t *)"new";
    a.u.replica.value_len = 3;
    repl_on_peer_message(r, fake.sent[first].to, &a);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, 0);
    assert_int_equal(ANSWER.u.result.value_len, 3);
    assert_memory_equal(ANSWER.u.result.value, "new", 3);
    assert_int_equal(repl_counters(r)->digest_fetches, 1);
    done(r);
}

static void test_a_node_with_another_placement_coordinates_nothing(void **st)
{
    (void)st;
    struct repl *r = make(0, "eu:3,us:3", NULL);
    /* Node 0 was restarted with eu:2,us:3; the five others were not. */
    done(r);
    r = make(0, "eu:2,us:3", NULL);
    for (int i = 1; i < N; i++)
        snprintf(members[i].replicas, sizeof(members[i].replicas), "eu:3,us:3");
    repl_set_members(r, members, N);
    request(r, MSG_PUT, "k", CONS_QUORUM);
    assert_true(ANSWERED);
    assert_int_equal(ANSWER.u.result.code, KV_ERR_UNAVAILABLE);
    assert_non_null(strstr(answer_text(), "--replicas eu:2,us:3 differs "
                                          "from the cluster's eu:3,us:3"));
    assert_int_equal(repl_counters(r)->placement_mismatch, 1);
    assert_int_equal(fake.n_sent, 0);
    /* Once most members hold its setting, it coordinates again. */
    for (int i = 1; i < 4; i++)
        snprintf(members[i].replicas, sizeof(members[i].replicas), "eu:2,us:3");
    repl_set_members(r, members, N);
    request(r, MSG_PUT, "k", CONS_QUORUM);
    assert_false(ANSWERED);
    assert_int_equal(repl_counters(r)->placement_mismatch, 0);
    done(r);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_quorum_write_waits_for_its_region_only),
        cmocka_unit_test(test_each_quorum_needs_a_quorum_in_every_region),
        cmocka_unit_test(test_quorum_counts_every_replica_anywhere),
        cmocka_unit_test(test_local_level_refused_where_the_region_holds_none),
        cmocka_unit_test(
            test_reads_ask_the_nearest_for_data_and_others_for_digests),
        cmocka_unit_test(test_a_newer_digest_fetches_the_record),
        cmocka_unit_test(
            test_a_node_with_another_placement_coordinates_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
