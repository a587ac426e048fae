/* libFuzzer target: seal_open on raw, unauthenticated UDP bytes (what any
 * host can send to a node's gossip port). The first byte chooses between
 * the raw bytes as a packet, and the bytes as a payload that is sealed,
 * then opened (it must come back exactly, once: the second is a replay),
 * then opened again with one bit flipped where the second byte says (it
 * must be refused). */
#include "../../common/common.h"
#include "../../crypto/crypto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        if (crypto_init() != 0)
            abort();
        ready = 1;
    }
    static const uint8_t secret[CRYPTO_KEY_BYTES] = {7}, old[32] = {8};
    struct sealer s;
    seal_init(&s, secret);
    if (seal_add_old_key(&s, old) != 0)
        abort();
    const uint64_t now = 1700000000000ull;
    if (size < 2 || data[0] % 2 == 0) {
        uint8_t *out = malloc(size ? size : 1);
        size_t olen = 0;
        if (seal_open(&s, now, data, size, out, &olen) == 0 && olen > size)
            abort();
        free(out);
        return 0;
    }
    const uint8_t *payload = data + 2;
    size_t len = size - 2;
    size_t plen = len + SEAL_OVERHEAD;
    uint8_t *pkt = malloc(plen), *out = malloc(plen), *bad = malloc(plen);
    size_t olen = 0;
    seal_packet(&s, now, payload, len, pkt);
    if (seal_open(&s, now + 5, pkt, plen, out, &olen) != 0 || olen != len ||
        memcmp(out, payload, len) != 0)
        abort(); /* what was sealed opens */
    if (seal_open(&s, now + 6, pkt, plen, out, &olen) == 0)
        abort(); /* once */
    memcpy(bad, pkt, plen);
    size_t bit = (size_t)data[1] * 131 % (plen * 8);
    bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    struct sealer fresh;
    seal_init(&fresh, secret);
    if (seal_open(&fresh, now, bad, plen, out, &olen) == 0)
        abort(); /* a flipped bit never opens */
    free(pkt);
    free(out);
    free(bad);
    return 0;
}
