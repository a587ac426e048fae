/* Wire messages, decoded (msg.c encodes them).
 *
 * Decoding runs in two steps: msg_scan() (wire.c) bounds every count by
 * the bytes that remain, then msgpack_unpack_next() builds the object tree
 * (zero-copy: strings and binaries point into the input), and each type's
 * decoder checks every field's type and range. */
#include "proto.h"
#include "wire.h"

#include "../common/common.h"

#include <stdlib.h>
#include <string.h>

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
    TRY(wire_get_uint(&f[i++], CONS_MAX, &v));
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

static int get_bool(const msgpack_object *o, bool *b)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return KV_ERR_TYPE;
    *b = o->via.boolean;
    return 0;
}

/* An array of at most max items (its count is also bounded by the input's
 * bytes, msg_scan), with calloc'd room for them in *rows. */
static int open_rows(const msgpack_object *o, size_t max, size_t size,
                     void **rows, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    *n = o->via.array.size;
    if (*n > max)
        return KV_ERR_TOO_LARGE;
    *rows = *n ? calloc(*n, size) : NULL;
    return *n && !*rows ? KV_ERR_NOMEM : 0;
}

/* Row i of a rows array: an array of exactly want items. */
static int open_row(const msgpack_object *o, size_t i, size_t want,
                    const msgpack_object **items)
{
    const msgpack_object *r = &o->via.array.ptr[i];
    if (r->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    if (r->via.array.size != want)
        return r->via.array.size < want ? KV_ERR_MISSING : KV_ERR_TRAILING;
    *items = r->via.array.ptr;
    return 0;
}

static int decode_replica(const msgpack_object *f, uint8_t type,
                          const struct msg_limits *lim, struct msg_replica *r)
{
    memset(r, 0, sizeof(*r));
    size_t i = 0;
    uint64_t v;
    TRY(wire_get_bin(&f[i++], lim->max_key, &r->key, &r->key_len));
    if (r->key_len == 0)
        return KV_ERR_INVAL;
    if (type == MSG_REPLICA_READ)
        return get_bool(&f[i], &r->digest);
    if (type == MSG_REPLICA_ANSWER) {
        TRY(wire_get_int32(&f[i++], &r->code));
        if (r->code > 0 || r->code <= KV_ERR__LAST)
            return KV_ERR_INVAL;
        TRY(get_bool(&f[i++], &r->found));
    }
    TRY(wire_get_uint(&f[i++], UINT64_MAX, &v));
    r->version = v;
    TRY(wire_get_fixed_bin(&f[i++], r->origin, sizeof(r->origin)));
    TRY(get_bool(&f[i++], &r->tombstone));
    TRY(wire_get_bin(&f[i++], lim->max_value, &r->value, &r->value_len));
    if (r->tombstone && r->value_len)
        return KV_ERR_INVAL;
    if (type == MSG_REPLICA_WRITE && f[i].type != MSGPACK_OBJECT_NIL) {
        TRY(wire_get_fixed_bin(&f[i], r->owner, sizeof(r->owner)));
        r->hinted = true;
    }
    if (type == MSG_REPLICA_ANSWER) {
        TRY(get_bool(&f[i++], &r->digest));
        TRY(wire_get_fixed_bin(&f[i], r->checksum, sizeof(r->checksum)));
        if (r->digest && r->value_len)
            return KV_ERR_INVAL;
    }
    return 0;
}

static int decode_ring(const msgpack_object *f, struct msg_ring *r)
{
    uint64_t v;
    TRY(wire_get_uint(&f[0], 255, &v));
    r->replicas = (uint32_t)v;
    TRY(open_rows(&f[1], GOSSIP_MAX_MEMBERS, sizeof(*r->rows),
                  (void **)&r->rows, &r->n));
    for (size_t i = 0; i < r->n; i++) {
        const msgpack_object *it;
        struct ring_row *row = &r->rows[i];
        TRY(open_row(&f[1], i, 3, &it));
        TRY(wire_decode_member(&it[0], &row->info));
        TRY(wire_get_uint(&it[1], 1000000, &v));
        row->share_ppm = (uint32_t)v;
        TRY(open_rows(&it[2], 65536, sizeof(uint64_t), (void **)&row->tokens,
                      &row->n_tokens));
        for (size_t t = 0; t < row->n_tokens; t++)
            TRY(wire_get_uint(&it[2].via.array.ptr[t], UINT64_MAX,
                              &row->tokens[t]));
    }
    return 0;
}

static int decode_where(const msgpack_object *f, struct msg_where *w)
{
    uint64_t v;
    TRY(wire_get_uint(&f[0], UINT64_MAX, &w->token));
    TRY(open_rows(&f[1], 255, sizeof(*w->rows), (void **)&w->rows, &w->n));
    for (size_t i = 0; i < w->n; i++) {
        const msgpack_object *it;
        struct where_row *row = &w->rows[i];
        TRY(open_row(&f[1], i, 6, &it));
        TRY(wire_decode_member(&it[0], &row->info));
        TRY(wire_get_uint(&it[1], WHERE_ERROR, &v));
        row->state = (uint8_t)v;
        TRY(wire_get_int32(&it[2], &row->code));
        TRY(get_bool(&it[3], &row->found));
        TRY(get_bool(&it[4], &row->tombstone));
        TRY(wire_get_uint(&it[5], UINT64_MAX, &row->version));
    }
    return 0;
}

static int decode_status(const msgpack_object *f, struct msg_status *s)
{
    memset(s, 0, sizeof(*s));
    TRY(wire_get_fixed_bin(&f[0], s->node_id, sizeof(s->node_id)));
    TRY(wire_get_str(&f[1], 256, &s->listen, &s->listen_len));
    const msgpack_object *map = &f[2];
    if (map->type != MSGPACK_OBJECT_MAP)
        return KV_ERR_TYPE;
    if (map->via.map.size > STATUS_MAX_COUNTERS)
        return KV_ERR_TOO_LARGE;
    s->n_counters = map->via.map.size;
    s->counters =
        calloc(s->n_counters ? s->n_counters : 1, sizeof(*s->counters));
    if (!s->counters)
        return KV_ERR_NOMEM;
    for (size_t i = 0; i < s->n_counters; i++) {
        struct status_counter *c = &s->counters[i];
        TRY(wire_get_str(&map->via.map.ptr[i].key, STATUS_NAME_MAX, &c->name,
                         &c->name_len));
        if (c->name_len == 0)
            return KV_ERR_INVAL;
        for (size_t k = 0; k < c->name_len; k++)
            if (!((c->name[k] >= 'a' && c->name[k] <= 'z') ||
                  (c->name[k] >= '0' && c->name[k] <= '9') ||
                  c->name[k] == '_'))
                return KV_ERR_INVAL;
        TRY(wire_get_uint(&map->via.map.ptr[i].val, UINT64_MAX, &c->value));
    }
    const size_t nf = 1;
    const msgpack_object *h = &f[2 + nf];
    TRY(open_rows(h, GOSSIP_MAX_MEMBERS, sizeof(*s->hint_rows),
                  (void **)&s->hint_rows, &s->n_hint_rows));
    for (size_t i = 0; i < s->n_hint_rows; i++) {
        const msgpack_object *it;
        TRY(open_row(h, i, 2, &it));
        TRY(wire_get_fixed_bin(&it[0], s->hint_rows[i].owner,
                               sizeof(s->hint_rows[i].owner)));
        TRY(wire_get_uint(&it[1], UINT64_MAX, &s->hint_rows[i].count));
    }
    const msgpack_object *r = &f[3 + nf];
    if (r->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    if (r->via.array.size > AE_RANGES)
        return KV_ERR_TOO_LARGE;
    s->n_ranges = r->via.array.size;
    for (size_t i = 0; i < s->n_ranges; i++)
        TRY(wire_get_uint(&r->via.array.ptr[i], UINT64_MAX,
                          &s->range_converged[i]));
    return 0;
}

static int decode_records(const msgpack_object *o, size_t max,
                          const struct msg_limits *lim, struct ae_record **out,
                          size_t *n)
{
    TRY(open_rows(o, max, sizeof(**out), (void **)out, n));
    for (size_t i = 0; i < *n; i++) {
        const msgpack_object *it;
        struct ae_record *r = &(*out)[i];
        TRY(open_row(o, i, 5, &it));
        TRY(wire_get_bin(&it[0], lim->max_key, &r->key, &r->key_len));
        TRY(wire_get_bin(&it[1], lim->max_value, &r->value, &r->value_len));
        TRY(wire_get_uint(&it[2], UINT64_MAX, &r->version));
        TRY(wire_get_fixed_bin(&it[3], r->origin, sizeof(r->origin)));
        TRY(get_bool(&it[4], &r->tombstone));
        if (r->key_len == 0 || (r->tombstone && r->value_len))
            return KV_ERR_INVAL;
    }
    return 0;
}

static int decode_ae(const msgpack_object *f, const struct msg_limits *lim,
                     struct msg_ae *a)
{
    uint64_t v;
    const uint8_t *p;
    size_t n;
    TRY(wire_get_uint(&f[0], AE_STEP_PUSH, &v));
    if (v < AE_STEP_ROOTS)
        return KV_ERR_INVAL;
    a->step = (uint8_t)v;
    TRY(wire_get_fixed_bin(&f[1], a->ring, sizeof(a->ring)));
    TRY(wire_get_int32(&f[2], &a->code));
    if (a->code > 0 || a->code <= KV_ERR__LAST)
        return KV_ERR_INVAL;
    TRY(wire_get_uint(&f[3], AE_RANGES - 1, &v));
    a->range = (uint32_t)v;
    TRY(wire_get_bin(&f[4], (size_t)AE_SEGMENTS * AE_HASH_BYTES, &p, &n));
    if (n % AE_HASH_BYTES)
        return KV_ERR_INVAL;
    a->hashes = p;
    a->hashes_len = n;
    TRY(open_rows(&f[5], AE_SEGMENTS, sizeof(*a->idx), (void **)&a->idx,
                  &a->n_idx));
    for (size_t i = 0; i < a->n_idx; i++) {
        TRY(wire_get_uint(&f[5].via.array.ptr[i], AE_SEGMENTS - 1, &v));
        a->idx[i] = (uint32_t)v;
    }
    if (f[6].type != MSGPACK_OBJECT_NIL) {
        TRY(wire_get_fixed_bin(&f[6], a->after, sizeof(a->after)));
        a->has_after = true;
    }
    TRY(open_rows(&f[7], AE_MAX_KEYS, sizeof(*a->keys), (void **)&a->keys,
                  &a->n_keys));
    for (size_t i = 0; i < a->n_keys; i++) {
        const msgpack_object *it;
        struct ae_key *k = &a->keys[i];
        TRY(open_row(&f[7], i, 4, &it));
        TRY(wire_get_fixed_bin(&it[0], k->lkey, sizeof(k->lkey)));
        TRY(wire_get_uint(&it[1], UINT64_MAX, &k->version));
        TRY(wire_get_fixed_bin(&it[2], k->origin, sizeof(k->origin)));
        TRY(get_bool(&it[3], &k->tombstone));
    }
    TRY(decode_records(&f[8], AE_MAX_RECORDS, lim, &a->recs, &a->n_recs));
    return get_bool(&f[9], &a->more);
}

static int decode_stream(const msgpack_object *f, const struct msg_limits *lim,
                         struct msg_stream *s)
{
    uint64_t v;
    TRY(wire_get_uint(&f[0], STREAM_HINTS, &v));
    if (v < STREAM_DIGEST)
        return KV_ERR_INVAL;
    s->op = (uint8_t)v;
    TRY(wire_get_int32(&f[1], &s->code));
    if (s->code > 0 || s->code <= KV_ERR__LAST)
        return KV_ERR_INVAL;
    TRY(wire_get_uint(&f[2], UINT64_MAX, &s->digest));
    TRY(wire_get_uint(&f[3], UINT64_MAX, &s->first));
    TRY(wire_get_uint(&f[4], UINT64_MAX, &s->last));
    if (f[5].type != MSGPACK_OBJECT_NIL) {
        TRY(wire_get_fixed_bin(&f[5], s->after, sizeof(s->after)));
        s->has_after = true;
    }
    TRY(wire_get_uint(&f[6], UINT32_MAX, &v));
    s->max_bytes = (uint32_t)v;
    TRY(wire_get_bin(&f[7], (size_t)STREAM_MAX_RECORDS * 16, &s->sums,
                     &s->sums_len));
    TRY(decode_records(&f[8], STREAM_MAX_RECORDS, lim, &s->recs, &s->n_recs));
    if (s->sums_len && s->sums_len != s->n_recs * 16)
        return KV_ERR_INVAL;
    TRY(get_bool(&f[9], &s->more));
    return wire_get_fixed_bin(&f[10], s->owner, sizeof(s->owner));
}

static int decode_repair_result(const msgpack_object *f,
                                struct msg_repair_result *r)
{
    uint64_t v;
    TRY(get_bool(&f[0], &r->final));
    TRY(wire_get_int32(&f[1], &r->code));
    if (r->code > 0 || r->code <= KV_ERR__LAST)
        return KV_ERR_INVAL;
    TRY(wire_get_str(&f[2], 1024, &r->text, &r->text_len));
    TRY(wire_get_uint(&f[3], UINT32_MAX, &v));
    r->done = (uint32_t)v;
    TRY(wire_get_uint(&f[4], UINT32_MAX, &v));
    r->total = (uint32_t)v;
    uint64_t *u[] = {&r->differing,  &r->pulled,         &r->pushed,
                     &r->bytes_sent, &r->bytes_received, &r->scrubbed,
                     &r->corrupt,    &r->scrub_repaired};
    for (size_t i = 0; i < sizeof(u) / sizeof(*u); i++)
        TRY(wire_get_uint(&f[5 + i], UINT64_MAX, u[i]));
    return 0;
}

static int get_int64(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        *v = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = o->via.i64;
    else
        return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? KV_ERR_INVAL
                                                          : KV_ERR_TYPE;
    return 0;
}

/* A peer address: a non-empty string without NUL that fits with its NUL. */
static int get_addr(const msgpack_object *o, char out[GOSSIP_ADDR_MAX])
{
    const char *p;
    size_t n;
    TRY(wire_get_str(o, GOSSIP_ADDR_MAX - 1, &p, &n));
    if (n == 0 || memchr(p, '\0', n))
        return KV_ERR_INVAL;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

static int decode_fault_rule(const msgpack_object *o, struct fault_rule *r)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    if (o->via.array.size != 9)
        return o->via.array.size < 9 ? KV_ERR_MISSING : KV_ERR_TRAILING;
    const msgpack_object *it = o->via.array.ptr;
    uint64_t v;
    memset(r, 0, sizeof(*r));
    TRY(get_addr(&it[0], r->peer));
    TRY(wire_get_uint(&it[1], FAULT_IN | FAULT_OUT, &v));
    r->dirs = (uint8_t)v;
    TRY(wire_get_uint(&it[2], FAULT_UDP | FAULT_TCP, &v));
    r->transports = (uint8_t)v;
    uint32_t *u[] = {&r->drop,    &r->dup,      &r->reorder,
                     &r->corrupt, &r->delay_ms, &r->jitter_ms};
    for (size_t i = 0; i < 6; i++) {
        TRY(wire_get_uint(&it[3 + i], UINT32_MAX, &v));
        *u[i] = (uint32_t)v;
    }
    return 0;
}

static int decode_peers(const msgpack_object *o,
                        char (**peers)[GOSSIP_ADDR_MAX], size_t *n)
{
    TRY(open_rows(o, FAULT_MAX_BLOCKED, GOSSIP_ADDR_MAX, (void **)peers, n));
    for (size_t i = 0; i < *n; i++)
        TRY(get_addr(&o->via.array.ptr[i], (*peers)[i]));
    return 0;
}

static int decode_fault(const msgpack_object *f, struct msg_fault *q)
{
    uint64_t v;
    TRY(wire_get_uint(&f[0], FAULT_OP_CLEAR, &v));
    q->op = (uint8_t)v;
    if (q->op == FAULT_OP_SET)
        TRY(decode_fault_rule(&f[1], &q->rule));
    else if (f[1].type != MSGPACK_OBJECT_NIL)
        return KV_ERR_TYPE;
    TRY(decode_peers(&f[2], &q->peers, &q->n_peers));
    return get_int64(&f[3], &q->offset_ms);
}

static int decode_fault_result(const msgpack_object *f,
                               struct msg_fault_result *r)
{
    TRY(wire_get_int32(&f[0], &r->code));
    if (r->code > 0 || r->code <= KV_ERR__LAST)
        return KV_ERR_INVAL;
    TRY(wire_get_str(&f[1], 1024, &r->text, &r->text_len));
    TRY(get_bool(&f[2], &r->enabled));
    TRY(get_int64(&f[3], &r->offset_ms));
    TRY(open_rows(&f[4], FAULT_MAX_RULES, sizeof(*r->rules), (void **)&r->rules,
                  &r->n_rules));
    for (size_t i = 0; i < r->n_rules; i++)
        TRY(decode_fault_rule(&f[4].via.array.ptr[i], &r->rules[i]));
    TRY(decode_peers(&f[5], &r->peers, &r->n_peers));
    const msgpack_object *c = &f[6];
    if (c->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    if (c->via.array.size != 6)
        return c->via.array.size < 6 ? KV_ERR_MISSING : KV_ERR_TRAILING;
    uint64_t *u[] = {&r->counters.dropped,   &r->counters.duplicated,
                     &r->counters.reordered, &r->counters.corrupted,
                     &r->counters.delayed,   &r->counters.blocked};
    for (size_t i = 0; i < 6; i++)
        TRY(wire_get_uint(&c->via.array.ptr[i], UINT64_MAX, u[i]));
    return 0;
}

static int decode_members(const msgpack_object *o, struct msg_members *ms)
{
    TRY(open_rows(o, GOSSIP_MAX_MEMBERS, sizeof(*ms->rows), (void **)&ms->rows,
                  &ms->n));
    for (size_t i = 0; i < ms->n; i++) {
        const msgpack_object *it;
        TRY(open_row(o, i, 2, &it));
        TRY(wire_decode_member(&it[0], &ms->rows[i].info));
        TRY(wire_get_uint(&it[1], UINT64_MAX, &ms->rows[i].rtt_ms));
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
    if (wire_get_uint(&a[1], UINT8_MAX, &v) != 0 || !msg_type_items((uint8_t)v))
        return a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER
                   ? KV_ERR_UNKNOWN_TYPE
                   : KV_ERR_TYPE;
    m->type = (uint8_t)v;
    TRY(wire_get_uint(&a[2], UINT64_MAX, &m->id));
    TRY(wire_get_uint(&a[3], UINT64_MAX, &m->hlc));
    size_t want = msg_type_items(m->type);
    if (n < want)
        return KV_ERR_MISSING;
    if (n > want)
        return KV_ERR_TRAILING;
    switch (m->type) {
    case MSG_PUT:
    case MSG_GET:
    case MSG_DEL:
        return decode_req(a + 4, m->type, lim, &m->u.req);
    case MSG_WHERE:
        TRY(wire_get_bin(&a[4], lim->max_key, &m->u.req.key,
                         &m->u.req.key_len));
        return m->u.req.key_len ? 0 : KV_ERR_INVAL;
    case MSG_STATUS:
    case MSG_MEMBERS:
    case MSG_RING:
        return 0;
    case MSG_REPLICA_READ:
    case MSG_REPLICA_WRITE:
    case MSG_REPLICA_ANSWER:
        return decode_replica(a + 4, m->type, lim, &m->u.replica);
    case MSG_RING_RESULT:
        return decode_ring(a + 4, &m->u.ring);
    case MSG_WHERE_RESULT:
        return decode_where(a + 4, &m->u.where);
    case MSG_MEMBERS_RESULT:
        return decode_members(a + 4, &m->u.members);
    case MSG_FAULT:
        return decode_fault(a + 4, &m->u.fault);
    case MSG_FAULT_RESULT:
        return decode_fault_result(a + 4, &m->u.fault_result);
    case MSG_RESULT:
        return decode_result(a + 4, lim, &m->u.result);
    case MSG_STATUS_RESULT:
        return decode_status(a + 4, &m->u.status);
    case MSG_AE:
    case MSG_AE_ANSWER:
        return decode_ae(a + 4, lim, &m->u.ae);
    case MSG_REPAIR: {
        int32_t r;
        TRY(wire_get_int32(&a[4], &r));
        if (r < -1 || r >= (int32_t)AE_RANGES)
            return KV_ERR_INVAL;
        m->u.repair.range = r;
        return get_bool(&a[5], &m->u.repair.scrub);
    }
    case MSG_REPAIR_RESULT:
        return decode_repair_result(a + 4, &m->u.repair_result);
    case MSG_ACCESS:
        TRY(wire_get_uint(&a[4], ACCESS_REMOVE, &v));
        if (v < ACCESS_LIST)
            return KV_ERR_INVAL;
        m->u.access.op = (uint8_t)v;
        return wire_get_str(&a[5], 1024, &m->u.access.arg,
                            &m->u.access.arg_len);
    case MSG_ACCESS_RESULT:
        TRY(wire_get_int32(&a[4], &m->u.access_result.code));
        TRY(wire_get_str(&a[5], ACCESS_TEXT_MAX, &m->u.access_result.text,
                         &m->u.access_result.text_len));
        return wire_get_uint(&a[6], UINT64_MAX, &m->u.access_result.version);
    case MSG_ACCESS_SET:
        TRY(wire_get_uint(&a[4], UINT64_MAX, &m->u.access_result.version));
        return wire_get_str(&a[5], ACCESS_TEXT_MAX, &m->u.access_result.text,
                            &m->u.access_result.text_len);
    case MSG_TOPO:
        TRY(wire_get_uint(&a[4], TOPO_REMOVENODE, &v));
        if (v < TOPO_DECOMMISSION)
            return KV_ERR_INVAL;
        m->u.topo.op = (uint8_t)v;
        TRY(get_bool(&a[5], &m->u.topo.force));
        return wire_get_fixed_bin(&a[6], m->u.topo.node,
                                  sizeof(m->u.topo.node));
    case MSG_STREAM:
    case MSG_STREAM_ANSWER:
        return decode_stream(a + 4, lim, &m->u.stream);
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
    /* The header in its one encoding (what every encoder writes), so that
     * what a node reads of it before decoding is what it decodes. */
    uint64_t id;
    if (rc == 0 && (msg_peek_type(buf, len) != (int)m->type ||
                    !msg_peek_id(buf, len, &id) || id != m->id))
        rc = KV_ERR_PROTO;
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
    switch (m->type) {
    case MSG_MEMBERS_RESULT:
        free(m->u.members.rows);
        m->u.members.rows = NULL;
        m->u.members.n = 0;
        break;
    case MSG_RING_RESULT:
        for (size_t i = 0; m->u.ring.rows && i < m->u.ring.n; i++)
            free(m->u.ring.rows[i].tokens);
        free(m->u.ring.rows);
        m->u.ring.rows = NULL;
        m->u.ring.n = 0;
        break;
    case MSG_WHERE_RESULT:
        free(m->u.where.rows);
        m->u.where.rows = NULL;
        m->u.where.n = 0;
        break;
    case MSG_FAULT:
        free(m->u.fault.peers);
        m->u.fault.peers = NULL;
        m->u.fault.n_peers = 0;
        break;
    case MSG_FAULT_RESULT:
        free(m->u.fault_result.rules);
        free(m->u.fault_result.peers);
        m->u.fault_result.rules = NULL;
        m->u.fault_result.peers = NULL;
        m->u.fault_result.n_rules = m->u.fault_result.n_peers = 0;
        break;
    case MSG_AE:
    case MSG_AE_ANSWER:
        free(m->u.ae.idx);
        free(m->u.ae.keys);
        free(m->u.ae.recs);
        m->u.ae.idx = NULL;
        m->u.ae.keys = NULL;
        m->u.ae.recs = NULL;
        m->u.ae.n_idx = m->u.ae.n_keys = m->u.ae.n_recs = 0;
        break;
    case MSG_STREAM:
    case MSG_STREAM_ANSWER:
        free(m->u.stream.recs);
        m->u.stream.recs = NULL;
        m->u.stream.n_recs = 0;
        break;
    case MSG_STATUS_RESULT:
        free(m->u.status.hint_rows);
        m->u.status.hint_rows = NULL;
        m->u.status.n_hint_rows = 0;
        free(m->u.status.counters);
        m->u.status.counters = NULL;
        m->u.status.n_counters = 0;
        break;
    }
}

uint64_t msg_status_counter(const struct msg_status *s, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < s->n_counters; i++)
        if (s->counters[i].name_len == n &&
            memcmp(s->counters[i].name, name, n) == 0)
            return s->counters[i].value;
    return 0;
}
