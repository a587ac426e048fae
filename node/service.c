/* What a client request means on this node, without sockets or libev.
 *
 * A get is answered at once from an LMDB read transaction. A put or del is
 * stamped with the node's HLC (after merging the client session's clock, so a
 * client's later write always beats its earlier one, DESIGN §4) and handed
 * back as a pending write; the server submits it to the group-commit writer
 * and answers only once it is durable (DESIGN §6). */
#include "node.h"

#include "../common/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int encode_result(struct service *svc, uint64_t id, int code,
                         uint64_t version, const uint8_t *value,
                         size_t value_len, bool has_value, const char *text,
                         uint8_t **out, size_t *out_len)
{
    struct msg m = {.type = MSG_RESULT, .id = id, .hlc = svc->hlc.last};
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
    struct msg m = {.type = MSG_WELCOME, .hlc = svc->hlc.last};
    memcpy(m.u.welcome.node_id, svc->node_id, sizeof(svc->node_id));
    m.u.welcome.max_key = svc->cfg->max_key;
    m.u.welcome.max_value = svc->cfg->max_value;
    return msg_encode(&m, out, out_len);
}

static int handle_get(struct service *svc, const struct msg *m,
                      struct service_action *act)
{
    struct storage_record rec;
    svc->counters.gets++;
    int rc = storage_get(svc->st, m->u.req.key, m->u.req.key_len, &rec);
    if (rc == KV_ERR_NOT_FOUND)
        return encode_result(svc, m->id, KV_ERR_NOT_FOUND, 0, NULL, 0, false,
                             NULL, &act->answer, &act->answer_len);
    if (rc) {
        char text[128];
        snprintf(text, sizeof(text), "read failed on this node: %s",
                 kv_strerror(rc));
        return service_error(svc, m->id, rc, text, &act->answer,
                             &act->answer_len);
    }
    if (rec.tombstone)
        rc = encode_result(svc, m->id, KV_ERR_NOT_FOUND, rec.version, NULL, 0,
                           false, NULL, &act->answer, &act->answer_len);
    else
        rc = encode_result(svc, m->id, 0, rec.version, rec.value, rec.value_len,
                           true, NULL, &act->answer, &act->answer_len);
    storage_record_free(&rec);
    return rc;
}

static int handle_write(struct service *svc, const struct msg *m,
                        uint64_t now_ms, struct service_action *act)
{
    const struct msg_req *q = &m->u.req;
    size_t vlen = m->type == MSG_PUT ? q->value_len : 0;
    if (m->type == MSG_PUT)
        svc->counters.puts++;
    else
        svc->counters.dels++;
    struct pending_write *pw = calloc(1, sizeof(*pw) + q->key_len + vlen);
    if (!pw)
        return KV_ERR_NOMEM;
    memcpy(pw->data, q->key, q->key_len);
    if (vlen)
        memcpy(pw->data + q->key_len, q->value, vlen);
    pw->w.key = pw->data;
    pw->w.key_len = q->key_len;
    pw->w.value = pw->data + q->key_len;
    pw->w.value_len = vlen;
    pw->w.tombstone = m->type == MSG_DEL;
    pw->w.version = hlc_now(&svc->hlc, clock_wall_ms());
    memcpy(pw->w.origin, svc->node_id, sizeof(pw->w.origin));
    pw->w.ctx = pw;
    pw->req_id = m->id;
    pw->type = m->type;
    uint32_t timeout =
        q->timeout_ms ? q->timeout_ms : svc->cfg->request_timeout_ms;
    pw->deadline_ms = now_ms + timeout;
    act->write = pw;
    return 0;
}

