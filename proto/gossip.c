/* Gossip messages (DESIGN §7): msgpack arrays
 *   [version, type, seq, from, target, target_addr, [member...], flags]
 * with each member
 *   [id, pubkey, addr, region, zone, incarnation, status, version,
 *    suspecter, ring phase, replicas].
 * UDP carries pings, acks, ping-reqs and nacks with a few piggybacked
 * updates; a push-pull over TCP carries the full state in the same shape.
 * flags came last and may be absent (a sender without them sets none). */
#include "proto.h"
#include "wire.h"

#include "../common/common.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#define GOSSIP_ITEMS 8
#define MEMBER_ITEMS 11

int wire_pack_member(msgpack_packer *pk, const struct wire_member *m)
{
    int e = msgpack_pack_array(pk, MEMBER_ITEMS);
    e |= wire_pack_bin(pk, m->id, sizeof(m->id));
    e |= wire_pack_bin(pk, m->pubkey, sizeof(m->pubkey));
    e |= wire_pack_str(pk, m->addr, strnlen(m->addr, sizeof(m->addr) - 1));
    e |=
        wire_pack_str(pk, m->region, strnlen(m->region, sizeof(m->region) - 1));
    e |= wire_pack_str(pk, m->zone, strnlen(m->zone, sizeof(m->zone) - 1));
    e |= msgpack_pack_uint64(pk, m->incarnation);
    e |= msgpack_pack_uint8(pk, m->status);
    e |= msgpack_pack_uint8(pk, m->version);
    e |= wire_pack_bin(pk, m->suspecter, sizeof(m->suspecter));
    e |= msgpack_pack_uint8(pk, m->ring);
    e |= wire_pack_str(pk, m->replicas,
                       strnlen(m->replicas, sizeof(m->replicas) - 1));
    return e;
}

static int encode_n(const struct gossip_msg *g, size_t n, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int e = msgpack_pack_array(&pk, GOSSIP_ITEMS);
    e |= msgpack_pack_uint8(&pk, PROTO_VERSION);
    e |= msgpack_pack_uint8(&pk, g->type);
    e |= msgpack_pack_uint32(&pk, g->seq);
    e |= wire_pack_bin(&pk, g->from, sizeof(g->from));
    e |= wire_pack_bin(&pk, g->target, sizeof(g->target));
    e |= wire_pack_str(&pk, g->target_addr,
                       strnlen(g->target_addr, sizeof(g->target_addr) - 1));
    e |= msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n && !e; i++)
        e |= wire_pack_member(&pk, &g->members[i]);
    e |= msgpack_pack_uint8(&pk, g->flags);
    return e ? KV_ERR_NOMEM : 0;
}

int gossip_encode(const struct gossip_msg *g, size_t max_len, uint8_t **out,
                  size_t *out_len, size_t *n_encoded)
{
    size_t n = g->n_members;
    for (;;) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        int rc = encode_n(g, n, &sb);
        if (rc == 0 && sb.size <= max_len) {
            *out_len = sb.size;
            *out = (uint8_t *)msgpack_sbuffer_release(&sb);
            *n_encoded = n;
            return 0;
        }
        msgpack_sbuffer_destroy(&sb);
        if (rc)
            return rc;
        if (n == 0)
            return KV_ERR_TOO_LARGE;
        /* Each member takes at least ~80 bytes: drop what cannot fit. */
        n = n > 8 ? n - n / 4 : n - 1;
    }
}

