/* node: the hybrid logical clock, option parsing, and the request service
 * (what a request means, without sockets). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "../../common/common.h"
#include "../../node/node.h"
#include "../fake/env.h"
#include "../../node/ring.h"

static void test_hlc_is_strictly_monotonic(void **state)
{
    (void)state;
    struct hlc c = {0};
    uint64_t a = hlc_now(&c, 1000);
    uint64_t b = hlc_now(&c, 1000); /* same millisecond: logical tick */
    uint64_t d = hlc_now(&c, 999);  /* wall clock stepped back */
    assert_true(a < b && b < d);
    assert_int_equal(hlc_physical_ms(a), 1000);
    assert_int_equal(hlc_physical_ms(d), 1000);
    assert_int_equal(hlc_now(&c, 2000), 2000ull << HLC_LOGICAL_BITS);
}

static void test_hlc_observe_makes_later_writes_win(void **state)
{
    (void)state;
    /* A client saw version r from a node whose clock runs ahead; this node's
     * next write must still be newer. */
    struct hlc c = {0};
    uint64_t r = (5000ull << HLC_LOGICAL_BITS) + 7;
    hlc_observe(&c, r, 4000);
    assert_true(hlc_now(&c, 4000) > r);
}

static void test_hlc_logical_overflow_carries_into_milliseconds(void **state)
{
    (void)state;
    struct hlc c = {.last = (100ull << HLC_LOGICAL_BITS) | HLC_LOGICAL_MASK};
    uint64_t t = hlc_now(&c, 100);
    assert_int_equal(hlc_physical_ms(t), 101);
    assert_int_equal(t & HLC_LOGICAL_MASK, 0);
}