static int handle_members(struct service *svc, const struct msg *m,
                          struct service_action *act)
{
    struct msg r = {
        .type = MSG_MEMBERS_RESULT, .id = m->id, .hlc = svc->hlc.last};
    struct membership *ms =
        svc->gossip ? gossip_io_membership(svc->gossip) : NULL;
    size_t n = ms ? membership_size(ms) : 0;
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

static void fill_status(struct service *svc, struct msg_status *s)
{
    if (!svc->gossip)
        return;
    struct membership *ms = gossip_io_membership(svc->gossip);
    const struct gossip_counters *gc = gossip_io_counters(svc->gossip);
    s->members_alive = membership_live_count(ms);
    s->members_total = membership_size(ms);
    s->gossip_opened = gc->udp.opened;
    s->gossip_rejected = gc->udp.bad_auth + gc->udp.malformed + gc->undecodable;
    s->gossip_replayed = gc->udp.replayed;
    s->peer_rejected = gc->peer_rejected;
}

static int dispatch(struct service *svc, const struct msg *m, uint64_t now_ms,
                    struct service_action *act);

int service_handle(struct service *svc, const uint8_t *req, size_t len,
                   uint64_t now_ms, struct service_action *act)
{
    memset(act, 0, sizeof(*act));
    struct msg_limits lim = {svc->cfg->max_key, svc->cfg->max_value};
    struct msg m;
    int rc = msg_decode(req, len, &lim, &m);
    if (rc) {
        char text[128];
        snprintf(text, sizeof(text),
                 "malformed request: %s (limits: key %u "
                 "bytes, value %u bytes)",
                 kv_strerror(rc), svc->cfg->max_key, svc->cfg->max_value);
        log_warn("client sent a malformed request: %s", kv_strerror(rc));
        return service_error(svc, 0, rc, text, &act->answer, &act->answer_len);
    }
    /* Merge the session clock, unless it runs further ahead of ours than any
     * honest clock may (DESIGN §4, max_clock_offset). */
    uint64_t wall = clock_wall_ms();
    if (hlc_physical_ms(m.hlc) > wall + svc->cfg->max_clock_offset_ms) {
        log_warn("refused a request whose session clock is %llu ms ahead",
                 (unsigned long long)(hlc_physical_ms(m.hlc) - wall));
        msg_free(&m);
        return service_error(svc, m.id, KV_ERR_INVAL,
                             "session clock too far ahead of this node's",
                             &act->answer, &act->answer_len);
    }
    hlc_observe(&svc->hlc, m.hlc, wall);
    rc = dispatch(svc, &m, now_ms, act);
    msg_free(&m);
    return rc;
}

static int dispatch(struct service *svc, const struct msg *m, uint64_t now_ms,
                    struct service_action *act)
{
    switch (m->type) {
    case MSG_GET:
        return handle_get(svc, m, act);
    case MSG_PUT:
    case MSG_DEL:
        return handle_write(svc, m, now_ms, act);
    case MSG_STATUS: {
        struct storage_stats ss = {0};
        storage_stats(svc->st, &ss);
        struct msg r = {
            .type = MSG_STATUS_RESULT, .id = m->id, .hlc = svc->hlc.last};
        struct msg_status *s = &r.u.status;
        memcpy(s->node_id, svc->node_id, sizeof(s->node_id));
        s->listen = svc->cfg->listen;
        s->listen_len = strlen(svc->cfg->listen);
        s->uptime_s = (now_ms - svc->start_ms) / 1000;
        s->keys = ss.entries;
        s->map_used = ss.map_used;
        s->map_size = ss.map_size;
        s->connections = svc->connections;
        s->puts = svc->counters.puts;
        s->gets = svc->counters.gets;
        s->dels = svc->counters.dels;
        s->errors = svc->counters.errors;
        s->write_batches = ss.batches;
        fill_status(svc, s);
        return msg_encode(&r, &act->answer, &act->answer_len);
    }
    case MSG_MEMBERS:
        return handle_members(svc, m, act);
    default:
        return service_error(svc, m->id, KV_ERR_UNKNOWN_TYPE,
                             "not a request a node answers", &act->answer,
                             &act->answer_len);
    }
}

int service_write_answer(struct service *svc, const struct pending_write *pw,
                         int err, uint8_t **out, size_t *out_len)
{
    if (err == KV_ERR_TIMEOUT)
        return service_error(svc, pw->req_id, err,
                             "the write was not durable before its deadline; "
                             "it may still have been applied",
                             out, out_len);
    if (err) {
        char text[160];
        snprintf(text, sizeof(text),
                 "write failed on this node: %s; it was not applied",
                 kv_strerror(err));
        return service_error(svc, pw->req_id, err, text, out, out_len);
    }
    /* A write beaten by a newer stored version is still acknowledged: LWW
     * says the newer one is the key's value, and this one is superseded. */
    return encode_result(svc, pw->req_id, 0, pw->w.stored_version, NULL, 0,
                         false, NULL, out, out_len);
}
