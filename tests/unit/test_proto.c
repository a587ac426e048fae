/* proto: every message round-trips; the decoder rejects each kind of bad
 * input with its own error; the channel frames, chunks and refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <msgpack.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/common.h"
#include "../../proto/proto.h"

static const struct msg_limits lim = {PROTO_MAX_KEY, PROTO_DEFAULT_MAX_VALUE};

static void roundtrip(const struct msg *in, struct msg *out, uint8_t **buf)
{
    size_t len;
    assert_int_equal(msg_encode(in, buf, &len), 0);
    assert_int_equal(msg_decode(*buf, len, &lim, out), 0);
    assert_int_equal(out->type, in->type);
    assert_int_equal(out->id, in->id);
    assert_int_equal(out->hlc, in->hlc);
}

static void test_put_roundtrips_binary_key_and_value(void **state)
{
    (void)state;
    uint8_t key[3] = {0, 0xff, 7}, value[300];
    for (size_t i = 0; i < sizeof(value); i++)
        value[i] = (uint8_t)i;
    struct msg m = {.type = MSG_PUT, .id = 42, .hlc = 1ull << 40}, d;
    m.u.req = (struct msg_req){key, 3, value, 300, CONS_ALL, 250};
    uint8_t *buf;
    roundtrip(&m, &d, &buf);
    assert_int_equal(d.u.req.key_len, 3);
    assert_memory_equal(d.u.req.key, key, 3);
    assert_int_equal(d.u.req.value_len, 300);
    assert_memory_equal(d.u.req.value, value, 300);
    assert_int_equal(d.u.req.consistency, CONS_ALL);
    assert_int_equal(d.u.req.timeout_ms, 250);
    free(buf);
}

static void test_result_status_welcome_roundtrip(void **state)
{
    (void)state;
    uint8_t *buf;
    struct msg d;
    struct msg r = {.type = MSG_RESULT, .id = 7, .hlc = 9};
    r.u.result = (struct msg_result){KV_ERR_FULL, 5, false, NULL, 0, "full", 4};
    roundtrip(&r, &d, &buf);
    assert_int_equal(d.u.result.code, KV_ERR_FULL);
    assert_false(d.u.result.has_value);
    assert_int_equal(d.u.result.text_len, 4);
    free(buf);

    r.u.result = (struct msg_result){0, 5, true, (const uint8_t *)"", 0, "", 0};
    roundtrip(&r, &d, &buf);
    assert_true(d.u.result.has_value); /* an empty value is still a value */
    assert_int_equal(d.u.result.value_len, 0);
    free(buf);

    struct msg s = {.type = MSG_STATUS_RESULT, .id = 1};
    memset(s.u.status.node_id, 0xab, 16);
    s.u.status.listen = "127.0.0.1:7400";
    s.u.status.listen_len = 14;
    struct status_counter counters[] = {{"keys", 4, 12345},
                                        {"write_batches", 13, 99},
                                        {"ae_bytes_received", 17, 0}};
    s.u.status.counters = counters;
    s.u.status.n_counters = 3;
    roundtrip(&s, &d, &buf);
    assert_int_equal(d.u.status.n_counters, 3);
    assert_int_equal(msg_status_counter(&d.u.status, "keys"), 12345);
    assert_int_equal(msg_status_counter(&d.u.status, "write_batches"), 99);
    assert_int_equal(msg_status_counter(&d.u.status, "absent"), 0);
    assert_int_equal(d.u.status.counters[2].name_len, 17);
    assert_memory_equal(d.u.status.node_id, s.u.status.node_id, 16);
    msg_free(&d);
    free(buf);
    /* A counter's name is [a-z0-9_], 1 to STATUS_NAME_MAX bytes. */
    const char *bad[] = {"Keys", "", "a-b",
                         "0123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct status_counter one = {bad[i], strlen(bad[i]), 1};
        s.u.status.counters = &one;
        s.u.status.n_counters = 1;
        size_t len;
        assert_int_equal(msg_encode(&s, &buf, &len), 0);
        assert_int_not_equal(msg_decode(buf, len, &lim, &d), 0);
        free(buf);
    }

    struct msg w = {.type = MSG_WELCOME};
    w.u.welcome.max_key = 1024;
    w.u.welcome.max_value = 1 << 20;
    roundtrip(&w, &d, &buf);
    assert_int_equal(d.u.welcome.max_value, 1 << 20);
    free(buf);
}

static void
test_fault_messages_roundtrip_and_bad_rules_are_refused(void **state)
{
    (void)state;
    uint8_t *buf;
    struct msg d;
    struct msg q = {.type = MSG_FAULT, .id = 3};
    q.u.fault.op = FAULT_OP_SET;
    q.u.fault.rule = (struct fault_rule){"127.0.0.1:7401",
                                         FAULT_OUT,
                                         FAULT_UDP | FAULT_TCP,
                                         200000,
                                         1,
                                         2,
                                         3,
                                         40,
                                         10};
    roundtrip(&q, &d, &buf);
    assert_int_equal(d.u.fault.op, FAULT_OP_SET);
    assert_string_equal(d.u.fault.rule.peer, "127.0.0.1:7401");
    assert_int_equal(d.u.fault.rule.transports, FAULT_UDP | FAULT_TCP);
    assert_int_equal(d.u.fault.rule.drop, 200000);
    assert_int_equal(d.u.fault.rule.jitter_ms, 10);
    msg_free(&d);
    free(buf);

    char peers[2][GOSSIP_ADDR_MAX] = {"127.0.0.1:7402", "[::1]:7403"};
    q.u.fault = (struct msg_fault){
        .op = FAULT_OP_BLOCK, .n_peers = 2, .peers = peers, .offset_ms = -1500};
    roundtrip(&q, &d, &buf);
    assert_int_equal(d.u.fault.n_peers, 2);
    assert_string_equal(d.u.fault.peers[1], "[::1]:7403");
    assert_int_equal(d.u.fault.offset_ms, -1500);
    msg_free(&d);
    free(buf);

    struct fault_rule rules[1] = {q.u.fault.rule};
    snprintf(rules[0].peer, sizeof(rules[0].peer), "*");
    struct msg r = {.type = MSG_FAULT_RESULT, .id = 3};
    r.u.fault_result = (struct msg_fault_result){
        KV_ERR_PERM, "off", 3, false, 250,
        1,           rules, 1, peers, {1, 2, 3, 4, 5, 6}};
    roundtrip(&r, &d, &buf);
    assert_int_equal(d.u.fault_result.code, KV_ERR_PERM);
    assert_false(d.u.fault_result.enabled);
    assert_int_equal(d.u.fault_result.offset_ms, 250);
    assert_int_equal(d.u.fault_result.n_rules, 1);
    assert_string_equal(d.u.fault_result.rules[0].peer, "*");
    assert_string_equal(d.u.fault_result.peers[0], "127.0.0.1:7402");
    assert_int_equal(d.u.fault_result.counters.blocked, 6);
    msg_free(&d);
    free(buf);

    /* An address too long, an empty one, or a rule on an op that takes
     * none, is refused. */
    memset(peers[0], 'a', GOSSIP_ADDR_MAX - 1);
    peers[0][GOSSIP_ADDR_MAX - 1] = '\0';
    q.u.fault =
        (struct msg_fault){.op = FAULT_OP_BLOCK, .n_peers = 1, .peers = peers};
    size_t len;
    assert_int_equal(msg_encode(&q, &buf, &len), 0);
    assert_int_equal(msg_decode(buf, len, &lim, &d), 0); /* 63 B fits */
    msg_free(&d);
    free(buf);
    peers[0][0] = '\0';
    assert_int_equal(msg_encode(&q, &buf, &len), 0);
    assert_int_equal(msg_decode(buf, len, &lim, &d), KV_ERR_INVAL);
    free(buf);
    q.u.fault = (struct msg_fault){.op = FAULT_OP_CLEAR};
    assert_int_equal(msg_encode(&q, &buf, &len), 0);
    buf[5] = FAULT_OP_SET; /* a set whose rule is nil */
    assert_int_equal(msg_decode(buf, len, &lim, &d), KV_ERR_TYPE);
    free(buf);
}

