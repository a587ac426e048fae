/* What a client request means on this node, without sockets or libev.
 *
 * Every request first merges the client session's clock into the node's HLC
 * (so a client's later write always beats its earlier one, DESIGN §4). A
 * put, get, del or where then goes to the coordinator (repl.c), which
 * answers once enough replicas have; status, members and ring are answered
 * here at once. */
#include "node.h"
#include "ae.h"

#include "../common/common.h"
#include "fault.h"
#include "transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int encode_result(struct service *svc, uint64_t id, int code,
                         uint64_t version, const uint8_t *value,
                         size_t value_len, bool has_value, const char *text,
                         uint8_t **out, size_t *out_len)
{
    struct msg m = {
        .type = MSG_RESULT, .id = id, .hlc = core_hlc(svc->core)->last};
    m.u.result.code = code;
    m.u.result.version = version;
    m.u.result.has_value = has_value;
    m.u.result.value = value;
    m.u.result.value_len = value_len;
    m.u.result.text = text ? text : "";
    m.u.result.text_len = text ? strlen(text) : 0;
    return msg_encode(&m, out, out_len);
}

int service_error(struct service *svc, uint64_t id, int code, const char *text,
                  uint8_t **out, size_t *out_len)
{
    svc->counters.errors++;
    return encode_result(svc, id, code, 0, NULL, 0, false, text, out, out_len);
}

int service_welcome(struct service *svc, uint8_t **out, size_t *out_len)
{
    struct msg m = {.type = MSG_WELCOME, .hlc = core_hlc(svc->core)->last};
    memcpy(m.u.welcome.node_id, svc->node_id, sizeof(svc->node_id));
    m.u.welcome.max_key = svc->cfg->max_key;
    m.u.welcome.max_value = svc->cfg->max_value;
    return msg_encode(&m, out, out_len);
}

static int handle_members(struct service *svc, const struct msg *m,
                          struct service_action *act)
{
    struct msg r = {.type = MSG_MEMBERS_RESULT,
                    .id = m->id,
                    .hlc = core_hlc(svc->core)->last};
    struct membership *ms = core_membership(svc->core);
    size_t n = membership_size(ms);
    r.u.members.rows = calloc(n ? n : 1, sizeof(*r.u.members.rows));
    if (!r.u.members.rows)
        return KV_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const struct member_view *v = membership_get(ms, i);
        r.u.members.rows[i].info = v->info;
        r.u.members.rows[i].rtt_ms = v->last_rtt_ms;
    }
    r.u.members.n = n;
    int rc = msg_encode(&r, &act->answer, &act->answer_len);
    free(r.u.members.rows);
    return rc;
}

/* kvcli status's counters, in the order kvcli shows them. A counter is
 * added here (and in its test): kvcli and the JSON output show every one. */
#define STATUS_MAX_REGIONS 8

struct status_list {
    struct status_counter c[STATUS_MAX_COUNTERS];
    size_t n;
    /* names made up here (per remote region), alive until encoded */
    char names[3 * STATUS_MAX_REGIONS][STATUS_NAME_MAX + 1];
    size_t n_names;
};

static void add(struct status_list *l, const char *name, uint64_t value)
{
    if (l->n < STATUS_MAX_COUNTERS)
        l->c[l->n++] = (struct status_counter){name, strlen(name), value};
}

/* Adds "wan_<region>_<what>", the region cut to fit and made of
 * [a-z0-9_]. */
static void add_named(struct status_list *l, const char *region,
                      const char *what, uint64_t value)
{
    if (l->n_names == sizeof(l->names) / sizeof(l->names[0]))
        return;
    char *name = l->names[l->n_names++];
    char r[15];
    size_t k = 0;
    for (; region[k] && k < sizeof(r) - 1; k++) {
        char ch = region[k];
        r[k] = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ? ch
               : ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a')
                                        : '_';
    }
    r[k] = '\0';
    snprintf(name, STATUS_NAME_MAX + 1, "wan_%s_%s", r, what);
    add(l, name, value);
}

/* What crosses the WAN, per remote region: hints held for its members,
 * and bytes sent to and received from them (DESIGN §6). */