static int parse(struct node_config *cfg, char *err, size_t errlen, ...)
{
    char *argv[32] = {"kvnode"};
    int argc = 1;
    va_list ap;
    va_start(ap, errlen);
    for (char *a; (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    config_defaults(cfg);
    return config_parse(cfg, argc, argv, err, errlen);
}

static void test_config_requires_the_four_paths(void **state)
{
    (void)state;
    struct node_config cfg;
    char err[256];
    assert_int_equal(parse(&cfg, err, sizeof(err), "--data", "d", NULL),
                     KV_ERR_INVAL);
    assert_non_null(strstr(err, "--listen is required"));
    assert_int_equal(parse(&cfg, err, sizeof(err), "--data", "d", "--listen",
                           "127.0.0.1:1", "--cluster-key", "a", "--client-key",
                           "b", NULL),
                     0);
    assert_string_equal(cfg.data_dir, "d");
    assert_string_equal(cfg.replicas, "3");
    assert_int_equal(cfg.placement.n, 3);
    assert_string_equal(cfg.advertise, "127.0.0.1:1"); /* = --listen */
    assert_int_equal(cfg.max_value, 1 << 20);
    assert_false(cfg.fault_injection); /* off unless asked for */
    assert_int_equal(parse(&cfg, err, sizeof(err), "--data", "d", "--listen",
                           "127.0.0.1:1", "--cluster-key", "a", "--client-key",
                           "b", "--fault-injection", NULL),
                     0);
    assert_true(cfg.fault_injection);
    /* A flag takes no value on the command line. */
    assert_int_equal(
        parse(&cfg, err, sizeof(err), "--fault-injection=yes", NULL),
        KV_ERR_INVAL);
}

static void test_config_rejects_bad_values(void **state)
{
    (void)state;
    struct node_config cfg;
    char err[256];
    assert_int_equal(parse(&cfg, err, sizeof(err), "--replicas", "0", NULL),
                     KV_ERR_INVAL);
    assert_non_null(strstr(err, "--replicas"));
    assert_int_equal(
        parse(&cfg, err, sizeof(err), "--max-value-size", "99999999999", NULL),
        KV_ERR_INVAL);
    assert_int_equal(parse(&cfg, err, sizeof(err), "--bogus", "1", NULL),
                     KV_ERR_INVAL);
    assert_int_equal(parse(&cfg, err, sizeof(err), "--data", "d", "--listen",
                           "10.0.0.1:1", "--cluster-key", "a", "--client-key",
                           "b", "--accel", "gpu", NULL),
                     KV_ERR_INVAL);
    assert_non_null(strstr(err, "--accel"));
}

/* Parses the four required paths, --listen and the extra options. */
#define PARSE4(cfg, err, listen, ...)                                          \
    parse(cfg, err, sizeof(err), "--data", "d", "--listen", listen,            \
          "--cluster-key", "a", "--client-key", "b", __VA_ARGS__, NULL)

static void test_config_replicas_per_region(void **state)
{
    (void)state;
    struct node_config cfg;
    char err[256];
    /* The canonical form sorts regions: equal settings compare equal. */
    assert_int_equal(PARSE4(&cfg, err, "10.0.0.1:1", "--replicas", "us:2,eu:3"),
                     0);
    assert_int_equal(cfg.placement.n, 0);
    assert_int_equal(cfg.placement.n_regions, 2);
    assert_string_equal(cfg.placement.regions[0].name, "eu");
    assert_int_equal(cfg.placement.regions[0].count, 3);
    assert_int_equal(ring_placement_total(&cfg.placement), 5);
    char text[GOSSIP_REPLICAS_MAX];
    ring_placement_format(&cfg.placement, text, sizeof(text));
    assert_string_equal(text, "eu:3,us:2");
    /* Bad settings: each a clear error naming what is wrong. */
    static const struct {
        const char *arg, *says;
    } bad[] = {
        {"eu", "expected N or REGION:N"},
        {"3x", "expected N or REGION:N"},
        {"eu:3,", "expected N or REGION:N"},
        {":3", "expected N or REGION:N"},
        {"eu:0", "count of 0"},
        {"0", "N from 1"},
        {"eu:3,eu:2", "named twice"},
        {"eu:9,us:9", "at most 15 replicas"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(
            PARSE4(&cfg, err, "10.0.0.1:1", "--replicas", bad[i].arg),
            KV_ERR_INVAL);
        if (!strstr(err, bad[i].says))
            fail_msg("--replicas %s said '%s'", bad[i].arg, err);
    }
}

static void test_config_advertise(void **state)
{
    (void)state;
    struct node_config cfg;
    char err[256];
    /* A wildcard --listen cannot be what peers dial. */
    assert_int_equal(PARSE4(&cfg, err, "0.0.0.0:7400", "--region", "eu"),
                     KV_ERR_INVAL);
    assert_non_null(strstr(err, "--advertise"));
    assert_int_equal(PARSE4(&cfg, err, "[::]:7400", "--region", "eu"),
                     KV_ERR_INVAL);
    assert_int_equal(
        PARSE4(&cfg, err, "0.0.0.0:7400", "--advertise", "10.1.2.3:7400"), 0);
    assert_string_equal(cfg.listen, "0.0.0.0:7400");
    assert_string_equal(cfg.advertise, "10.1.2.3:7400");
    /* --advertise itself must be a reachable numeric address. */
    assert_int_equal(
        PARSE4(&cfg, err, "0.0.0.0:7400", "--advertise", "0.0.0.0:7400"),
        KV_ERR_INVAL);
    assert_int_equal(
        PARSE4(&cfg, err, "0.0.0.0:7400", "--advertise", "node-a:7400"),
        KV_ERR_INVAL);
    assert_non_null(strstr(err, "numeric"));
}

static void test_config_file_is_overridden_by_command_line(void **state)
{
    (void)state;
    char path[] = "/tmp/essaim-cfg-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "[node]\ndata = /from/file\nlisten = 10.0.0.1:9\n"
                       "cluster-key = ck\nclient-key = cl\nreplicas = 5\n"
                       "max-value-size = 2048\nfault-injection = yes\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct node_config cfg;
    char err[256];
    assert_int_equal(parse(&cfg, err, sizeof(err), "--listen", "127.0.0.1:5",
                           "--config", path, NULL),
                     0);
    assert_string_equal(cfg.data_dir, "/from/file");
    assert_string_equal(cfg.listen, "127.0.0.1:5");
    assert_int_equal(cfg.placement.n, 5);
    assert_int_equal(cfg.max_value, 2048);
    assert_true(cfg.fault_injection);
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "fault-injection = maybe\n", 24), 24);
    close(fd);
    assert_int_equal(parse(&cfg, err, sizeof(err), "--config", path, NULL),
                     KV_ERR_INVAL);
    assert_non_null(strstr(err, "expected true or false"));
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "nonsense = 1\n", 13), 13);
    close(fd);
    assert_int_equal(parse(&cfg, err, sizeof(err), "--config", path, NULL),
                     KV_ERR_INVAL);
    assert_non_null(strstr(err, "unknown setting"));
    unlink(path);
}