/* Packs an arbitrary array with msgpack-c for the rejection tests. */
static msgpack_sbuffer sb;
static msgpack_packer pk;
static void begin(size_t n)
{
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, n);
}
static int finish(void)
{
    struct msg m;
    int rc = msg_decode((const uint8_t *)sb.data, sb.size, &lim, &m);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}
static void hdr(unsigned version, unsigned type)
{
    msgpack_pack_uint8(&pk, (uint8_t)version);
    msgpack_pack_uint8(&pk, (uint8_t)type);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_uint64(&pk, 2);
}
static void bin(size_t n)
{
    static uint8_t zeros[1 << 21];
    msgpack_pack_bin(&pk, n);
    msgpack_pack_bin_body(&pk, zeros, n);
}

/* Anti-entropy messages and kvcli repair's answers survive the wire. */
static void test_ae_and_repair_roundtrip(void **state)
{
    (void)state;
    uint8_t hashes[3 * AE_HASH_BYTES];
    for (size_t i = 0; i < sizeof(hashes); i++)
        hashes[i] = (uint8_t)i;
    uint32_t idx[3] = {0, 7, 15};
    struct ae_key keys[2] = {{.version = 5, .tombstone = true}, {.version = 9}};
    keys[0].lkey[0] = 1;
    keys[1].lkey[0] = 2;
    keys[1].origin[3] = 4;
    struct ae_record recs[1] = {
        {(const uint8_t *)"k", 1, (const uint8_t *)"value", 5, 77, {9}, false}};
    struct msg m = {.type = MSG_AE, .id = 3};
    struct msg_ae *a = &m.u.ae;
    a->step = AE_STEP_KEYS;
    a->ring[0] = 0xaa;
    a->range = 15;
    a->hashes = hashes;
    a->hashes_len = sizeof(hashes);
    a->idx = idx;
    a->n_idx = 3;
    a->has_after = true;
    a->after[39] = 0x11;
    a->keys = keys;
    a->n_keys = 2;
    a->recs = recs;
    a->n_recs = 1;
    a->more = true;
    uint8_t *buf;
    struct msg d;
    roundtrip(&m, &d, &buf);
    const struct msg_ae *b = &d.u.ae;
    assert_int_equal(d.type, MSG_AE);
    assert_int_equal(b->step, AE_STEP_KEYS);
    assert_int_equal(b->ring[0], 0xaa);
    assert_int_equal(b->range, 15);
    assert_memory_equal(b->hashes, hashes, sizeof(hashes));
    assert_int_equal(b->n_idx, 3);
    assert_int_equal(b->idx[2], 15);
    assert_true(b->has_after);
    assert_int_equal(b->after[39], 0x11);
    assert_int_equal(b->n_keys, 2);
    assert_true(b->keys[0].tombstone);
    assert_int_equal(b->keys[1].version, 9);
    assert_int_equal(b->keys[1].origin[3], 4);
    assert_int_equal(b->n_recs, 1);
    assert_memory_equal(b->recs[0].value, "value", 5);
    assert_int_equal(b->recs[0].version, 77);
    assert_int_equal(b->recs[0].origin[0], 9);
    assert_true(b->more);
    msg_free(&d);
    free(buf);

    /* An empty request (roots without anything else) too. */
    struct msg e = {.type = MSG_AE_ANSWER, .id = 4};
    e.u.ae.step = AE_STEP_ROOTS;
    e.u.ae.code = KV_ERR_VERSION;
    roundtrip(&e, &d, &buf);
    assert_int_equal(d.u.ae.code, KV_ERR_VERSION);
    assert_int_equal(d.u.ae.n_keys, 0);
    assert_false(d.u.ae.has_after);
    msg_free(&d);
    free(buf);

    struct msg r = {.type = MSG_REPAIR, .id = 5};
    r.u.repair.range = -1;
    r.u.repair.scrub = true;
    roundtrip(&r, &d, &buf);
    assert_int_equal(d.u.repair.range, -1);
    assert_true(d.u.repair.scrub);
    free(buf);

    struct msg p = {.type = MSG_REPAIR_RESULT, .id = 6};
    p.u.repair_result = (struct msg_repair_result){
        true, KV_ERR_UNAVAILABLE, "why", 3, 4, 32, 10, 8, 2, 1000, 2000, 50, 1,
        1};
    roundtrip(&p, &d, &buf);
    const struct msg_repair_result *q = &d.u.repair_result;
    assert_true(q->final);
    assert_int_equal(q->code, KV_ERR_UNAVAILABLE);
    assert_int_equal(q->total, 32);
    assert_int_equal(q->bytes_received, 2000);
    assert_int_equal(q->scrub_repaired, 1);
    free(buf);

    /* A range past the last, or a step past the last, is refused. */
    m.u.ae.range = AE_RANGES;
    size_t len;
    assert_int_equal(msg_encode(&m, &buf, &len), 0);
    assert_int_equal(msg_decode(buf, len, &lim, &d), KV_ERR_INVAL);
    free(buf);
}