static void add_regions(struct service *svc, struct status_list *l,
                        const struct storage_hint_count *counts,
                        size_t n_counts)
{
    struct membership *ms = core_membership(svc->core);
    const char *home = membership_get(ms, 0)->info.region;
    struct {
        const char *name;
        uint64_t hints, out, in;
    } reg[STATUS_MAX_REGIONS];
    size_t nr = 0;
    for (size_t i = 1; i < membership_size(ms); i++) {
        const struct wire_member *w = &membership_get(ms, i)->info;
        if (strcmp(w->region, home) == 0)
            continue;
        size_t k = 0;
        while (k < nr && strcmp(reg[k].name, w->region) != 0)
            k++;
        if (k == nr) {
            if (nr == STATUS_MAX_REGIONS)
                continue;
            memset(&reg[nr], 0, sizeof(reg[nr]));
            reg[nr++].name = w->region;
        }
        uint64_t out = 0, in = 0;
        if (svc->transport)
            transport_peer_bytes(svc->transport, w->addr, &out, &in);
        reg[k].out += out;
        reg[k].in += in;
        for (size_t h = 0; h < n_counts; h++)
            if (memcmp(counts[h].owner, w->id, sizeof(w->id)) == 0)
                reg[k].hints += counts[h].count;
    }
    for (size_t k = 0; k < nr; k++) {
        add_named(l, reg[k].name, "hints", reg[k].hints);
        add_named(l, reg[k].name, "bytes_out", reg[k].out);
        add_named(l, reg[k].name, "bytes_in", reg[k].in);
    }
}