/* ---- service ---- */

static char dir[64];
static struct node_config cfg;
static struct service svc;
/* The core's environment for a cluster of one: real storage, no peers. */
static struct fake_env fake;

static void noop_notify(void *arg)
{
    (void)arg;
}

static int svc_setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/essaim-node-XXXXXX");
    assert_non_null(mkdtemp(dir));
    config_defaults(&cfg);
    snprintf(cfg.listen, sizeof(cfg.listen), "127.0.0.1:7400");
    memset(&svc, 0, sizeof(svc));
    svc.cfg = &cfg;
    memset(svc.node_id, 0x11, sizeof(svc.node_id));
    int rc = storage_open(&svc.st, dir, 16 << 20, noop_notify, NULL);
    if (rc)
        return rc;
    struct core_config cc;
    core_config_defaults(&cc);
    cc.with_ae = false;
    fake_env_init(&fake, &storage_lmdb, svc.st);
    fake.wall = clock_wall_ms();
    struct wire_member self = {.version = PROTO_VERSION};
    memcpy(self.id, svc.node_id, sizeof(self.id));
    snprintf(self.addr, sizeof(self.addr), "%s", cfg.listen);
    svc.core = core_new(&cc, &fake.env, &self);
    if (!svc.core)
        return -1;
    core_start(svc.core, NULL, 0);
    /* A cluster of one sends nothing to peers. */
    assert_int_equal(fake.n_sent, 0);
    return 0;
}

static int svc_teardown(void **state)
{
    (void)state;
    core_free(svc.core);
    storage_close(svc.st);
    assert_int_equal(fake.n_sent, 0);
    fake_env_clear(&fake);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd);
}

/* Hands completed storage writes back to repl until one has come. */
static void drain_storage(void)
{
    struct storage_write *done;
    while (!(done = storage_completed(svc.st)))
        usleep(1000);
    while (done) {
        struct storage_write *next = done->next;
        core_on_stored(svc.core, done);
        done = next;
    }
}

/* Sends one request through the service; decodes the answer (direct, or
 * given by repl) into ans, whose buffer *ansbuf the caller frees. */
static void request(struct msg *req, struct service_action *act,
                    struct msg *ans, uint8_t **ansbuf)
{
    uint8_t *buf;
    size_t len;
    int client;
    assert_int_equal(msg_encode(req, &buf, &len), 0);
    assert_int_equal(service_handle(&svc, &client, buf, len, 1000, act), 0);
    free(buf);
    if (req->type == MSG_PUT || req->type == MSG_DEL) {
        /* A write: nothing is answered before the commit, neither directly
         * nor through the env. */
        assert_null(act->answer);
        assert_int_equal(fake.n_replies, 0);
        assert_true(repl_busy(core_repl(svc.core)));
        drain_storage();
    }
    if (!act->answer) {
        assert_int_equal(fake.n_replies, 1);
        struct fake_reply *r = &fake.replies[0];
        assert_ptr_equal(r->client, &client);
        act->answer = r->bytes;
        act->answer_len = r->len;
        r->bytes = NULL; /* the caller's now */
        fake_env_clear(&fake);
    }
    *ansbuf = act->answer;
    struct msg_limits lim = {PROTO_MAX_KEY, PROTO_MAX_VALUE_LIMIT};
    assert_int_equal(msg_decode(act->answer, act->answer_len, &lim, ans), 0);
}

/* A client's message that arrives on a node's link is refused (the link is
 * closed), never handled as a replica message: fuzz_peer found a status
 * request answered with a replica answer that did not decode. */