/* Every message type, every field set to something other than its zero:
 * encode, decode, encode again gives the same bytes (so the decoder keeps
 * every field the encoder writes), and the fields read back are the ones
 * given (so the encoder writes them). */
static void roundtrip_exact(const struct msg *m, struct msg *out,
                            uint8_t **bytes)
{
    uint8_t *b2;
    size_t l1, l2;
    assert_int_equal(msg_encode(m, bytes, &l1), 0);
    assert_int_equal(msg_decode(*bytes, l1, &lim, out), 0);
    assert_int_equal(msg_encode(out, &b2, &l2), 0);
    assert_int_equal(l1, l2);
    assert_memory_equal(*bytes, b2, l1);
    free(b2);
    assert_int_equal(out->type, m->type);
    assert_int_equal(out->id, m->id);
    assert_int_equal(out->hlc, m->hlc);
}

/* Ownership-change messages (DESIGN §7b): kvcli decommission and
 * removenode, and the streams between nodes, survive the wire; an op past
 * the last and checksums that do not match the records' count are
 * refused. */
static void test_topo_and_stream_roundtrip(void **state)
{
    (void)state;
    uint8_t *buf;
    size_t len;
    struct msg d;
    struct msg t = {.type = MSG_TOPO, .id = 8};
    t.u.topo.op = TOPO_REMOVENODE;
    t.u.topo.force = true;
    t.u.topo.node[15] = 0x5a;
    roundtrip_exact(&t, &d, &buf);
    assert_int_equal(d.u.topo.op, TOPO_REMOVENODE);
    assert_true(d.u.topo.force);
    assert_int_equal(d.u.topo.node[15], 0x5a);
    msg_free(&d);
    free(buf);
    t.u.topo.op = TOPO_REMOVENODE + 1;
    assert_int_equal(msg_encode(&t, &buf, &len), 0);
    assert_int_equal(msg_decode(buf, len, &lim, &d), KV_ERR_INVAL);
    free(buf);

    struct ae_record recs[2] = {
        {(const uint8_t *)"k1", 2, (const uint8_t *)"v1", 2, 77, {9}, false},
        {(const uint8_t *)"k2", 2, NULL, 0, 78, {8}, true}};
    uint8_t sums[2 * 16];
    for (size_t i = 0; i < sizeof(sums); i++)
        sums[i] = (uint8_t)(i + 1);
    struct msg s = {.type = MSG_STREAM_ANSWER, .id = 9, .hlc = 10};
    struct msg_stream *a = &s.u.stream;
    a->op = STREAM_SCAN;
    a->code = KV_ERR_FULL;
    a->digest = 0x0123456789abcdefull;
    a->first = 5;
    a->last = UINT64_MAX;
    a->has_after = true;
    a->after[0] = 0x77;
    a->max_bytes = 1u << 20;
    a->sums = sums;
    a->sums_len = sizeof(sums);
    a->recs = recs;
    a->n_recs = 2;
    a->more = true;
    a->owner[15] = 0x3c;
    roundtrip_exact(&s, &d, &buf);
    const struct msg_stream *b = &d.u.stream;
    assert_int_equal(b->owner[15], 0x3c);
    assert_int_equal(b->op, STREAM_SCAN);
    assert_int_equal(b->code, KV_ERR_FULL);
    assert_true(b->digest == 0x0123456789abcdefull);
    assert_int_equal(b->first, 5);
    assert_true(b->last == UINT64_MAX);
    assert_true(b->has_after);
    assert_int_equal(b->after[0], 0x77);
    assert_int_equal(b->max_bytes, 1u << 20);
    assert_int_equal(b->sums_len, sizeof(sums));
    assert_memory_equal(b->sums, sums, sizeof(sums));
    assert_int_equal(b->n_recs, 2);
    assert_true(b->recs[1].tombstone);
    assert_int_equal(b->recs[0].version, 77);
    assert_true(b->more);
    msg_free(&d);
    free(buf);
    /* Checksums for one record while two travel: refused. */
    a->sums_len = 16;
    assert_int_equal(msg_encode(&s, &buf, &len), 0);
    assert_int_equal(msg_decode(buf, len, &lim, &d), KV_ERR_INVAL);
    free(buf);
    a->sums_len = sizeof(sums);
    a->op = STREAM_HINTS + 1;
    assert_int_equal(msg_encode(&s, &buf, &len), 0);
    assert_int_equal(msg_decode(buf, len, &lim, &d), KV_ERR_INVAL);
    free(buf);
}

