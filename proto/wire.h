/* Private to proto/: the msgpack helpers that every decoder and encoder here
 * shares (wire.c). */
#ifndef ESSAIM_PROTO_WIRE_H
#define ESSAIM_PROTO_WIRE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* Checks that p holds exactly one well-formed msgpack item whose counts are
 * all bounded by the bytes that remain and that nests at most 4 deep.
 * @retval 0 Success, or KV_ERR_TRUNCATED, KV_ERR_TRAILING, KV_ERR_TYPE. */
int msg_scan(const uint8_t *p, size_t len);

/* msg_scan, then msgpack_unpack_next into und (initialised by the caller,
 * destroyed by the caller whatever this returns).
 * @retval 0 Success, or the errors of msg_scan, or KV_ERR_NOMEM. */
int wire_unpack(const uint8_t *buf, size_t len, msgpack_unpacked *und);

/* Pack a bin or str header and body; return msgpack's 0 or -1. */
int wire_pack_bin(msgpack_packer *pk, const void *p, size_t n);
int wire_pack_str(msgpack_packer *pk, const char *s, size_t n);

/* Field readers: each checks the type (KV_ERR_TYPE) and the range or length
 * (KV_ERR_INVAL, KV_ERR_TOO_LARGE). Pointers point into the input. */
int wire_get_uint(const msgpack_object *o, uint64_t max, uint64_t *v);
int wire_get_int32(const msgpack_object *o, int32_t *v);
int wire_get_bin(const msgpack_object *o, size_t max, const uint8_t **p,
                 size_t *n);
int wire_get_str(const msgpack_object *o, size_t max, const char **p,
                 size_t *n);
/* Opens a message: o must be an array of at least two items whose first is
 * PROTO_VERSION; *items and *n are its items.
 * @retval 0 Success. @retval KV_ERR_TYPE, KV_ERR_MISSING, KV_ERR_VERSION. */
int wire_open_message(const msgpack_object *o, const msgpack_object **items,
                      size_t *n);

/* A bin of exactly n bytes, copied to out. */
int wire_get_fixed_bin(const msgpack_object *o, uint8_t *out, size_t n);

/* Array items of each message type, header included; 0 for a type that
 * does not exist (msg.c). */
size_t msg_type_items(uint8_t type);

struct wire_member;

/* A member record as gossip and kvcli members carry it (gossip.c). */
int wire_pack_member(msgpack_packer *pk, const struct wire_member *m);
int wire_decode_member(const msgpack_object *o, struct wire_member *m);

/* Returns from the calling function when x fails. */
#define TRY(x)                                                                 \
    do {                                                                       \
        int rc_ = (x);                                                         \
        if (rc_)                                                               \
            return rc_;                                                        \
    } while (0)

#endif
