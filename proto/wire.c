/* msgpack helpers shared by proto/'s decoders and encoders.
 *
 * msg_scan() walks raw bytes once and checks that the input is exactly one
 * well-formed msgpack item, nested at most MAX_DEPTH deep, in which no array,
 * map, string or binary claims more elements or bytes than remain.
 * msgpack-c's unpacker allocates an array's element table from the count in
 * its header before reading any element, so without this step a 5-byte
 * header could ask for gigabytes (STYLE rule 5). The getters check one
 * field's type and range each. */
#include "wire.h"

#include "proto.h"

#include "../common/common.h"

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

int msg_scan(const uint8_t *p, size_t len)
{
    size_t used;
    int rc = scan_item(p, len, &used, 0);
    if (rc)
        return rc;
    return used == len ? 0 : KV_ERR_TRAILING;
}

int wire_unpack(const uint8_t *buf, size_t len, msgpack_unpacked *und)
{
    int rc = msg_scan(buf, len);
    if (rc)
        return rc;
    size_t off = 0;
    switch (msgpack_unpack_next(und, (const char *)buf, len, &off)) {
    case MSGPACK_UNPACK_SUCCESS:
        return off == len ? 0 : KV_ERR_TRAILING;
    case MSGPACK_UNPACK_CONTINUE:
        return KV_ERR_TRUNCATED;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        return KV_ERR_NOMEM;
    default:
        return KV_ERR_TYPE;
    }
}

int wire_pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    if (msgpack_pack_bin(pk, n))
        return -1;
    return n ? msgpack_pack_bin_body(pk, p, n) : 0;
}

int wire_pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    if (msgpack_pack_str(pk, n))
        return -1;
    return n ? msgpack_pack_str_body(pk, s, n) : 0;
}

int wire_get_uint(const msgpack_object *o, uint64_t max, uint64_t *v)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return KV_ERR_TYPE;
    if (o->via.u64 > max)
        return KV_ERR_INVAL;
    *v = o->via.u64;
    return 0;
}

int wire_get_int32(const msgpack_object *o, int32_t *v)
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

int wire_get_bin(const msgpack_object *o, size_t max, const uint8_t **p,
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

int wire_get_str(const msgpack_object *o, size_t max, const char **p, size_t *n)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return KV_ERR_TYPE;
    if (o->via.str.size > max)
        return KV_ERR_TOO_LARGE;
    *p = o->via.str.ptr;
    *n = o->via.str.size;
    return 0;
}

int wire_get_fixed_bin(const msgpack_object *o, uint8_t *out, size_t n)
{
    const uint8_t *p;
    size_t len;
    int rc = wire_get_bin(o, n, &p, &len);
    if (rc)
        return rc;
    if (len != n)
        return KV_ERR_INVAL;
    memcpy(out, p, n);
    return 0;
}

int wire_open_message(const msgpack_object *o, const msgpack_object **items,
                      size_t *n)
{
    uint64_t v;
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    *items = o->via.array.ptr;
    *n = o->via.array.size;
    if (*n < 2)
        return KV_ERR_MISSING;
    TRY(wire_get_uint(&(*items)[0], UINT8_MAX, &v));
    return v == PROTO_VERSION ? 0 : KV_ERR_VERSION;
}