static void test_every_message_type_roundtrips_every_field(void **state)
{
    (void)state;
    const uint8_t key[] = "a\0key", val[] = "v\xffvalue";
    uint8_t id16[16];
    memset(id16, 0xa5, sizeof(id16));
    struct wire_member w = {
        .version = PROTO_VERSION, .incarnation = 7, .status = MEMBER_SUSPECT};
    memset(w.id, 1, sizeof(w.id));
    memset(w.pubkey, 2, sizeof(w.pubkey));
    memset(w.suspecter, 3, sizeof(w.suspecter));
    snprintf(w.addr, sizeof(w.addr), "10.0.0.1:7400");
    snprintf(w.region, sizeof(w.region), "eu");
    snprintf(w.zone, sizeof(w.zone), "eu-a");
    snprintf(w.replicas, sizeof(w.replicas), "eu:3,us:2");
    struct msg m, d;
    uint8_t *b;
    static const uint8_t req_types[] = {MSG_PUT, MSG_GET, MSG_DEL, MSG_WHERE};
    for (size_t i = 0; i < sizeof(req_types); i++) {
        m = (struct msg){.type = req_types[i], .id = 9 + i, .hlc = 77};
        m.u.req =
            (struct msg_req){key,
                             sizeof(key) - 1,
                             req_types[i] == MSG_PUT ? val : NULL,
                             req_types[i] == MSG_PUT ? sizeof(val) - 1 : 0,
                             CONS_ALL,
                             1234};
        roundtrip_exact(&m, &d, &b);
        assert_int_equal(d.u.req.key_len, sizeof(key) - 1);
        assert_memory_equal(d.u.req.key, key, sizeof(key) - 1);
        if (req_types[i] != MSG_WHERE) { /* where carries the key alone */
            assert_int_equal(d.u.req.consistency, CONS_ALL);
            assert_int_equal(d.u.req.timeout_ms, 1234);
        }
        if (req_types[i] == MSG_PUT)
            assert_memory_equal(d.u.req.value, val, sizeof(val) - 1);
        msg_free(&d);
        free(b);
    }
    static const uint8_t replica_types[] = {MSG_REPLICA_READ, MSG_REPLICA_WRITE,
                                            MSG_REPLICA_ANSWER};
    for (size_t i = 0; i < sizeof(replica_types); i++) {
        m = (struct msg){.type = replica_types[i], .id = 3, .hlc = 5};
        struct msg_replica *r = &m.u.replica;
        *r = (struct msg_replica){.key = key, .key_len = sizeof(key) - 1};
        if (m.type != MSG_REPLICA_READ) {
            r->value = val;
            r->value_len = sizeof(val) - 1;
            r->version = 0x1234567890ull;
            memcpy(r->origin, id16, 16);
        }
        if (m.type == MSG_REPLICA_WRITE) {
            r->hinted = true;
            memset(r->owner, 0x5a, 16);
        }
        if (m.type == MSG_REPLICA_ANSWER) {
            r->code = KV_ERR_CLOCK;
            r->found = true;
            memset(r->checksum, 0x77, sizeof(r->checksum));
        }
        r->digest = m.type == MSG_REPLICA_READ;
        roundtrip_exact(&m, &d, &b);
        const struct msg_replica *g = &d.u.replica;
        assert_memory_equal(g->key, key, sizeof(key) - 1);
        assert_int_equal(g->version, r->version);
        assert_memory_equal(g->origin, r->origin, 16);
        assert_int_equal(g->hinted, r->hinted);
        assert_memory_equal(g->owner, r->owner, 16);
        assert_int_equal(g->code, r->code);
        assert_int_equal(g->found, r->found);
        assert_int_equal(g->value_len, r->value_len);
        assert_int_equal(g->digest, r->digest);
        assert_memory_equal(g->checksum, r->checksum, sizeof(g->checksum));
        msg_free(&d);
        free(b);
    }
    /* A digest answer carries no value: one that does is refused. */
    m = (struct msg){.type = MSG_REPLICA_ANSWER, .id = 3, .hlc = 5};
    m.u.replica = (struct msg_replica){.key = key,
                                       .key_len = sizeof(key) - 1,
                                       .found = true,
                                       .digest = true,
                                       .value = val,
                                       .value_len = sizeof(val) - 1};
    size_t blen;
    assert_int_equal(msg_encode(&m, &b, &blen), 0);
    assert_int_equal(msg_decode(b, blen, &lim, &d), KV_ERR_INVAL);
    free(b);
    /* members, ring and where results, with two rows each */
    struct member_row mrows[2] = {{w, 12}, {w, 0}};
    m = (struct msg){.type = MSG_MEMBERS_RESULT, .id = 1, .hlc = 2};
    m.u.members = (struct msg_members){2, mrows};
    roundtrip_exact(&m, &d, &b);
    assert_int_equal(d.u.members.n, 2);
    assert_int_equal(d.u.members.rows[0].rtt_ms, 12);
    assert_string_equal(d.u.members.rows[1].info.zone, "eu-a");
    assert_int_equal(d.u.members.rows[1].info.incarnation, 7);
    msg_free(&d);
    free(b);
    uint64_t toks[3] = {1, 1ull << 40, UINT64_MAX};
    struct ring_row rrows[2] = {{w, 500000, 3, toks}, {w, 500000, 1, toks}};
    m = (struct msg){.type = MSG_RING_RESULT, .id = 1, .hlc = 2};
    m.u.ring = (struct msg_ring){3, 2, rrows};
    roundtrip_exact(&m, &d, &b);
    assert_int_equal(d.u.ring.replicas, 3);
    assert_int_equal(d.u.ring.rows[0].n_tokens, 3);
    assert_int_equal(d.u.ring.rows[0].tokens[2], UINT64_MAX);
    assert_int_equal(d.u.ring.rows[1].share_ppm, 500000);
    msg_free(&d);
    free(b);
    struct where_row wrows[2] = {
        {w, WHERE_ERROR, KV_ERR_CORRUPT, true, true, 99},
        {w, WHERE_ANSWERED, 0, true, false, 100}};
    m = (struct msg){.type = MSG_WHERE_RESULT, .id = 1, .hlc = 2};
    m.u.where = (struct msg_where){0xfeed, 2, wrows};
    roundtrip_exact(&m, &d, &b);
    assert_int_equal(d.u.where.token, 0xfeed);
    assert_int_equal(d.u.where.rows[0].state, WHERE_ERROR);
    assert_int_equal(d.u.where.rows[0].code, KV_ERR_CORRUPT);
    assert_true(d.u.where.rows[0].tombstone);
    assert_int_equal(d.u.where.rows[1].version, 100);
    msg_free(&d);
    free(b);
    /* the result, the welcome, repair and its progress, and the requests
     * that carry nothing (status, fault and AE messages are round-tripped
     * field by field above) */
    m = (struct msg){.type = MSG_RESULT, .id = 4, .hlc = 6};
    m.u.result = (struct msg_result){KV_ERR_NOT_FOUND, 42,    true, val,
                                     sizeof(val) - 1,  "why", 3};
    roundtrip_exact(&m, &d, &b);
    assert_int_equal(d.u.result.text_len, 3);
    assert_int_equal(d.u.result.version, 42);
    msg_free(&d);
    free(b);
    m = (struct msg){.type = MSG_WELCOME, .id = 0, .hlc = 8};
    memcpy(m.u.welcome.node_id, id16, 16);
    m.u.welcome.max_key = 16;
    m.u.welcome.max_value = 99;
    roundtrip_exact(&m, &d, &b);
    assert_int_equal(d.u.welcome.max_key, 16);
    assert_int_equal(d.u.welcome.max_value, 99);
    msg_free(&d);
    free(b);
    m = (struct msg){.type = MSG_REPAIR, .id = 4, .hlc = 6};
    m.u.repair = (struct msg_repair){7, true};
    roundtrip_exact(&m, &d, &b);
    assert_int_equal(d.u.repair.range, 7);
    assert_true(d.u.repair.scrub);
    msg_free(&d);
    free(b);
    m = (struct msg){.type = MSG_REPAIR_RESULT, .id = 4, .hlc = 6};
    m.u.repair_result = (struct msg_repair_result){
        true, KV_ERR_UNAVAILABLE, "t", 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    roundtrip_exact(&m, &d, &b);
    assert_int_equal(d.u.repair_result.scrub_repaired, 12);
    assert_int_equal(d.u.repair_result.bytes_received, 9);
    msg_free(&d);
    free(b);
    static const uint8_t bare[] = {MSG_STATUS, MSG_MEMBERS, MSG_RING};
    for (size_t i = 0; i < sizeof(bare); i++) {
        m = (struct msg){.type = bare[i], .id = 11, .hlc = 12};
        roundtrip_exact(&m, &d, &b);
        msg_free(&d);
        free(b);
    }
}

static void test_decoder_rejects_each_kind_of_bad_message(void **state)
{
    (void)state;
    /* wrong protocol version */
    begin(4);
    hdr(2, MSG_STATUS);
    assert_int_equal(finish(), KV_ERR_VERSION);
    /* unknown type */
    begin(4);
    hdr(1, 99);
    assert_int_equal(finish(), KV_ERR_UNKNOWN_TYPE);
    /* missing field */
    begin(6);
    hdr(1, MSG_GET);
    bin(3);
    msgpack_pack_uint8(&pk, 1);
    assert_int_equal(finish(), KV_ERR_MISSING);
    /* extra field */
    begin(8);
    hdr(1, MSG_GET);
    bin(3);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_nil(&pk);
    assert_int_equal(finish(), KV_ERR_TRAILING);
    /* key of the wrong type (str instead of bin) */
    begin(7);
    hdr(1, MSG_GET);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "k", 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 0);
    assert_int_equal(finish(), KV_ERR_TYPE);
    /* empty key */
    begin(7);
    hdr(1, MSG_GET);
    bin(0);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 0);
    assert_int_equal(finish(), KV_ERR_INVAL);
    /* oversized key */
    begin(7);
    hdr(1, MSG_GET);
    bin(PROTO_MAX_KEY + 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 0);
    assert_int_equal(finish(), KV_ERR_TOO_LARGE);
    /* oversized value */
    begin(8);
    hdr(1, MSG_PUT);
    bin(1);
    bin(PROTO_DEFAULT_MAX_VALUE + 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 0);
    assert_int_equal(finish(), KV_ERR_TOO_LARGE);
    /* consistency out of range */
    begin(7);
    hdr(1, MSG_GET);
    bin(1);
    msgpack_pack_uint8(&pk, 9);
    msgpack_pack_uint8(&pk, 0);
    assert_int_equal(finish(), KV_ERR_INVAL);
    /* not an array at all */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 0);
    assert_int_equal(finish(), KV_ERR_TYPE);
}

