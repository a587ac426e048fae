/* libFuzzer target: the secure channel's reader as a node runs it, fed
 * arbitrary bytes from an unauthenticated peer: frame lengths, handshake
 * messages, and (if a handshake could ever be forged) transport frames. The
 * input is cut into reads at the points its first byte chooses, so partial
 * frames are covered too. */
#include "../../common/common.h"
#include "../../proto/proto.h"

#include <sodium.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t psk[32] = {1}, cluster[32] = {3}, priv[32] = {2};
    const struct chan_kind kinds[2] = {{PROTO_PROLOGUE_CLIENT, psk, NULL},
                                       {PROTO_PROLOGUE_PEER, cluster, NULL}};
    static int ready;
    if (!ready) {
        if (crypto_init() != 0)
            abort();
        ready = 1;
    }
    struct chan *c;
    if (chan_new_responder(&c, kinds, 2, priv, 1 << 20) != 0)
        return 0;
    size_t step = size ? (size_t)data[0] * 7 + 1 : 1;
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
