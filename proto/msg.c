/* Wire messages: msgpack arrays [version, type, id, hlc, fields...].
 *
 * Encoding uses msgpack-c's packer. Decoding runs in two steps:
 *  1. msg_scan() walks the raw bytes once and checks that the input is exactly
 *     one well-formed msgpack item, nested at most MAX_DEPTH deep, in which no
 *     array, map, string or binary claims more elements or bytes than remain.
 *     msgpack-c's unpacker allocates an array's element table from the count
 *     in its header before reading any element, so without this step a 5-byte
 *     header could ask for gigabytes (STYLE rule 5).
 *  2. msgpack_unpack_next() builds the object tree (zero-copy: strings and
 *     binaries point into the input), and each type's decoder checks every
 *     field's type and range. */
#include "proto.h"

#include "../common/common.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* Messages are flat arrays; nothing legitimate nests deeper than this. */
#define MAX_DEPTH 4

/* Checks one item at p; on success *used is its length. */
static int scan_item(const uint8_t *p, size_t len, size_t *used, int depth)
{
    if (len == 0)
        return KV_ERR_TRUNCATED;
    uint8_t b = p[0];
    size_t hdr = 1, body = 0, items = 0;
    bool container = false;

    if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3 && b != 0xc1)) {
        /* fixint, nil, bool: the tag is everything */
    } else if (b >= 0x80 && b <= 0x8f) {
        items = 2u * (b & 0x0f);
        container = true;
    } else if (b >= 0x90 && b <= 0x9f) {
        items = b & 0x0f;
        container = true;
    } else if (b >= 0xa0 && b <= 0xbf) {
        body = b & 0x1f;
    } else {
        /* size of the length field (n) and fixed payload (fix) per tag */
        size_t n = 0, fix = 0;
        int kind = 0; /* 0 fixed payload, 1 bytes, 2 array, 3 map, 4 ext */
        switch (b) {
        case 0xc4:
        case 0xd9:
            n = 1;
            kind = 1;
            break;
        case 0xc5:
        case 0xda:
            n = 2;
            kind = 1;
            break;
        case 0xc6:
        case 0xdb:
            n = 4;
            kind = 1;
            break;
        case 0xc7:
            n = 1;
            kind = 4;
            break;
        case 0xc8:
            n = 2;
            kind = 4;
            break;
        case 0xc9:
            n = 4;
            kind = 4;
            break;
        case 0xca:
            fix = 4;
            break;
        case 0xcb:
            fix = 8;
            break;
        case 0xcc:
        case 0xd0:
            fix = 1;
            break;
        case 0xcd:
        case 0xd1:
            fix = 2;
            break;
        case 0xce:
        case 0xd2:
            fix = 4;
            break;
        case 0xcf:
        case 0xd3:
            fix = 8;
            break;
        case 0xd4:
            fix = 2;
            break;
        case 0xd5:
            fix = 3;
            break;
        case 0xd6:
            fix = 5;
            break;
        case 0xd7:
            fix = 9;
            break;
        case 0xd8:
            fix = 17;
            break;
        case 0xdc:
            n = 2;
            kind = 2;
            break;
        case 0xdd:
            n = 4;
            kind = 2;
            break;
        case 0xde:
            n = 2;
            kind = 3;
            break;
        case 0xdf:
            n = 4;
            kind = 3;
            break;
        default:
            return KV_ERR_TYPE; /* 0xc1 is never used */
        }
        if (len < 1 + n)
            return KV_ERR_TRUNCATED;
        uint64_t count = 0;
        for (size_t i = 0; i < n; i++)
            count = (count << 8) | p[1 + i];
        hdr = 1 + n;
        switch (kind) {
        case 0:
            body = fix;
            break;
        case 1:
            body = count;
            break;
        case 2:
            items = count;
            container = true;
            break;
        case 3:
            items = 2 * count;
            container = true;
            break;
        case 4:
            body = count + 1;
            break; /* ext: type byte + data */
        }
    }
    if (hdr > len || body > len - hdr)
        return KV_ERR_TRUNCATED;
    size_t off = hdr + body;
    if (container) {
        if (depth >= MAX_DEPTH)
            return KV_ERR_TYPE;
        /* Each element takes at least one byte. */
        if (items > len - off)
            return KV_ERR_TRUNCATED;
        for (size_t i = 0; i < items; i++) {
            size_t u;
            int rc = scan_item(p + off, len - off, &u, depth + 1);
            if (rc)
                return rc;
            off += u;
        }
    }
    *used = off;
    return 0;
}