static void test_core_refuses_client_messages_on_peer_links(void **state)
{
    (void)state;
    static const int types[] = {MSG_STATUS, MSG_PUT, MSG_GET, MSG_WELCOME,
                                MSG_RESULT};
    const uint8_t peer[16] = {0x22};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct msg m = {.type = types[i], .id = 4};
        if (types[i] == MSG_PUT || types[i] == MSG_GET)
            m.u.req =
                (struct msg_req){(const uint8_t *)"k", 1, NULL, 0, CONS_ONE, 0};
        uint8_t *buf;
        size_t len;
        assert_int_equal(msg_encode(&m, &buf, &len), 0);
        assert_int_equal(core_on_peer_message(svc.core, peer, buf, len),
                         KV_ERR_PROTO);
        free(buf);
        assert_int_equal(fake.n_sent, 0);
        assert_int_equal(fake.n_replies, 0);
    }
}

static void test_service_put_is_answered_only_when_durable(void **state)
{
    (void)state;
    struct msg req = {.type = MSG_PUT, .id = 5, .hlc = 0}, ans;
    req.u.req = (struct msg_req){
        (const uint8_t *)"k", 1, (const uint8_t *)"v", 1, CONS_QUORUM, 0};
    struct service_action act;
    uint8_t *abuf;
    request(&req, &act, &ans, &abuf);
    assert_int_equal(ans.id, 5);
    assert_int_equal(ans.u.result.code, 0);
    assert_true(ans.u.result.version > 0);
    assert_false(repl_busy(core_repl(svc.core)));
    free(abuf);
    struct storage_record rec;
    assert_int_equal(storage_get(svc.st, (const uint8_t *)"k", 1, &rec), 0);
    assert_memory_equal(rec.origin, svc.node_id, 16);
    storage_record_free(&rec);

    struct msg get = {.type = MSG_GET, .id = 6};
    get.u.req = (struct msg_req){(const uint8_t *)"k", 1, NULL, 0, CONS_ONE, 0};
    request(&get, &act, &ans, &abuf);
    assert_int_equal(ans.u.result.code, 0);
    assert_int_equal(ans.u.result.value_len, 1);
    assert_memory_equal(ans.u.result.value, "v", 1);
    free(abuf);
    get.u.req.key = (const uint8_t *)"absent";
    get.u.req.key_len = 6;
    request(&get, &act, &ans, &abuf);
    assert_int_equal(ans.u.result.code, KV_ERR_NOT_FOUND);
    free(abuf);
}

static void test_service_ring_lists_this_node(void **state)
{
    (void)state;
    struct msg req = {.type = MSG_RING, .id = 8}, ans;
    struct service_action act;
    uint8_t *abuf;
    request(&req, &act, &ans, &abuf);
    assert_int_equal(ans.type, MSG_RING_RESULT);
    assert_int_equal(ans.u.ring.n, 1);
    assert_int_equal(ans.u.ring.rows[0].share_ppm, 1000000);
    assert_int_equal(ans.u.ring.rows[0].n_tokens, RING_DEFAULT_VNODES);
    msg_free(&ans);
    free(abuf);
}

static void test_service_answers_malformed_request_with_error(void **state)
{
    (void)state;
    struct service_action act;
    const uint8_t junk[] = {0x93, 0x01, 0x02};
    assert_int_equal(service_handle(&svc, NULL, junk, sizeof(junk), 0, &act),
                     0);
    assert_non_null(act.answer);
    struct msg ans;
    struct msg_limits lim = {PROTO_MAX_KEY, PROTO_MAX_VALUE_LIMIT};
    assert_int_equal(msg_decode(act.answer, act.answer_len, &lim, &ans), 0);
    assert_int_equal(ans.u.result.code, KV_ERR_TRUNCATED);
    assert_non_null(
        memmem(ans.u.result.text, ans.u.result.text_len, "malformed", 9));
    free(act.answer);
}

static void test_service_refuses_session_clock_far_ahead(void **state)
{
    (void)state;
    struct msg req = {.type = MSG_GET, .id = 9}, ans;
    req.hlc = (clock_wall_ms() + 60000) << HLC_LOGICAL_BITS;
    req.u.req = (struct msg_req){(const uint8_t *)"k", 1, NULL, 0, CONS_ONE, 0};
    struct service_action act;
    uint8_t *abuf;
    request(&req, &act, &ans, &abuf);
    assert_int_equal(ans.u.result.code, KV_ERR_INVAL);
    assert_int_equal(ans.id, 9);
    free(abuf);
    /* Within max_clock_offset it is merged, and the node's clock follows. */
    req.hlc = (clock_wall_ms() + 200) << HLC_LOGICAL_BITS;
    request(&req, &act, &ans, &abuf);
    assert_true(ans.hlc >= req.hlc);
    free(abuf);
}

