/* The secure channel: Noise handshake, then transport messages, over a byte
 * stream, without touching a socket (DESIGN §3, §8).
 *
 * Every frame is a 4-byte big-endian length and that many bytes; the length is
 * checked against NOISE_MAX_MESSAGE before anything is read into memory. The
 * frame buffer is allocated once at that size, so a hostile length prefix
 * (even 4 GiB) costs nothing but a closed connection.
 *
 * An application message longer than one Noise message is cut into chunks;
 * each transport plaintext is one flag byte (CHUNK_MORE or CHUNK_LAST) and up
 * to CHUNK_DATA bytes. The reassembly buffer grows only up to max_msg.
 *
 * Nothing is spent before the other end sends (security review H2): a
 * responder builds its handshakes when the first message arrives, and every
 * buffer grows to what it holds; chan_trim gives back what an idle channel
 * does not use. */
#include "proto.h"

#include "../common/common.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define FRAME_HDR 4
#define CHUNK_LAST 0x00
#define CHUNK_MORE 0x01
#define CHUNK_DATA (NOISE_MAX_MESSAGE - NOISE_TAG_BYTES - 1)
/* Handshake payloads are empty today; accept small ones for later use. */
#define HS_PAYLOAD_MAX 1024
/* The largest handshake message: e, encrypted s and payload (XXpsk3). */
#define HS_MSG_MAX                                                             \
    (NOISE_DH_BYTES + NOISE_DH_BYTES + 2 * NOISE_TAG_BYTES + HS_PAYLOAD_MAX)

struct chan {
    enum noise_role role;
    struct noise_hs *hs; /* NULL once established */
    /* A responder keeps the kinds it accepts until the first message says
     * which one the initiator speaks (the secrets are the caller's, alive
     * as long as the channel). */
    struct chan_kind kinds[CHAN_MAX_KINDS];
    size_t n_kinds;
    const uint8_t *static_priv;
    int kind;
    struct noise_cipher tx, rx;
    uint8_t remote_static[CRYPTO_KEY_BYTES];
    size_t max_msg;

    /* input: the frame being read */
    uint8_t hdr[FRAME_HDR];
    size_t hdr_have;
    uint8_t *frame; /* frame_cap bytes, up to NOISE_MAX_MESSAGE */
    size_t frame_cap, frame_len, frame_have;

    /* input: the application message being reassembled */
    uint8_t *msg;
    size_t msg_len, msg_cap;
    bool msg_ready;

    /* output: bytes not yet written to the socket, from out_off */
    uint8_t *out;
    size_t out_off, out_len, out_cap;
};

/* Grows *buf (capacity *cap) to hold at least need bytes, doubling. */
static int buf_grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*buf, n);
    if (!p)
        return KV_ERR_NOMEM;
    *buf = p;
    *cap = n;
    return 0;
}

/* buf_grow for plaintext: the old block is wiped, not left to the heap
 * (security review L3). */
static int buf_grow_wiped(uint8_t **buf, size_t *cap, size_t used, size_t need)
{
    if (need <= *cap)
        return 0;
    uint8_t *old = *buf;
    size_t old_cap = *cap;
    *buf = NULL;
    *cap = 0;
    int rc = buf_grow(buf, cap, need);
    if (rc) {
        *buf = old;
        *cap = old_cap;
        return rc;
    }
    if (old) {
        memcpy(*buf, old, used);
        sodium_memzero(old, old_cap);
        free(old);
    }
    return 0;
}