static int msg_scan(const uint8_t *p, size_t len)
{
    size_t used;
    int rc = scan_item(p, len, &used, 0);
    if (rc)
        return rc;
    return used == len ? 0 : KV_ERR_TRAILING;
}

/* ---- encoding ---- */

static int pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    if (msgpack_pack_bin(pk, n))
        return -1;
    return n ? msgpack_pack_bin_body(pk, p, n) : 0;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    if (msgpack_pack_str(pk, n))
        return -1;
    return n ? msgpack_pack_str_body(pk, s, n) : 0;
}

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
        return 4;
    case MSG_RESULT:
        return 8;
    case MSG_STATUS_RESULT:
        return 16;
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
        e |= pack_bin(&pk, q->key, q->key_len);
        if (m->type == MSG_PUT)
            e |= pack_bin(&pk, q->value, q->value_len);
        e |= msgpack_pack_uint8(&pk, q->consistency);
        e |= msgpack_pack_uint32(&pk, q->timeout_ms);
        break;
    case MSG_STATUS:
        break;
    case MSG_RESULT:
        e |= msgpack_pack_int32(&pk, r->code);
        e |= msgpack_pack_uint64(&pk, r->version);
        e |= r->has_value ? pack_bin(&pk, r->value, r->value_len)
                          : msgpack_pack_nil(&pk);
        e |= pack_str(&pk, r->text, r->text_len);
        break;
    case MSG_STATUS_RESULT:
        e |= pack_bin(&pk, s->node_id, sizeof(s->node_id));
        e |= pack_str(&pk, s->listen, s->listen_len);
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
        break;
    case MSG_WELCOME:
        e |= pack_bin(&pk, w->node_id, sizeof(w->node_id));
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

static int get_uint(const msgpack_object *o, uint64_t max, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return KV_ERR_TYPE;
    if (o->via.u64 > max)
        return KV_ERR_INVAL;
    *v = o->via.u64;
    return 0;
}

static int get_int32(const msgpack_object *o, int32_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT32_MAX)
        *v = (int32_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
             o->via.i64 >= INT32_MIN)
        *v = (int32_t)o->via.i64;
    else
        return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                       o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER
                   ? KV_ERR_INVAL
                   : KV_ERR_TYPE;
    return 0;
}

static int get_bin(const msgpack_object *o, size_t max, const uint8_t **p,
                   size_t *n)
{
    if (o->type != MSGPACK_OBJECT_BIN)
        return KV_ERR_TYPE;
    if (o->via.bin.size > max)
        return KV_ERR_TOO_LARGE;
    *p = (const uint8_t *)o->via.bin.ptr;
    *n = o->via.bin.size;
    return 0;
}

static int get_str(const msgpack_object *o, size_t max, const char **p,
                   size_t *n)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return KV_ERR_TYPE;
    if (o->via.str.size > max)
        return KV_ERR_TOO_LARGE;
    *p = o->via.str.ptr;
    *n = o->via.str.size;
    return 0;
}

static int get_fixed_bin(const msgpack_object *o, uint8_t *out, size_t n)
{
    const uint8_t *p;
    size_t len;
    int rc = get_bin(o, n, &p, &len);
    if (rc)
        return rc;
    if (len != n)
        return KV_ERR_INVAL;
    memcpy(out, p, n);
    return 0;
}

#define TRY(x)                                                                 \
    do {                                                                       \
        int rc_ = (x);                                                         \
        if (rc_)                                                               \
            return rc_;                                                        \
    } while (0)