static void fill_status(struct service *svc, uint64_t now_ms,
                        struct status_list *l, struct msg_status *s)
{
    struct storage_stats ss = {0};
    storage_stats(svc->st, &ss);
    add(l, "uptime_s", (now_ms - svc->start_ms) / 1000);
    add(l, "keys", ss.entries);
    add(l, "map_used", ss.map_used);
    add(l, "map_size", ss.map_size);
    add(l, "connections", svc->connections);
    add(l, "connections_refused", svc->counters.connections_refused);
    add(l, "client_reserved_bytes", svc->counters.client_reserved);
    add(l, "requests_read_role", svc->counters.role_requests[1]);
    add(l, "requests_write_role", svc->counters.role_requests[2]);
    add(l, "requests_admin_role", svc->counters.role_requests[3]);
    add(l, "refused_role", svc->counters.refused_role);
    add(l, "refused_key", svc->counters.refused_key);
    add(l, "puts", svc->counters.puts);
    add(l, "gets", svc->counters.gets);
    add(l, "dels", svc->counters.dels);
    add(l, "errors", svc->counters.errors);
    add(l, "write_batches", ss.batches);
    struct membership *ms = core_membership(svc->core);
    add(l, "members_alive", membership_live_count(ms));
    add(l, "members_total", membership_size(ms));
    struct transport_counters tc = {0};
    if (svc->transport)
        tc = *transport_counters(svc->transport);
    add(l, "gossip_opened", tc.udp.opened);
    add(l, "gossip_rejected",
        tc.udp.bad_auth + tc.udp.malformed + tc.undecodable);
    /* Refused before decoding (bad tag, unknown key, bad header), apart
     * from datagrams that authenticated and then did not decode. */
    add(l, "gossip_bad_auth", tc.udp.bad_auth + tc.udp.malformed);
    add(l, "gossip_undecodable", tc.undecodable);
    add(l, "gossip_replayed", tc.udp.replayed);
    add(l, "peer_rejected", tc.peer_rejected);
    struct repl_counters rc = {0};
    if (core_repl(svc->core))
        rc = *repl_counters(core_repl(svc->core));
    struct topo_counters tcn = {0};
    if (core_topo(svc->core))
        tcn = *topo_counters(core_topo(svc->core));
    add(l, "ring_phase", membership_get(ms, 0)->info.ring);
    add(l, "changes_done", tcn.changes_done);
    add(l, "stream_ranges_total", tcn.ranges_total);
    add(l, "stream_ranges_done", tcn.ranges_done);
    add(l, "stream_records_in", tcn.records_in);
    add(l, "stream_bytes_in", tcn.bytes_in);
    add(l, "stream_records_out", tcn.records_out);
    add(l, "stream_bytes_out", tcn.bytes_out);
    add(l, "stream_corrupt", tcn.corrupt);
    add(l, "stream_retries", tcn.retries);
    add(l, "stream_resumed", tcn.resumed);
    add(l, "replica_reads", rc.replica_reads);
    add(l, "replica_writes", rc.replica_writes);
    add(l, "read_repairs", rc.read_repairs);
    add(l, "digest_reads", rc.digest_reads);
    add(l, "digest_fetches", rc.digest_fetches);
    add(l, "replicas_mismatch", rc.placement_mismatch);
    add(l, "hints_stored", rc.hints_stored);
    add(l, "hints_replayed", rc.hints_replayed);
    add(l, "clock_refused", rc.clock_refused);
    add(l, "store_full", rc.store_full);
    add(l, "request_timeouts", rc.timeouts);
    /* The hints are scanned again only once a write has been committed
     * since the last status (security review L10: a client asking for
     * status in a loop costs no scan each time). */
    struct hint_cache *hc = &svc->hint_cache;
    if (!hc->valid || hc->batches != ss.batches) {
        hc->valid = storage_hint_counts(svc->st, hc->counts, 64, &hc->n,
                                        &hc->total) == 0;
        hc->batches = ss.batches;
    }
    const struct storage_hint_count *counts = hc->counts;
    size_t n = hc->valid ? hc->n : 0;
    uint64_t hints = hc->valid ? hc->total : 0;
    if (n) {
        s->hint_rows = calloc(n, sizeof(*s->hint_rows));
        for (size_t i = 0; s->hint_rows && i < n; i++) {
            memcpy(s->hint_rows[i].owner, counts[i].owner,
                   sizeof(counts[i].owner));
            s->hint_rows[i].count = counts[i].count;
        }
        s->n_hint_rows = s->hint_rows ? n : 0;
    }
    add(l, "hints", hints);
    add_regions(svc, l, counts, n);
    add(l, "frames_rejected", tc.frames_rejected);
    add(l, "peer_backlogged", tc.peer_backlogged);
    struct ae_counters ac = {0};
    struct ae *ae = core_ae(svc->core);
    if (ae) {
        ac = *ae_counters(ae);
        s->n_ranges = AE_RANGES;
        ae_converged(ae, s->range_converged);
    }
    add(l, "ae_rounds", ac.rounds);
    add(l, "ae_pulled", ac.pulled);
    add(l, "ae_pushed", ac.pushed);
    add(l, "ae_bytes_sent", ac.bytes_sent);
    add(l, "ae_bytes_received", ac.bytes_received);
    add(l, "scrubbed", ac.scrubbed);
    add(l, "scrub_corrupt", ac.corrupt);
    add(l, "scrub_repaired", ac.scrub_repaired);
    add(l, "ae_clock_refused", ac.clock_refused);
    s->counters = l->c;
    s->n_counters = l->n;
}

/* kvcli fault: changes the fault layer when the node runs with
 * --fault-injection, and answers with its state either way. */
