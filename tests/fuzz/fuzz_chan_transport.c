/* libFuzzer target: the secure channel after the handshake, as a node reads
 * it from a peer that holds the keys (a client with the client secret, or a
 * node): a real handshake is made in-process for each input, then the input
 * is taken as the plaintexts of transport frames, each [length: 2 bytes,
 * big-endian][bytes], encrypted under the session's keys and fed to the
 * responder: the flag byte, reassembly of chunked messages, the message size
 * limit, and a delivered message's length are all the fuzzer's. */
#include "../../common/common.h"
#include "../../crypto/crypto.h"
#include "../../proto/proto.h"

#include <stdlib.h>
#include <string.h>

#define MAX_MSG 100000

/* Feeds a frame to the responder, then takes what it delivers. */
static int feed(struct chan *r, const uint8_t *frame, size_t len)
{
    size_t off = 0;
    while (off < len) {
        size_t used;
        int rc = chan_input(r, frame + off, len - off, &used);
        if (rc)
            return rc;
        off += used;
        const uint8_t *m;
        size_t ml;
        if (chan_take(r, &m, &ml))
            if (ml > MAX_MSG)
                abort(); /* the limit held */
    }
    return 0;
}

/* The responder's pending output as one handshake message (frame header
 * removed), read into the initiator's handshake. */
static int take_reply(struct chan *r, struct noise_hs *i)
{
    const uint8_t *out;
    size_t n;
    chan_output(r, &out, &n);
    if (n < 4)
        return -1;
    uint8_t payload[64];
    size_t pl;
    int rc = noise_hs_read(i, out + 4, n - 4, payload, sizeof(payload), &pl);
    chan_output_done(r, n);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t psk[32] = {1}, rpriv[32] = {2}, ipriv[32] = {3};
    static int ready;
    if (!ready) {
        if (crypto_init() != 0)
            abort();
        ready = 1;
    }
    struct chan *r;
    if (chan_new(&r, NOISE_RESPONDER, PROTO_PROLOGUE_CLIENT, psk, rpriv,
                 MAX_MSG) != 0)
        abort();
    struct noise_hs *i =
        noise_hs_new(NOISE_INITIATOR, (const uint8_t *)PROTO_PROLOGUE_CLIENT,
                     strlen(PROTO_PROLOGUE_CLIENT), psk, ipriv);
    static uint8_t frame[4 + NOISE_MAX_MESSAGE];
    size_t n;
    struct noise_cipher tx, rx;
    uint8_t rs[32];
    if (!i || noise_hs_write(i, NULL, 0, frame + 4, NOISE_MAX_MESSAGE, &n) ||
        (be32_put(frame, (uint32_t)n), feed(r, frame, 4 + n)) ||
        take_reply(r, i) ||
        noise_hs_write(i, NULL, 0, frame + 4, NOISE_MAX_MESSAGE, &n) ||
        (be32_put(frame, (uint32_t)n), feed(r, frame, 4 + n)) ||
        noise_hs_split(i, &tx, &rx, rs))
        abort(); /* an honest handshake always completes */
    noise_hs_free(i);
    size_t off = 0;
    while (off + 2 <= size) {
        size_t len = (size_t)data[off] << 8 | data[off + 1];
        off += 2;
        if (len > size - off)
            len = size - off;
        if (len > NOISE_MAX_MESSAGE - NOISE_TAG_BYTES)
            len = NOISE_MAX_MESSAGE - NOISE_TAG_BYTES;
        if (noise_cipher_encrypt(&tx, data + off, len, frame + 4) != 0)
            break;
        off += len;
        be32_put(frame, (uint32_t)(len + NOISE_TAG_BYTES));
        if (feed(r, frame, 4 + len + NOISE_TAG_BYTES) != 0)
            break; /* refused: the node closes the connection */
    }
    noise_cipher_wipe(&tx);
    noise_cipher_wipe(&rx);
    chan_free(r);
    return 0;
}
