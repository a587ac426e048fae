/* Wire messages: msgpack arrays [version, type, id, hlc, fields...].
 *
 * Encoding uses msgpack-c's packer. Decoding runs in two steps: msg_scan()
 * (wire.c) bounds every count by the bytes that remain, then
 * msgpack_unpack_next() builds the object tree (zero-copy: strings and
 * binaries point into the input), and each type's decoder checks every
 * field's type and range. */
#include "proto.h"
#include "wire.h"

#include "../common/common.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoding ---- */

/* Number of array items of each message type, header included. */
static size_t type_items(uint8_t type)
{
    switch (type) {
    case MSG_PUT:
        return 8;
    case MSG_GET:
    case MSG_DEL:
        return 7;
    case MSG_STATUS:
    case MSG_MEMBERS:
        return 4;
    case MSG_MEMBERS_RESULT:
        return 5;
    case MSG_RESULT:
        return 8;
    case MSG_STATUS_RESULT:
        return 22;
    case MSG_WELCOME:
        return 7;
    default:
        return 0;
    }
}

int msg_encode(const struct msg *m, uint8_t **out, size_t *out_len)
{
    size_t items = type_items(m->type);
    if (!items)
        return KV_ERR_INVAL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int e = msgpack_pack_array(&pk, items);
    e |= msgpack_pack_uint8(&pk, PROTO_VERSION);
    e |= msgpack_pack_uint8(&pk, m->type);
    e |= msgpack_pack_uint64(&pk, m->id);
    e |= msgpack_pack_uint64(&pk, m->hlc);
    const struct msg_req *q = &m->u.req;
    const struct msg_result *r = &m->u.result;
    const struct msg_status *s = &m->u.status;
    const struct msg_welcome *w = &m->u.welcome;
    switch (m->type) {
    case MSG_PUT:
    case MSG_GET:
    case MSG_DEL:
        e |= wire_pack_bin(&pk, q->key, q->key_len);
        if (m->type == MSG_PUT)
            e |= wire_pack_bin(&pk, q->value, q->value_len);
        e |= msgpack_pack_uint8(&pk, q->consistency);
        e |= msgpack_pack_uint32(&pk, q->timeout_ms);
        break;
    case MSG_STATUS:
        break;
    case MSG_RESULT:
        e |= msgpack_pack_int32(&pk, r->code);
        e |= msgpack_pack_uint64(&pk, r->version);
        e |= r->has_value ? wire_pack_bin(&pk, r->value, r->value_len)
                          : msgpack_pack_nil(&pk);
        e |= wire_pack_str(&pk, r->text, r->text_len);
        break;
    case MSG_STATUS_RESULT:
        e |= wire_pack_bin(&pk, s->node_id, sizeof(s->node_id));
        e |= wire_pack_str(&pk, s->listen, s->listen_len);
        e |= msgpack_pack_uint64(&pk, s->uptime_s);
        e |= msgpack_pack_uint64(&pk, s->keys);
        e |= msgpack_pack_uint64(&pk, s->map_used);
        e |= msgpack_pack_uint64(&pk, s->map_size);
        e |= msgpack_pack_uint64(&pk, s->connections);
        e |= msgpack_pack_uint64(&pk, s->puts);
        e |= msgpack_pack_uint64(&pk, s->gets);
        e |= msgpack_pack_uint64(&pk, s->dels);
        e |= msgpack_pack_uint64(&pk, s->errors);
        e |= msgpack_pack_uint64(&pk, s->write_batches);
        e |= msgpack_pack_uint64(&pk, s->members_alive);
        e |= msgpack_pack_uint64(&pk, s->members_total);
        e |= msgpack_pack_uint64(&pk, s->gossip_opened);
        e |= msgpack_pack_uint64(&pk, s->gossip_rejected);
        e |= msgpack_pack_uint64(&pk, s->gossip_replayed);
        e |= msgpack_pack_uint64(&pk, s->peer_rejected);
        break;
    case MSG_MEMBERS:
        break;
    case MSG_MEMBERS_RESULT:
        e |= msgpack_pack_array(&pk, m->u.members.n);
        for (size_t i = 0; i < m->u.members.n && !e; i++) {
            e |= msgpack_pack_array(&pk, 2);
            e |= wire_pack_member(&pk, &m->u.members.rows[i].info);
            e |= msgpack_pack_uint64(&pk, m->u.members.rows[i].rtt_ms);
        }
        break;
    case MSG_WELCOME:
        e |= wire_pack_bin(&pk, w->node_id, sizeof(w->node_id));
        e |= msgpack_pack_uint32(&pk, w->max_key);
        e |= msgpack_pack_uint32(&pk, w->max_value);
        break;
    }
    if (e) {
        msgpack_sbuffer_destroy(&sb);
        return KV_ERR_NOMEM;
    }
    *out_len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    return 0;
}

