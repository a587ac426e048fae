/* libFuzzer target: gossip_decode on arbitrary bytes (every UDP gossip packet
 * and push-pull state a node accepts after authentication). A decoded message
 * re-encodes and decodes to the same members. */
#include "../../common/common.h"
#include "../../proto/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct gossip_msg g, again;
    if (gossip_decode(data, size, &g) != 0)
        return 0;
    uint8_t *buf;
    size_t len, n;
    if (gossip_encode(&g, SIZE_MAX, &buf, &len, &n) != 0 || n != g.n_members ||
        gossip_decode(buf, len, &again) != 0 ||
        again.n_members != g.n_members ||
        (n && memcmp(again.members, g.members, n * sizeof(*g.members))))
        abort();
    free(buf);
    gossip_msg_free(&again);
    gossip_msg_free(&g);
    return 0;
}
