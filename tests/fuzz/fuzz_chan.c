/* libFuzzer target: the secure channel's reader fed arbitrary bytes from an
 * unauthenticated other side: frame lengths, handshake messages, and (if a
 * handshake could ever be forged) transport frames. The first byte's top bit
 * chooses the side: a node's responder (what any client or node dials), or
 * the initiator of kvcli or a dialing node (what a hostile server sends
 * back, message 2 first). The input is cut into reads at the points the
 * first byte's other bits choose, so partial frames are covered too. The
 * channel after an honest handshake is fuzz_chan_transport's. */
#include "../../common/common.h"
#include "../../proto/proto.h"

#include <sodium.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t psk[32] = {1}, cluster[32] = {3}, priv[32] = {2};
    const struct chan_kind kinds[2] = {{PROTO_PROLOGUE_CLIENT, psk, NULL, 0},
                                       {PROTO_PROLOGUE_PEER, cluster, NULL, 0}};
    static int ready;
    if (!ready) {
        if (crypto_init() != 0)
            abort();
        ready = 1;
    }
    struct chan *c;
    bool initiator = size && (data[0] & 0x80);
    if (initiator ? chan_new(&c, NOISE_INITIATOR, PROTO_PROLOGUE_CLIENT, psk,
                             priv, 1 << 20) != 0
                  : chan_new_responder(&c, kinds, 2, priv, 1 << 20) != 0)
        return 0;
    size_t step = size ? (size_t)(data[0] & 0x7f) * 7 + 1 : 1;
    size_t off = 0;
    while (off < size) {
        size_t n = size - off < step ? size - off : step, used;
        if (chan_input(c, data + off, n, &used) != 0)
            break;
        if (used > n)
            abort();
        off += used;
        const uint8_t *m;
        size_t ml;
        chan_take(c, &m, &ml);
    }
    chan_free(c);
    return 0;
}