/* ---- decoding ---- */

static int decode_req(const msgpack_object *f, uint8_t type,
                      const struct msg_limits *lim, struct msg_req *q)
{
    uint64_t v;
    memset(q, 0, sizeof(*q));
    TRY(wire_get_bin(&f[0], lim->max_key, &q->key, &q->key_len));
    if (q->key_len == 0)
        return KV_ERR_INVAL;
    size_t i = 1;
    if (type == MSG_PUT)
        TRY(wire_get_bin(&f[i++], lim->max_value, &q->value, &q->value_len));
    TRY(wire_get_uint(&f[i++], CONS_ALL, &v));
    if (v < CONS_ONE)
        return KV_ERR_INVAL;
    q->consistency = (uint8_t)v;
    TRY(wire_get_uint(&f[i], UINT32_MAX, &v));
    q->timeout_ms = (uint32_t)v;
    return 0;
}

static int decode_result(const msgpack_object *f, const struct msg_limits *lim,
                         struct msg_result *r)
{
    memset(r, 0, sizeof(*r));
    TRY(wire_get_int32(&f[0], &r->code));
    if (r->code > 0 || r->code <= KV_ERR__LAST)
        return KV_ERR_INVAL;
    TRY(wire_get_uint(&f[1], UINT64_MAX, &r->version));
    if (f[2].type != MSGPACK_OBJECT_NIL) {
        TRY(wire_get_bin(&f[2], lim->max_value, &r->value, &r->value_len));
        r->has_value = true;
    }
    TRY(wire_get_str(&f[3], 1024, &r->text, &r->text_len));
    return 0;
}

static int decode_status(const msgpack_object *f, struct msg_status *s)
{
    memset(s, 0, sizeof(*s));
    TRY(wire_get_fixed_bin(&f[0], s->node_id, sizeof(s->node_id)));
    TRY(wire_get_str(&f[1], 256, &s->listen, &s->listen_len));
    uint64_t *fields[] = {&s->uptime_s,
                          &s->keys,
                          &s->map_used,
                          &s->map_size,
                          &s->connections,
                          &s->puts,
                          &s->gets,
                          &s->dels,
                          &s->errors,
                          &s->write_batches,
                          &s->members_alive,
                          &s->members_total,
                          &s->gossip_opened,
                          &s->gossip_rejected,
                          &s->gossip_replayed,
                          &s->peer_rejected};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        TRY(wire_get_uint(&f[2 + i], UINT64_MAX, fields[i]));
    return 0;
}