static int out_reserve(struct chan *c, size_t n)
{
    if (c->out_off > 0 && c->out_len + n > c->out_cap) {
        /* compact before growing */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    return buf_grow(&c->out, &c->out_cap, c->out_len + n);
}

static int write_handshake(struct chan *c)
{
    int rc = out_reserve(c, FRAME_HDR + HS_MSG_MAX);
    if (rc)
        return rc;
    size_t n;
    uint8_t *p = c->out + c->out_len;
    rc = noise_hs_write(c->hs, NULL, 0, p + FRAME_HDR, HS_MSG_MAX, &n);
    if (rc)
        return rc;
    be32_put(p, (uint32_t)n);
    c->out_len += FRAME_HDR + n;
    return 0;
}

static int finish_handshake(struct chan *c)
{
    int rc = noise_hs_split(c->hs, &c->tx, &c->rx, c->remote_static);
    noise_hs_free(c->hs);
    c->hs = NULL;
    return rc;
}

int chan_new(struct chan **out, enum noise_role role, const char *prologue,
             const uint8_t psk[CRYPTO_KEY_BYTES],
             const uint8_t static_priv[CRYPTO_KEY_BYTES], size_t max_msg)
{
    struct chan *c = calloc(1, sizeof(*c));
    if (!c)
        return KV_ERR_NOMEM;
    c->role = role;
    c->max_msg = max_msg;
    c->kind = role == NOISE_INITIATOR ? 0 : -1;
    c->hs = noise_hs_new(role, (const uint8_t *)prologue, strlen(prologue), psk,
                         static_priv);
    int rc = c->hs ? 0 : KV_ERR_NOMEM;
    if (rc == 0 && role == NOISE_INITIATOR)
        rc = write_handshake(c);
    if (rc) {
        chan_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int chan_new_responder(struct chan **out, const struct chan_kind *kinds,
                       size_t n, const uint8_t static_priv[CRYPTO_KEY_BYTES],
                       size_t max_msg)
{
    if (n == 0 || n > CHAN_MAX_KINDS)
        return KV_ERR_INVAL;
    struct chan *c = calloc(1, sizeof(*c));
    if (!c)
        return KV_ERR_NOMEM;
    c->role = NOISE_RESPONDER;
    c->max_msg = max_msg;
    c->kind = -1;
    memcpy(c->kinds, kinds, n * sizeof(*kinds));
    c->n_kinds = n;
    c->static_priv = static_priv;
    *out = c;
    return 0;
}

int chan_kind(const struct chan *c)
{
    return c->kind;
}

void chan_free(struct chan *c)
{
    if (!c)
        return;
    noise_hs_free(c->hs);
    noise_cipher_wipe(&c->tx);
    noise_cipher_wipe(&c->rx);
    if (c->frame)
        sodium_memzero(c->frame, c->frame_cap);
    if (c->msg)
        sodium_memzero(c->msg, c->msg_cap);
    free(c->frame);
    free(c->msg);
    free(c->out);
    free(c);
}

/* The first message to a responder: read it under each kind it accepts and
 * keep the handshake that authenticates it (reading leaves the frame as it
 * was, so each kind sees the same bytes). */
static int pick_kind(struct chan *c, uint8_t *payload, size_t cap, size_t *plen)
{
    int rc = KV_ERR_AUTH;
    for (size_t i = 0; i < c->n_kinds && !c->hs; i++) {
        const struct chan_kind *k = &c->kinds[i];
        struct noise_hs *hs =
            noise_hs_new(NOISE_RESPONDER, (const uint8_t *)k->prologue,
                         strlen(k->prologue), k->psk, c->static_priv);
        if (!hs) {
            rc = KV_ERR_NOMEM;
            break;
        }
        if (k->alt_psk)
            noise_hs_accept_psk(hs, k->alt_psk);
        rc = noise_hs_read(hs, c->frame, c->frame_len, payload, cap, plen);
        if (rc) {
            noise_hs_free(hs);
            continue;
        }
        c->hs = hs;
        c->kind = (int)i;
        if (k->max_msg)
            c->max_msg = k->max_msg;
    }
    c->n_kinds = 0;
    return c->hs ? 0 : rc;
}

/* A complete handshake frame is in c->frame. */
static int on_handshake_frame(struct chan *c)
{
    uint8_t payload[HS_PAYLOAD_MAX];
    size_t plen;
    int rc;
    if (c->n_kinds)
        rc = pick_kind(c, payload, sizeof(payload), &plen);
    else
        rc = noise_hs_read(c->hs, c->frame, c->frame_len, payload,
                           sizeof(payload), &plen);
    if (rc)
        return rc;
    if (c->kind < 0)
        c->kind = 0;
    if (noise_hs_wants_write(c->hs) && (rc = write_handshake(c)))
        return rc;
    if (noise_hs_done(c->hs))
        return finish_handshake(c);
    return 0;
}

/* A complete transport frame is in c->frame: decrypt in place, append. */
static int on_transport_frame(struct chan *c)
{
    if (c->frame_len < NOISE_TAG_BYTES + 1)
        return KV_ERR_PROTO;
    int rc = noise_cipher_decrypt(&c->rx, c->frame, c->frame_len, c->frame);
    if (rc)
        return rc;
    size_t n = c->frame_len - NOISE_TAG_BYTES - 1;
    uint8_t flag = c->frame[0];
    if (flag != CHUNK_LAST && flag != CHUNK_MORE)
        return KV_ERR_PROTO;
    if (n > c->max_msg - c->msg_len)
        return KV_ERR_TOO_LARGE;
    if ((rc = buf_grow_wiped(&c->msg, &c->msg_cap, c->msg_len, c->msg_len + n)))
        return rc;
    if (n) {
        memcpy(c->msg + c->msg_len, c->frame + 1, n);
        c->msg_len += n;
    }
    if (flag == CHUNK_LAST)
        c->msg_ready = true;
    return 0;
}

int chan_input(struct chan *c, const uint8_t *data, size_t len, size_t *used)
{
    size_t off = 0;
    int rc = 0;
    if (c->msg_ready) { /* the caller did not take the last message */
        c->msg_ready = false;
        c->msg_len = 0;
    }
    while (off < len && !c->msg_ready) {
        if (c->hdr_have < FRAME_HDR) {
            size_t n = FRAME_HDR - c->hdr_have;
            if (n > len - off)
                n = len - off;
            memcpy(c->hdr + c->hdr_have, data + off, n);
            c->hdr_have += n;
            off += n;
            if (c->hdr_have < FRAME_HDR)
                break;
            uint32_t flen = be32_get(c->hdr);
            if (flen > NOISE_MAX_MESSAGE) {
                rc = KV_ERR_TOO_LARGE;
                break;
            }
            /* Before the handshake ends, frames are handshake messages. */
            if (flen == 0 || (!chan_established(c) && flen > HS_MSG_MAX)) {
                rc = KV_ERR_PROTO;
                break;
            }
            if ((rc = buf_grow(&c->frame, &c->frame_cap, flen)))
                break;
            c->frame_len = flen;
            c->frame_have = 0;
            continue;
        }
        size_t n = c->frame_len - c->frame_have;
        if (n > len - off)
            n = len - off;
        memcpy(c->frame + c->frame_have, data + off, n);
        c->frame_have += n;
        off += n;
        if (c->frame_have < c->frame_len)
            break;
        c->hdr_have = 0;
        rc =
            chan_established(c) ? on_transport_frame(c) : on_handshake_frame(c);
        if (rc)
            break;
    }
    *used = off;
    return rc;
}

bool chan_take(struct chan *c, const uint8_t **msg, size_t *len)
{
    static const uint8_t empty[1];
    if (!c->msg_ready)
        return false;
    *msg = c->msg ? c->msg : empty; /* an empty first message has no buffer */
    *len = c->msg_len;
    /* The bytes stay in place until the next chan_input resets them. */
    return true;
}

int chan_send(struct chan *c, const uint8_t *msg, size_t len)
{
    if (!chan_established(c))
        return KV_ERR_PROTO;
    if (len > c->max_msg)
        return KV_ERR_TOO_LARGE;
    size_t chunks = len / CHUNK_DATA + 1;
    int rc = out_reserve(c, len + chunks * (FRAME_HDR + 1 + NOISE_TAG_BYTES));
    if (rc)
        return rc;
    size_t off = 0;
    do {
        size_t n = len - off > CHUNK_DATA ? CHUNK_DATA : len - off;
        uint8_t *p = c->out + c->out_len;
        be32_put(p, (uint32_t)(1 + n + NOISE_TAG_BYTES));
        p[FRAME_HDR] = off + n < len ? CHUNK_MORE : CHUNK_LAST;
        if (n)
            memcpy(p + FRAME_HDR + 1, msg + off, n);
        rc = noise_cipher_encrypt(&c->tx, p + FRAME_HDR, 1 + n, p + FRAME_HDR);
        if (rc)
            return rc;
        c->out_len += FRAME_HDR + 1 + n + NOISE_TAG_BYTES;
        off += n;
    } while (off < len);
    return 0;
}

void chan_output(const struct chan *c, const uint8_t **data, size_t *len)
{
    *data = c->out + c->out_off;
    *len = c->out_len - c->out_off;
}

void chan_output_done(struct chan *c, size_t n)
{
    c->out_off += n;
    if (c->out_off >= c->out_len)
        c->out_off = c->out_len = 0;
}

void chan_output_trim(struct chan *c, size_t keep)
{
    if (keep < c->out_len - c->out_off)
        c->out_len = c->out_off + keep;
}

int chan_output_raw(struct chan *c, const uint8_t *p, size_t n)
{
    int rc = out_reserve(c, n);
    if (rc)
        return rc;
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
    return 0;
}

bool chan_established(const struct chan *c)
{
    return c->hs == NULL && c->n_kinds == 0;
}

bool chan_partial(const struct chan *c)
{
    return c->hdr_have > 0 || (!c->msg_ready && c->msg_len > 0);
}

size_t chan_memory(const struct chan *c)
{
    return sizeof(*c) + c->frame_cap + c->msg_cap + c->out_cap +
           (c->hs ? noise_hs_size() : 0);
}

void chan_trim(struct chan *c)
{
    if (c->hdr_have == 0 && c->frame) {
        sodium_memzero(c->frame, c->frame_cap);
        free(c->frame);
        c->frame = NULL;
        c->frame_cap = 0;
    }
    if (c->msg_ready) { /* taken: nothing refers to it once idle */
        c->msg_ready = false;
        c->msg_len = 0;
    }
    if (c->msg_len == 0 && c->msg) {
        sodium_memzero(c->msg, c->msg_cap);
        free(c->msg);
        c->msg = NULL;
        c->msg_cap = 0;
    }
    if (c->out_len == c->out_off && c->out) {
        free(c->out);
        c->out = NULL;
        c->out_cap = c->out_off = c->out_len = 0;
    }
}

const uint8_t *chan_remote_static(const struct chan *c)
{
    return c->remote_static;
}