static int handle_fault(struct service *svc, const struct msg *m,
                        struct service_action *act)
{
    const struct msg_fault *q = &m->u.fault;
    struct fault *f = svc->fault;
    int code = 0;
    char text[160] = "";
    if (!f || !fault_enabled(f)) {
        code = q->op == FAULT_OP_SHOW ? 0 : KV_ERR_PERM;
        snprintf(text, sizeof(text),
                 "fault injection is off on this node (start kvnode with "
                 "--fault-injection to allow it)");
    } else {
        const char *peers[FAULT_MAX_BLOCKED];
        switch (q->op) {
        case FAULT_OP_SET:
            code = fault_set_rule(f, &q->rule);
            if (code == KV_ERR_INVAL)
                snprintf(text, sizeof(text),
                         "bad rule: rates are 0..%u ppm, and stream (tcp) "
                         "faults apply on the sending side only (--dir out)",
                         FAULT_PPM);
            break;
        case FAULT_OP_BLOCK:
            for (size_t i = 0; i < q->n_peers; i++)
                peers[i] = q->peers[i];
            code = fault_block(f, peers, q->n_peers);
            break;
        case FAULT_OP_CLOCK:
            code = fault_set_clock_offset(f, q->offset_ms);
            if (code == KV_ERR_INVAL)
                snprintf(text, sizeof(text),
                         "clock offsets are at most a year either way");
            break;
        case FAULT_OP_CLEAR:
            code = fault_clear(f);
            break;
        }
        if (q->op != FAULT_OP_SHOW)
            log_warn("fault injection: %s %s", fault_op_name(q->op),
                     code ? kv_strerror(code) : "applied");
    }
    if (code)
        svc->counters.errors++;
    struct msg r = {.type = MSG_FAULT_RESULT,
                    .id = m->id,
                    .hlc = core_hlc(svc->core)->last};
    struct msg_fault_result *res = &r.u.fault_result;
    res->code = code;
    res->text = text;
    res->text_len = strlen(text);
    if (f) {
        const struct fault_rule *rules;
        const char(*blocks)[GOSSIP_ADDR_MAX];
        res->enabled = fault_enabled(f);
        res->offset_ms = fault_clock_offset(f);
        res->n_rules = fault_rules(f, &rules);
        res->rules = (struct fault_rule *)rules;
        res->n_peers = fault_blocks(f, &blocks);
        res->peers = (char(*)[GOSSIP_ADDR_MAX])blocks;
        res->counters = *fault_counters(f);
    }
    return msg_encode(&r, &act->answer, &act->answer_len);
}

uint64_t service_wall_ms(const struct service *svc)
{
    return svc->fault ? fault_wall_ms(svc->fault, clock_wall_ms())
                      : clock_wall_ms();
}

static int dispatch(struct service *svc, void *client, const struct msg *m,
                    uint64_t now_ms, struct service_action *act);

static bool client_request_type(int type)
{
    switch (type) {
    case MSG_GET:
    case MSG_PUT:
    case MSG_DEL:
    case MSG_WHERE:
    case MSG_RING:
    case MSG_STATUS:
    case MSG_MEMBERS:
    case MSG_FAULT:
    case MSG_REPAIR:
    case MSG_TOPO:
        return true;
    default:
        return false;
    }
}

int service_handle(struct service *svc, void *client, const uint8_t *req,
                   size_t len, uint64_t now_ms, struct service_action *act)
{
    memset(act, 0, sizeof(*act));
    /* Only requests are decoded: an answer type's row tables would cost
     * far more than its bytes (security review M5). */
    int type = msg_peek_type(req, len);
    if (type >= 0 && !client_request_type(type)) {
        uint64_t id = 0;
        msg_peek_id(req, len, &id);
        return service_error(svc, id, KV_ERR_UNKNOWN_TYPE,
                             "not a request a node answers", &act->answer,
                             &act->answer_len);
    }
    struct msg_limits lim = {svc->cfg->max_key, svc->cfg->max_value};
    struct msg m;
    int rc = msg_decode(req, len, &lim, &m);
    if (rc) {
        char text[128];
        snprintf(text, sizeof(text),
                 "malformed request: %s (limits: key %u "
                 "bytes, value %u bytes)",
                 kv_strerror(rc), svc->cfg->max_key, svc->cfg->max_value);
        /* One line a second at most, however fast they come (L6). */
        svc->malformed++;
        if (now_ms - svc->malformed_log_ms >= 1000 || !svc->malformed_log_ms) {
            log_warn("clients sent %llu malformed request(s) since the last "
                     "line; the latest: %s",
                     (unsigned long long)svc->malformed, kv_strerror(rc));
            svc->malformed = 0;
            svc->malformed_log_ms = now_ms;
        }
        return service_error(svc, 0, rc, text, &act->answer, &act->answer_len);
    }
    /* Merge the session clock, unless it runs further ahead of ours than any
     * honest clock may (DESIGN §4, max_clock_offset). */
    uint64_t wall = service_wall_ms(svc);
    /* A session clock this node issued itself is never too far ahead, even
     * when its wall clock stepped back since (correctness review M5). */
    uint64_t own = hlc_physical_ms(core_hlc(svc->core)->last);
    uint64_t here = own > wall ? own : wall;
    if (hlc_too_far_ahead(m.hlc, here, svc->cfg->max_clock_offset_ms)) {
        log_warn("refused a request whose session clock is %llu ms ahead",
                 (unsigned long long)(hlc_physical_ms(m.hlc) - here));
        msg_free(&m);
        return service_error(svc, m.id, KV_ERR_INVAL,
                             "session clock too far ahead of this node's",
                             &act->answer, &act->answer_len);
    }
    hlc_observe(core_hlc(svc->core), m.hlc, wall);
    rc = dispatch(svc, client, &m, now_ms, act);
    msg_free(&m);
    return rc;
}