static int decode_members(const msgpack_object *o, struct msg_members *ms)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    size_t n = o->via.array.size;
    if (n > GOSSIP_MAX_MEMBERS)
        return KV_ERR_TOO_LARGE;
    /* n is also bounded by the input's bytes (msg_scan). */
    ms->rows = n ? calloc(n, sizeof(*ms->rows)) : NULL;
    if (n && !ms->rows)
        return KV_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *r = &o->via.array.ptr[i];
        if (r->type != MSGPACK_OBJECT_ARRAY)
            return KV_ERR_TYPE;
        if (r->via.array.size != 2)
            return r->via.array.size < 2 ? KV_ERR_MISSING : KV_ERR_TRAILING;
        TRY(wire_decode_member(&r->via.array.ptr[0], &ms->rows[i].info));
        TRY(wire_get_uint(&r->via.array.ptr[1], UINT64_MAX,
                          &ms->rows[i].rtt_ms));
        ms->n = i + 1;
    }
    return 0;
}

static int decode_welcome(const msgpack_object *f, struct msg_welcome *w)
{
    uint64_t v;
    TRY(wire_get_fixed_bin(&f[0], w->node_id, sizeof(w->node_id)));
    TRY(wire_get_uint(&f[1], UINT32_MAX, &v));
    w->max_key = (uint32_t)v;
    TRY(wire_get_uint(&f[2], UINT32_MAX, &v));
    w->max_value = (uint32_t)v;
    return 0;
}

static int decode_fields(const msgpack_object *o, const struct msg_limits *lim,
                         struct msg *m)
{
    const msgpack_object *a;
    size_t n;
    uint64_t v;
    TRY(wire_open_message(o, &a, &n));
    if (n < 4)
        return KV_ERR_MISSING;
    if (wire_get_uint(&a[1], UINT8_MAX, &v) != 0 || !type_items((uint8_t)v))
        return a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER
                   ? KV_ERR_UNKNOWN_TYPE
                   : KV_ERR_TYPE;
    m->type = (uint8_t)v;
    TRY(wire_get_uint(&a[2], UINT64_MAX, &m->id));
    TRY(wire_get_uint(&a[3], UINT64_MAX, &m->hlc));
    size_t want = type_items(m->type);
    if (n < want)
        return KV_ERR_MISSING;
    if (n > want)
        return KV_ERR_TRAILING;
    switch (m->type) {
    case MSG_PUT:
    case MSG_GET:
    case MSG_DEL:
        return decode_req(a + 4, m->type, lim, &m->u.req);
    case MSG_STATUS:
    case MSG_MEMBERS:
        return 0;
    case MSG_MEMBERS_RESULT:
        return decode_members(a + 4, &m->u.members);
    case MSG_RESULT:
        return decode_result(a + 4, lim, &m->u.result);
    case MSG_STATUS_RESULT:
        return decode_status(a + 4, &m->u.status);
    default: /* MSG_WELCOME */
        return decode_welcome(a + 4, &m->u.welcome);
    }
}

int msg_decode(const uint8_t *buf, size_t len, const struct msg_limits *lim,
               struct msg *m)
{
    memset(m, 0, sizeof(*m));
    msgpack_unpacked und;
    msgpack_unpacked_init(&und);
    int rc = wire_unpack(buf, len, &und);
    if (rc == 0)
        rc = decode_fields(&und.data, lim, m);
    /* Decoded pointers refer to buf, never to the zone, so it can go now. */
    msgpack_unpacked_destroy(&und);
    if (rc) {
        msg_free(m);
        memset(m, 0, sizeof(*m));
    }
    return rc;
}

void msg_free(struct msg *m)
{
    if (m->type == MSG_MEMBERS_RESULT) {
        free(m->u.members.rows);
        m->u.members.rows = NULL;
        m->u.members.n = 0;
    }
}

const char *consistency_name(int c)
{
    switch (c) {
    case CONS_ONE:
        return "one";
    case CONS_QUORUM:
        return "quorum";
    case CONS_ALL:
        return "all";
    default:
        return NULL;
    }
}

int consistency_parse(const char *s)
{
    for (int c = CONS_ONE; c <= CONS_ALL; c++)
        if (strcmp(s, consistency_name(c)) == 0)
            return c;
    return 0;
}