static void test_service_status_reports_counters(void **state)
{
    (void)state;
    struct msg req = {.type = MSG_STATUS, .id = 3}, ans;
    struct service_action act;
    uint8_t *abuf;
    request(&req, &act, &ans, &abuf);
    assert_int_equal(ans.type, MSG_STATUS_RESULT);
    assert_int_equal(msg_status_counter(&ans.u.status, "keys"), 1);
    assert_true(msg_status_counter(&ans.u.status, "puts") >= 1);
    /* Every counter the README documents, once each, and no other. */
    static const char *const names[] = {"uptime_s",
                                        "keys",
                                        "map_used",
                                        "map_size",
                                        "connections",
                                        "connections_refused",
                                        "client_reserved_bytes",
                                        "requests_read_role",
                                        "requests_write_role",
                                        "requests_admin_role",
                                        "refused_role",
                                        "refused_key",
                                        "puts",
                                        "gets",
                                        "dels",
                                        "errors",
                                        "write_batches",
                                        "members_alive",
                                        "members_total",
                                        "gossip_opened",
                                        "gossip_rejected",
                                        "gossip_bad_auth",
                                        "gossip_undecodable",
                                        "gossip_replayed",
                                        "peer_rejected",
                                        "ring_phase",
                                        "changes_done",
                                        "stream_ranges_total",
                                        "stream_ranges_done",
                                        "stream_records_in",
                                        "stream_bytes_in",
                                        "stream_records_out",
                                        "stream_bytes_out",
                                        "stream_corrupt",
                                        "stream_retries",
                                        "stream_resumed",
                                        "replica_reads",
                                        "replica_writes",
                                        "read_repairs",
                                        "digest_reads",
                                        "digest_fetches",
                                        "replicas_mismatch",
                                        "hints_stored",
                                        "hints_replayed",
                                        "clock_refused",
                                        "store_full",
                                        "request_timeouts",
                                        "hints",
                                        "frames_rejected",
                                        "peer_backlogged",
                                        "ae_rounds",
                                        "ae_pulled",
                                        "ae_pushed",
                                        "ae_bytes_sent",
                                        "ae_bytes_received",
                                        "scrubbed",
                                        "scrub_corrupt",
                                        "scrub_repaired",
                                        "ae_clock_refused"};
    size_t n_names = sizeof(names) / sizeof(names[0]);
    assert_int_equal(ans.u.status.n_counters, n_names);
    for (size_t i = 0; i < n_names; i++) {
        size_t seen = 0;
        for (size_t k = 0; k < ans.u.status.n_counters; k++)
            seen += ans.u.status.counters[k].name_len == strlen(names[i]) &&
                    memcmp(ans.u.status.counters[k].name, names[i],
                           strlen(names[i])) == 0;
        assert_int_equal(seen, 1);
    }
    assert_memory_equal(ans.u.status.node_id, svc.node_id, 16);
    msg_free(&ans);
    free(abuf);
}

int main(void)
{
    assert_true(sodium_init() >= 0);
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hlc_is_strictly_monotonic),
        cmocka_unit_test(test_hlc_observe_makes_later_writes_win),
        cmocka_unit_test(test_hlc_logical_overflow_carries_into_milliseconds),
        cmocka_unit_test(test_config_requires_the_four_paths),
        cmocka_unit_test(test_config_rejects_bad_values),
        cmocka_unit_test(test_config_file_is_overridden_by_command_line),
        cmocka_unit_test(test_config_replicas_per_region),
        cmocka_unit_test(test_config_advertise),
    };
    const struct CMUnitTest svc_tests[] = {
        cmocka_unit_test(test_service_put_is_answered_only_when_durable),
        cmocka_unit_test(test_core_refuses_client_messages_on_peer_links),
        cmocka_unit_test(test_service_ring_lists_this_node),
        cmocka_unit_test(test_service_answers_malformed_request_with_error),
        cmocka_unit_test(test_service_refuses_session_clock_far_ahead),
        cmocka_unit_test(test_service_status_reports_counters),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    return failed + cmocka_run_group_tests(svc_tests, svc_setup, svc_teardown);
}