static int handle_ring(struct service *svc, const struct msg *m,
                       struct service_action *act)
{
    struct msg r = {
        .type = MSG_RING_RESULT, .id = m->id, .hlc = core_hlc(svc->core)->last};
    int rc = repl_ring_info(core_repl(svc->core), &r.u.ring);
    if (rc == 0)
        rc = msg_encode(&r, &act->answer, &act->answer_len);
    repl_ring_free(&r.u.ring);
    return rc;
}

static int dispatch(struct service *svc, void *client, const struct msg *m,
                    uint64_t now_ms, struct service_action *act)
{
    switch (m->type) {
    case MSG_GET:
    case MSG_PUT:
    case MSG_DEL:
    case MSG_WHERE:
        if (core_stopping(svc->core))
            return service_error(svc, m->id, KV_ERR_UNAVAILABLE,
                                 "node is shutting down", &act->answer,
                                 &act->answer_len);
        svc->counters.puts += m->type == MSG_PUT;
        svc->counters.gets += m->type == MSG_GET;
        svc->counters.dels += m->type == MSG_DEL;
        return core_client_request(svc->core, client, m);
    case MSG_RING:
        return handle_ring(svc, m, act);
    case MSG_STATUS: {
        struct msg r = {.type = MSG_STATUS_RESULT,
                        .id = m->id,
                        .hlc = core_hlc(svc->core)->last};
        struct msg_status *s = &r.u.status;
        memcpy(s->node_id, svc->node_id, sizeof(s->node_id));
        s->listen = svc->cfg->listen;
        s->listen_len = strlen(svc->cfg->listen);
        struct status_list *l = malloc(sizeof(*l));
        if (!l)
            return KV_ERR_NOMEM;
        l->n = l->n_names = 0;
        fill_status(svc, now_ms, l, s);
        int rc = msg_encode(&r, &act->answer, &act->answer_len);
        free(s->hint_rows);
        free(l);
        return rc;
    }
    case MSG_MEMBERS:
        return handle_members(svc, m, act);
    case MSG_FAULT:
        return handle_fault(svc, m, act);
    case MSG_REPAIR: {
        int rc = core_repair(svc->core, client, m->id, m->u.repair.range,
                             m->u.repair.scrub);
        if (rc == 0)
            return 0; /* progress and the outcome come from ae */
        return service_error(svc, m->id, rc,
                             rc == KV_ERR_BUSY
                                 ? "a repair is already waiting for the round "
                                   "in progress; try again when it ends"
                                 : "anti-entropy is not running on this node",
                             &act->answer, &act->answer_len);
    }
    case MSG_TOPO: {
        char why[320];
        int rc = core_topo_request(svc->core, client, m->id, &m->u.topo, why,
                                   sizeof(why));
        if (rc == 0)
            return 0; /* progress and the outcome come from topo */
        log_warn("%s refused: %s",
                 m->u.topo.op == TOPO_DECOMMISSION ? "decommission"
                                                   : "removenode",
                 why);
        return service_error(svc, m->id, rc, why, &act->answer,
                             &act->answer_len);
    }
    default:
        return service_error(svc, m->id, KV_ERR_UNKNOWN_TYPE,
                             "not a request a node answers", &act->answer,
                             &act->answer_len);
    }
}
