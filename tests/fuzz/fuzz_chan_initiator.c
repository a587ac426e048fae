/* libFuzzer target: the client side of the handshake (kvcli, or a node
 * dialing another) reading whatever a hostile server sends back: message
 * 2, its frame lengths and anything after it. The input is cut into reads
 * at the points its first byte chooses. */
#include "../../common/common.h"
#include "../../proto/proto.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t psk[32] = {1}, priv[32] = {2};
    static int ready;
    if (!ready) {
        if (crypto_init() != 0)
            abort();
        ready = 1;
    }
    struct chan *c;
    if (chan_new(&c, NOISE_INITIATOR, PROTO_PROLOGUE_CLIENT, psk, priv,
                 1 << 20) != 0)
        return 0;
    size_t step = size ? (size_t)data[0] * 5 + 1 : 1;
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