/* Copies a string field into a fixed buffer; refuses NULs inside. */
static int get_cstr(const msgpack_object *o, char *out, size_t cap)
{
    const char *p;
    size_t n;
    TRY(wire_get_str(o, cap - 1, &p, &n));
    if (memchr(p, '\0', n))
        return KV_ERR_INVAL;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

int wire_decode_member(const msgpack_object *o, struct wire_member *m)
{
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    if (o->via.array.size < MEMBER_ITEMS)
        return KV_ERR_MISSING;
    if (o->via.array.size > MEMBER_ITEMS)
        return KV_ERR_TRAILING;
    const msgpack_object *f = o->via.array.ptr;
    uint64_t v;
    memset(m, 0, sizeof(*m));
    TRY(wire_get_fixed_bin(&f[0], m->id, sizeof(m->id)));
    TRY(wire_get_fixed_bin(&f[1], m->pubkey, sizeof(m->pubkey)));
    TRY(get_cstr(&f[2], m->addr, sizeof(m->addr)));
    TRY(get_cstr(&f[3], m->region, sizeof(m->region)));
    TRY(get_cstr(&f[4], m->zone, sizeof(m->zone)));
    TRY(wire_get_uint(&f[5], UINT64_MAX, &m->incarnation));
    TRY(wire_get_uint(&f[6], MEMBER_LEFT, &v));
    m->status = (uint8_t)v;
    TRY(wire_get_uint(&f[7], UINT8_MAX, &v));
    m->version = (uint8_t)v;
    TRY(wire_get_fixed_bin(&f[8], m->suspecter, sizeof(m->suspecter)));
    TRY(wire_get_uint(&f[9], RING_PHASE_MAX, &v));
    m->ring = (uint8_t)v;
    TRY(get_cstr(&f[10], m->replicas, sizeof(m->replicas)));
    return 0;
}

static int decode_fields(const msgpack_object *o, struct gossip_msg *g)
{
    const msgpack_object *a;
    size_t n;
    uint64_t v;
    TRY(wire_open_message(o, &a, &n));
    TRY(wire_get_uint(&a[1], UINT8_MAX, &v));
    if (v < GOSSIP_PING || v > GOSSIP_SYNC_REPLY)
        return KV_ERR_UNKNOWN_TYPE;
    g->type = (uint8_t)v;
    if (n < GOSSIP_ITEMS - 1)
        return KV_ERR_MISSING;
    if (n > GOSSIP_ITEMS)
        return KV_ERR_TRAILING;
    TRY(wire_get_uint(&a[2], UINT32_MAX, &v));
    g->seq = (uint32_t)v;
    TRY(wire_get_fixed_bin(&a[3], g->from, sizeof(g->from)));
    TRY(wire_get_fixed_bin(&a[4], g->target, sizeof(g->target)));
    TRY(get_cstr(&a[5], g->target_addr, sizeof(g->target_addr)));
    if (a[6].type != MSGPACK_OBJECT_ARRAY)
        return KV_ERR_TYPE;
    size_t count = a[6].via.array.size;
    if (count > GOSSIP_MAX_MEMBERS)
        return KV_ERR_TOO_LARGE;
    if (count) {
        /* Bounded twice: by GOSSIP_MAX_MEMBERS and, through msg_scan, by the
         * bytes of the input. */
        g->members = calloc(count, sizeof(*g->members));
        if (!g->members)
            return KV_ERR_NOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        TRY(wire_decode_member(&a[6].via.array.ptr[i], &g->members[i]));
        g->n_members = i + 1;
    }
    if (n == GOSSIP_ITEMS) {
        TRY(wire_get_uint(&a[7], UINT8_MAX, &v));
        g->flags = (uint8_t)v;
    }
    return 0;
}

int gossip_decode(const uint8_t *buf, size_t len, struct gossip_msg *g)
{
    memset(g, 0, sizeof(*g));
    msgpack_unpacked und;
    msgpack_unpacked_init(&und);
    int rc = wire_unpack(buf, len, &und);
    if (rc == 0)
        rc = decode_fields(&und.data, g);
    msgpack_unpacked_destroy(&und);
    if (rc)
        gossip_msg_free(g);
    return rc;
}

void gossip_msg_free(struct gossip_msg *g)
{
    free(g->members);
    g->members = NULL;
    g->n_members = 0;
}

const char *ring_phase_name(int phase)
{
    static const char *const names[] = {"normal", "waiting", "joining",
                                        "joined", "leaving", "left"};
    return phase >= 0 && phase <= RING_PHASE_MAX ? names[phase] : NULL;
}