static int decode_req(const msgpack_object *f, uint8_t type,
                      const struct msg_limits *lim, struct msg_req *q)
{
    uint64_t v;
    memset(q, 0, sizeof(*q));
    TRY(get_bin(&f[0], lim->max_key, &q->key, &q->key_len));
    if (q->key_len == 0)
        return KV_ERR_INVAL;
    size_t i = 1;
    if (type == MSG_PUT)
        TRY(get_bin(&f[i++], lim->max_value, &q->value, &q->value_len));
    TRY(get_uint(&f[i++], CONS_ALL, &v));
    if (v < CONS_ONE)
        return KV_ERR_INVAL;
    q->consistency = (uint8_t)v;
    TRY(get_uint(&f[i], UINT32_MAX, &v));
    q->timeout_ms = (uint32_t)v;
    return 0;
}

static int decode_result(const msgpack_object *f, const struct msg_limits *lim,
                         struct msg_result *r)
{
    memset(r, 0, sizeof(*r));
    TRY(get_int32(&f[0], &r->code));
    if (r->code > 0 || r->code <= KV_ERR__LAST)
        return KV_ERR_INVAL;
    TRY(get_uint(&f[1], UINT64_MAX, &r->version));
    if (f[2].type != MSGPACK_OBJECT_NIL) {
        TRY(get_bin(&f[2], lim->max_value, &r->value, &r->value_len));
        r->has_value = true;
    }
    TRY(get_str(&f[3], 1024, &r->text, &r->text_len));
    return 0;
}

static int decode_status(const msgpack_object *f, struct msg_status *s)
{
    memset(s, 0, sizeof(*s));
    TRY(get_fixed_bin(&f[0], s->node_id, sizeof(s->node_id)));
    TRY(get_str(&f[1], 256, &s->listen, &s->listen_len));
    uint64_t *fields[] = {
        &s->uptime_s, &s->keys, &s->map_used, &s->map_size, &s->connections,
        &s->puts,     &s->gets, &s->dels,     &s->errors,   &s->write_batches};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        TRY(get_uint(&f[2 + i], UINT64_MAX, fields[i]));
    return 0;
}

static int decode_welcome(const msgpack_object *f, struct msg_welcome *w)
{
    uint64_t v;
    TRY(get_fixed_bin(&f[0], w->node_id, sizeof(w->node_id)));
    TRY(get_uint(&f[1], UINT32_MAX, &v));
    w->max_key = (uint32_t)v;
    TRY(get_uint(&f[2], UINT32_MAX, &v));
    w->max_value = (uint32_t)v;
    return 0;
}

static int decode_fields(const msgpack_object *o, const struct msg_limits *lim,
                         struct msg *m)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    const msgpack_object *a = o->via.array.ptr;
    size_t n = o->via.array.size;
    uint64_t v;
    if (n < 4)
        return KV_ERR_MISSING;
    TRY(get_uint(&a[0], UINT8_MAX, &v));
    if (v != PROTO_VERSION)
        return KV_ERR_VERSION;
    if (get_uint(&a[1], UINT8_MAX, &v) != 0 || !type_items((uint8_t)v))
        return a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER
                   ? KV_ERR_UNKNOWN_TYPE
                   : KV_ERR_TYPE;
    m->type = (uint8_t)v;
    TRY(get_uint(&a[2], UINT64_MAX, &m->id));
    TRY(get_uint(&a[3], UINT64_MAX, &m->hlc));
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
        return 0;
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
    TRY(msg_scan(buf, len));
    msgpack_unpacked und;
    msgpack_unpacked_init(&und);
    size_t off = 0;
    int rc;
    switch (msgpack_unpack_next(&und, (const char *)buf, len, &off)) {
    case MSGPACK_UNPACK_SUCCESS:
        rc = off == len ? decode_fields(&und.data, lim, m) : KV_ERR_TRAILING;
        break;
    case MSGPACK_UNPACK_CONTINUE:
        rc = KV_ERR_TRUNCATED;
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        rc = KV_ERR_NOMEM;
        break;
    default:
        rc = KV_ERR_TYPE;
        break;
    }
    /* Decoded pointers refer to buf, never to the zone, so it can go now. */
    msgpack_unpacked_destroy(&und);
    if (rc)
        memset(m, 0, sizeof(*m));
    return rc;
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