static void test_decoder_rejects_trailing_and_truncated_bytes(void **state)
{
    (void)state;
    struct msg m = {.type = MSG_STATUS, .id = 3}, d;
    uint8_t *buf;
    size_t len;
    assert_int_equal(msg_encode(&m, &buf, &len), 0);
    uint8_t *more = malloc(len + 1);
    memcpy(more, buf, len);
    more[len] = 0xc0;
    assert_int_equal(msg_decode(more, len + 1, &lim, &d), KV_ERR_TRAILING);
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(msg_decode(buf, cut, &lim, &d), KV_ERR_TRUNCATED);
    free(more);
    free(buf);
}

static void test_huge_counts_are_refused_before_allocation(void **state)
{
    (void)state;
    struct msg d;
    /* array32 claiming 4 billion items, map32, bin32 and str32 claiming 4 GiB,
     * and nesting deeper than any message. */
    const uint8_t arr[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
    const uint8_t map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01};
    const uint8_t bin32[] = {0x94, 0x01, 0x04, 0x01, 0xc6,
                             0xff, 0xff, 0xff, 0xff};
    const uint8_t deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x01};
    const uint8_t never_used[] = {0xc1};
    assert_int_equal(msg_decode(arr, sizeof(arr), &lim, &d), KV_ERR_TRUNCATED);
    assert_int_equal(msg_decode(map, sizeof(map), &lim, &d), KV_ERR_TRUNCATED);
    assert_int_equal(msg_decode(bin32, sizeof(bin32), &lim, &d),
                     KV_ERR_TRUNCATED);
    assert_int_equal(msg_decode(deep, sizeof(deep), &lim, &d), KV_ERR_TYPE);
    assert_int_equal(msg_decode(never_used, 1, &lim, &d), KV_ERR_TYPE);
    assert_int_equal(msg_decode(arr, 0, &lim, &d), KV_ERR_TRUNCATED);
}

static void test_consistency_names(void **state)
{
    (void)state;
    assert_int_equal(consistency_parse("one"), CONS_ONE);
    assert_int_equal(consistency_parse("quorum"), CONS_QUORUM);
    assert_int_equal(consistency_parse("all"), CONS_ALL);
    assert_int_equal(consistency_parse("most"), 0);
    assert_string_equal(consistency_name(CONS_QUORUM), "quorum");
}

static void test_net_split_hostport(void **state)
{
    (void)state;
    char host[64], port[8];
    assert_int_equal(net_split_hostport("127.0.0.1:7400", host, sizeof(host),
                                        port, sizeof(port)),
                     0);
    assert_string_equal(host, "127.0.0.1");
    assert_string_equal(port, "7400");
    assert_int_equal(
        net_split_hostport("[::1]:9", host, sizeof(host), port, sizeof(port)),
        0);
    assert_string_equal(host, "::1");
    assert_int_equal(
        net_split_hostport(":7400", host, sizeof(host), port, sizeof(port)), 0);
    assert_string_equal(host, ""); /* any address, for --listen */
    assert_int_equal(
        net_split_hostport("nocolon", host, sizeof(host), port, sizeof(port)),
        KV_ERR_INVAL);
    assert_int_equal(
        net_split_hostport("h:", host, sizeof(host), port, sizeof(port)),
        KV_ERR_INVAL);
    assert_int_equal(net_split_hostport("h:123456789", host, sizeof(host), port,
                                        sizeof(port)),
                     KV_ERR_INVAL);
}

/* ---- gossip ---- */

static struct wire_member sample_member(int i)
{
    struct wire_member m;
    memset(&m, 0, sizeof(m));
    memset(m.id, i, sizeof(m.id));
    memset(m.pubkey, 0x40 + i, sizeof(m.pubkey));
    snprintf(m.addr, sizeof(m.addr), "127.0.0.%d:7400", i);
    snprintf(m.region, sizeof(m.region), "eu-west");
    snprintf(m.zone, sizeof(m.zone), "zone-%d", i % 3);
    m.incarnation = 1000 + (uint64_t)i;
    m.status = (uint8_t)(i % 4);
    m.version = PROTO_VERSION;
    snprintf(m.replicas, sizeof(m.replicas), "eu:3,us:3");
    return m;
}

static void test_gossip_roundtrips_with_members(void **state)
{
    (void)state;
    struct wire_member ms[3] = {sample_member(1), sample_member(2),
                                sample_member(3)};
    struct gossip_msg g = {
        .type = GOSSIP_PING_REQ, .seq = 77, .n_members = 3, .members = ms};
    g.flags = GOSSIP_FLAG_JOINED;
    memset(g.from, 0xaa, 16);
    memset(g.target, 0xbb, 16);
    snprintf(g.target_addr, sizeof(g.target_addr), "10.1.2.3:7400");
    uint8_t *buf;
    size_t len, n;
    assert_int_equal(gossip_encode(&g, GOSSIP_UDP_MAX, &buf, &len, &n), 0);
    assert_int_equal(n, 3);
    struct gossip_msg d;
    assert_int_equal(gossip_decode(buf, len, &d), 0);
    assert_int_equal(d.type, GOSSIP_PING_REQ);
    assert_int_equal(d.seq, 77);
    assert_int_equal(d.flags, GOSSIP_FLAG_JOINED);
    assert_string_equal(d.target_addr, "10.1.2.3:7400");
    assert_memory_equal(d.target, g.target, 16);
    assert_int_equal(d.n_members, 3);
    for (int i = 0; i < 3; i++) {
        assert_memory_equal(&d.members[i], &ms[i], sizeof(ms[i]));
    }
    gossip_msg_free(&d);
    free(buf);
}

static void test_gossip_encode_drops_members_to_fit_a_datagram(void **state)
{
    (void)state;
    struct wire_member ms[40];
    for (int i = 0; i < 40; i++)
        ms[i] = sample_member(i);
    struct gossip_msg g = {.type = GOSSIP_PING, .n_members = 40, .members = ms};
    uint8_t *buf;
    size_t len, n;
    assert_int_equal(gossip_encode(&g, GOSSIP_UDP_MAX, &buf, &len, &n), 0);
    assert_true(len <= GOSSIP_UDP_MAX);
    assert_true(n > 0 && n < 40);
    struct gossip_msg d;
    assert_int_equal(gossip_decode(buf, len, &d), 0);
    assert_int_equal(d.n_members, n);
    gossip_msg_free(&d);
    free(buf);
    assert_int_equal(gossip_encode(&g, 10, &buf, &len, &n), KV_ERR_TOO_LARGE);
}

static void test_gossip_decoder_rejects_bad_fields(void **state)
{
    (void)state;
    struct gossip_msg d;
    /* unknown type */
    begin(2);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, 42);
    const uint8_t *p = (const uint8_t *)sb.data;
    assert_int_equal(gossip_decode(p, sb.size, &d), KV_ERR_UNKNOWN_TYPE);
    msgpack_sbuffer_destroy(&sb);
    /* a member with status 9 */
    struct wire_member m = sample_member(1);
    struct gossip_msg g = {.type = GOSSIP_ACK, .n_members = 1, .members = &m};
    uint8_t *buf;
    size_t len, n;
    assert_int_equal(gossip_encode(&g, 4096, &buf, &len, &n), 0);
    /* [..., [[..., inc, status, version, suspecter(bin 16), ring,
     * replicas("eu:3,us:3")]], flags]: the status is 32 bytes from the
     * end, the ring phase 12. */
    buf[len - 32] = 9;
    assert_int_equal(gossip_decode(buf, len, &d), KV_ERR_INVAL);
    buf[len - 32] = 0;
    buf[len - 12] = RING_PHASE_MAX + 1;
    assert_int_equal(gossip_decode(buf, len, &d), KV_ERR_INVAL);
    buf[len - 12] = RING_LEAVING;
    assert_int_equal(gossip_decode(buf, len, &d), 0);
    assert_int_equal(d.members[0].ring, RING_LEAVING);
    gossip_msg_free(&d);
    /* a sender from before flags: seven items, no flags */
    buf[0] = 0x97;
    assert_int_equal(gossip_decode(buf, len - 1, &d), 0);
    assert_int_equal(d.flags, 0);
    assert_int_equal(d.n_members, 1);
    gossip_msg_free(&d);
    assert_int_equal(gossip_decode(buf, len - 2, &d), KV_ERR_TRUNCATED);
    /* a flags field cut short */
    buf[0] = 0x98;
    buf[len - 1] = 0xcd; /* uint16 marker with no room: truncated */
    assert_int_equal(gossip_decode(buf, len, &d), KV_ERR_TRUNCATED);
    free(buf);
    /* a NUL inside an address */
    m.addr[3] = '\0';
    m.addr[4] = 'x';
    assert_int_equal(gossip_encode(&g, 4096, &buf, &len, &n), 0);
    assert_int_equal(gossip_decode(buf, len, &d), 0); /* encoder stops at NUL */
    assert_int_equal(strlen(d.members[0].addr), 3);
    gossip_msg_free(&d);
    free(buf);
}

/* ---- chan ---- */

static uint8_t psk[32], spriv_i[32], spriv_r[32];

/* Moves everything a has queued into b; returns b's first error. */
static int pipe_bytes(struct chan *a, struct chan *b, size_t step)
{
    const uint8_t *p;
    size_t n;
    chan_output(a, &p, &n);
    size_t off = 0;
    while (off < n) {
        size_t want = n - off < step ? n - off : step, used;
        int rc = chan_input(b, p + off, want, &used);
        if (rc)
            return rc;
        off += used;
        const uint8_t *m;
        size_t ml;
        if (used < want)
            assert_true(chan_take(b, &m, &ml)); /* stopped at a message */
    }
    chan_output_done(a, n);
    return 0;
}

static void connect_pair(struct chan **i, struct chan **r, size_t max)
{
    assert_int_equal(
        chan_new(i, NOISE_INITIATOR, PROTO_PROLOGUE_CLIENT, psk, spriv_i, max),
        0);
    assert_int_equal(
        chan_new(r, NOISE_RESPONDER, PROTO_PROLOGUE_CLIENT, psk, spriv_r, max),
        0);
    assert_int_equal(pipe_bytes(*i, *r, 7), 0);
    assert_int_equal(pipe_bytes(*r, *i, 7), 0);
    assert_true(chan_established(*i));
    assert_false(chan_established(*r));
    assert_int_equal(pipe_bytes(*i, *r, 7), 0);
    assert_true(chan_established(*r));
    uint8_t pub[32];
    crypto_x25519_public(pub, spriv_i);
    assert_memory_equal(chan_remote_static(*r), pub, 32);
}

static void test_chan_carries_messages_across_chunks(void **state)
{
    (void)state;
    struct chan *i, *r;
    connect_pair(&i, &r, 300000);
    size_t sizes[] = {0, 1, 65518, 65519, 200000};
    uint8_t *big = malloc(200000);
    randombytes_buf(big, 200000);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        assert_int_equal(chan_send(i, big, sizes[s]), 0);
        const uint8_t *p, *m;
        size_t n, ml, used;
        chan_output(i, &p, &n);
        assert_int_equal(chan_input(r, p, n, &used), 0);
        assert_int_equal(used, n);
        assert_true(chan_take(r, &m, &ml));
        assert_int_equal(ml, sizes[s]);
        if (ml)
            assert_memory_equal(m, big, ml);
        chan_output_done(i, n);
    }
    /* Two messages in one read: the first stops the input. */
    assert_int_equal(chan_send(r, (const uint8_t *)"ab", 2), 0);
    assert_int_equal(chan_send(r, (const uint8_t *)"cde", 3), 0);
    const uint8_t *p, *m;
    size_t n, ml, used;
    chan_output(r, &p, &n);
    assert_int_equal(chan_input(i, p, n, &used), 0);
    assert_true(used < n);
    assert_true(chan_take(i, &m, &ml));
    assert_int_equal(ml, 2);
    assert_int_equal(chan_input(i, p + used, n - used, &used), 0);
    assert_true(chan_take(i, &m, &ml));
    assert_memory_equal(m, "cde", 3);
    free(big);
    chan_free(i);
    chan_free(r);
}

static void test_chan_refuses_huge_length_and_oversized_message(void **state)
{
    (void)state;
    struct chan *i, *r;
    connect_pair(&i, &r, 1000);
    size_t used;
    const uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    assert_int_equal(chan_input(r, huge, 4, &used), KV_ERR_TOO_LARGE);
    chan_free(i);
    chan_free(r);
    connect_pair(&i, &r, 1000);
    uint8_t big[2000] = {0};
    assert_int_equal(chan_send(i, big, 2000), KV_ERR_TOO_LARGE);
    const uint8_t zero[4] = {0, 0, 0, 0};
    assert_int_equal(chan_input(r, zero, 4, &used), KV_ERR_PROTO);
    chan_free(i);
    chan_free(r);
}

static void test_chan_refuses_wrong_secret_and_tampering(void **state)
{
    (void)state;
    struct chan *i, *r;
    uint8_t other[32];
    memcpy(other, psk, 32);
    other[0] ^= 1;
    assert_int_equal(chan_new(&i, NOISE_INITIATOR, PROTO_PROLOGUE_CLIENT, other,
                              spriv_i, 1000),
                     0);
    assert_int_equal(chan_new(&r, NOISE_RESPONDER, PROTO_PROLOGUE_CLIENT, psk,
                              spriv_r, 1000),
                     0);
    assert_int_equal(pipe_bytes(i, r, 1000), 0);
    assert_int_equal(pipe_bytes(r, i, 1000), 0);
    assert_int_equal(pipe_bytes(i, r, 1000), KV_ERR_AUTH);
    chan_free(i);
    chan_free(r);

    /* A peer handshake is refused by a client channel at its first message:
     * with the PSK modifier, message 1's payload is already encrypted under
     * a key bound to the prologue. */
    assert_int_equal(
        chan_new(&i, NOISE_INITIATOR, PROTO_PROLOGUE_PEER, psk, spriv_i, 1000),
        0);
    assert_int_equal(chan_new(&r, NOISE_RESPONDER, PROTO_PROLOGUE_CLIENT, psk,
                              spriv_r, 1000),
                     0);
    assert_int_equal(pipe_bytes(i, r, 1000), KV_ERR_AUTH);
    chan_free(i);
    chan_free(r);

    /* A transport frame with one flipped bit, then a replayed frame. */
    connect_pair(&i, &r, 1000);
    assert_int_equal(chan_send(i, (const uint8_t *)"hello", 5), 0);
    const uint8_t *p;
    size_t n, used;
    chan_output(i, &p, &n);
    uint8_t copy[64];
    memcpy(copy, p, n);
    copy[n - 1] ^= 0x01;
    assert_int_equal(chan_input(r, copy, n, &used), KV_ERR_AUTH);
    chan_free(i);
    chan_free(r);
    connect_pair(&i, &r, 1000);
    assert_int_equal(chan_send(i, (const uint8_t *)"hello", 5), 0);
    chan_output(i, &p, &n);
    memcpy(copy, p, n);
    assert_int_equal(chan_input(r, copy, n, &used), 0);
    assert_int_equal(chan_input(r, copy, n, &used), KV_ERR_AUTH);
    chan_free(i);
    chan_free(r);
}

/* Runs a handshake from an initiator of (prologue, psk) to a responder that
 * accepts clients and peers; returns the first error or 0, and the kind. */
static int handshake_two_kinds(const char *prologue, const uint8_t *key,
                               const uint8_t *client, const uint8_t *cluster,
                               int *kind)
{
    struct chan *i, *r;
    const struct chan_kind kinds[2] = {{PROTO_PROLOGUE_CLIENT, client, NULL, 0},
                                       {PROTO_PROLOGUE_PEER, cluster, NULL, 0}};
    assert_int_equal(
        chan_new(&i, NOISE_INITIATOR, prologue, key, spriv_i, 1000), 0);
    assert_int_equal(chan_new_responder(&r, kinds, 2, spriv_r, 1000), 0);
    assert_int_equal(chan_kind(r), -1);
    int rc = pipe_bytes(i, r, 1000);
    if (rc == 0)
        rc = pipe_bytes(r, i, 1000);
    if (rc == 0)
        rc = pipe_bytes(i, r, 1000);
    if (rc == 0) {
        assert_true(chan_established(r));
        assert_int_equal(chan_send(r, (const uint8_t *)"ok", 2), 0);
        assert_int_equal(pipe_bytes(r, i, 1000), 0);
    }
    *kind = chan_kind(r);
    chan_free(i);
    chan_free(r);
    return rc;
}

static void test_chan_responder_tells_clients_from_peers(void **state)
{
    (void)state;
    uint8_t client[32], cluster[32];
    randombytes_buf(client, 32);
    randombytes_buf(cluster, 32);
    int kind;
    assert_int_equal(handshake_two_kinds(PROTO_PROLOGUE_CLIENT, client, client,
                                         cluster, &kind),
                     0);
    assert_int_equal(kind, 0);
    assert_int_equal(handshake_two_kinds(PROTO_PROLOGUE_PEER, cluster, client,
                                         cluster, &kind),
                     0);
    assert_int_equal(kind, 1);
    /* A client secret never opens the peer kind, nor the reverse. */
    assert_int_equal(handshake_two_kinds(PROTO_PROLOGUE_PEER, client, client,
                                         cluster, &kind),
                     KV_ERR_AUTH);
    assert_int_equal(handshake_two_kinds(PROTO_PROLOGUE_CLIENT, cluster, client,
                                         cluster, &kind),
                     KV_ERR_AUTH);
    assert_int_equal(
        handshake_two_kinds("essaim/9 other", client, client, cluster, &kind),
        KV_ERR_AUTH);
    assert_int_equal(kind, -1);
}

static void test_chan_send_before_handshake_is_refused(void **state)
{
    (void)state;
    struct chan *i;
    assert_int_equal(chan_new(&i, NOISE_INITIATOR, PROTO_PROLOGUE_CLIENT, psk,
                              spriv_i, 1000),
                     0);
    assert_int_equal(chan_send(i, (const uint8_t *)"x", 1), KV_ERR_PROTO);
    chan_free(i);
}

/* A replica's answer names the key it answers for; one that names none is
 * refused. */
static void test_a_replica_answer_names_its_key(void **state)
{
    (void)state;
    struct msg m = {.type = MSG_REPLICA_ANSWER, .id = 77, .hlc = 5}, d;
    m.u.replica.key = (const uint8_t *)"key-1";
    m.u.replica.key_len = 5;
    m.u.replica.found = true;
    m.u.replica.version = 1234;
    m.u.replica.value = (const uint8_t *)"v";
    m.u.replica.value_len = 1;
    uint8_t *buf;
    roundtrip(&m, &d, &buf);
    assert_int_equal(d.u.replica.key_len, 5);
    assert_memory_equal(d.u.replica.key, "key-1", 5);
    assert_int_equal(d.u.replica.version, 1234);
    assert_true(d.u.replica.found);
    free(buf);
    m.u.replica.key_len = 0;
    size_t len;
    assert_int_equal(msg_encode(&m, &buf, &len), 0);
    assert_int_equal(msg_decode(buf, len, &lim, &d), KV_ERR_INVAL);
    free(buf);
}

/* kvcli access and the list nodes exchange, through the codec; an unknown
 * access operation is refused. */
static void test_access_messages_roundtrip(void **state)
{
    (void)state;
    struct msg q = {.type = MSG_ACCESS, .id = 3, .hlc = 77}, d;
    q.u.access.op = ACCESS_ADD;
    q.u.access.arg = "KEY alice read";
    q.u.access.arg_len = 14;
    uint8_t *buf;
    roundtrip(&q, &d, &buf);
    assert_int_equal(d.u.access.op, ACCESS_ADD);
    assert_int_equal(d.u.access.arg_len, 14);
    assert_memory_equal(d.u.access.arg, "KEY alice read", 14);
    free(buf);
    const uint8_t bad_op[] = {0x96, PROTO_VERSION, MSG_ACCESS, 1, 0, 9, 0xa0};
    assert_int_equal(msg_decode(bad_op, sizeof(bad_op), &lim, &d),
                     KV_ERR_INVAL);
    for (int type = MSG_ACCESS_RESULT; type <= MSG_ACCESS_SET;
         type += MSG_ACCESS_SET - MSG_ACCESS_RESULT) {
        struct msg r = {.type = (uint8_t)type, .id = 4};
        r.u.access_result.code = type == MSG_ACCESS_RESULT ? -7 : 0;
        r.u.access_result.text = "K a read\n";
        r.u.access_result.text_len = 9;
        r.u.access_result.version = 1ull << 60;
        roundtrip(&r, &d, &buf);
        assert_int_equal(d.u.access_result.code, r.u.access_result.code);
        assert_int_equal(d.u.access_result.text_len, 9);
        assert_true(d.u.access_result.version == 1ull << 60);
        free(buf);
    }
}

/* A node counts a client's requests in flight by id before decoding them:
 * msg_peek_id reads every width an id is encoded in, and nothing else. */
static void test_msg_peek_id_reads_every_width(void **state)
{
    (void)state;
    const uint64_t ids[] = {
        0,         1,     127,   128,        255,
        256,       65535, 65536, UINT32_MAX, (uint64_t)UINT32_MAX + 1,
        UINT64_MAX};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        struct msg m = {.type = MSG_GET, .id = ids[i]};
        m.u.req.key = (const uint8_t *)"k";
        m.u.req.key_len = 1;
        m.u.req.consistency = CONS_QUORUM;
        uint8_t *buf;
        size_t len;
        uint64_t got = 42;
        assert_int_equal(msg_encode(&m, &buf, &len), 0);
        assert_true(msg_peek_id(buf, len, &got));
        assert_true(got == ids[i]);
        /* cut inside the id: not a message */
        size_t head = (buf[0] & 0xf0) == 0x90 ? 3 : 0;
        if (head && len > head + 1 && buf[head] >= 0x80)
            assert_false(msg_peek_id(buf, head + 1, &got));
        free(buf);
    }
    const uint8_t not_id[] = {0x93, PROTO_VERSION, MSG_GET, 0xd0, 0x01};
    uint64_t got;
    assert_false(msg_peek_id(not_id, sizeof(not_id), &got)); /* int8 */
    assert_false(msg_peek_id(NULL, 0, &got));
}

int main(void)
{
    assert_int_equal(crypto_init(), 0);
    randombytes_buf(psk, 32);
    randombytes_buf(spriv_i, 32);
    randombytes_buf(spriv_r, 32);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_replica_answer_names_its_key),
        cmocka_unit_test(test_put_roundtrips_binary_key_and_value),
        cmocka_unit_test(test_result_status_welcome_roundtrip),
        cmocka_unit_test(
            test_fault_messages_roundtrip_and_bad_rules_are_refused),
        cmocka_unit_test(test_ae_and_repair_roundtrip),
        cmocka_unit_test(test_topo_and_stream_roundtrip),
        cmocka_unit_test(test_every_message_type_roundtrips_every_field),
        cmocka_unit_test(test_decoder_rejects_each_kind_of_bad_message),
        cmocka_unit_test(test_decoder_rejects_trailing_and_truncated_bytes),
        cmocka_unit_test(test_huge_counts_are_refused_before_allocation),
        cmocka_unit_test(test_consistency_names),
        cmocka_unit_test(test_net_split_hostport),
        cmocka_unit_test(test_gossip_roundtrips_with_members),
        cmocka_unit_test(test_gossip_encode_drops_members_to_fit_a_datagram),
        cmocka_unit_test(test_gossip_decoder_rejects_bad_fields),
        cmocka_unit_test(test_chan_carries_messages_across_chunks),
        cmocka_unit_test(test_chan_refuses_huge_length_and_oversized_message),
        cmocka_unit_test(test_chan_refuses_wrong_secret_and_tampering),
        cmocka_unit_test(test_chan_send_before_handshake_is_refused),
        cmocka_unit_test(test_chan_responder_tells_clients_from_peers),
        cmocka_unit_test(test_msg_peek_id_reads_every_width),
        cmocka_unit_test(test_access_messages_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
