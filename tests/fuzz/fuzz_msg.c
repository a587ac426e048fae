/* libFuzzer target: msg_decode on arbitrary bytes (every wire message a node
 * or client decodes). A decoded message is re-encoded and decoded again, and
 * must come back the same. */
#include "../../common/common.h"
#include "../../proto/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct msg_limits lim = {PROTO_MAX_KEY, PROTO_MAX_VALUE_LIMIT};
    struct msg m, again;
    if (msg_decode(data, size, &lim, &m) != 0)
        return 0;
    uint8_t *buf;
    size_t len;
    if (msg_encode(&m, &buf, &len) != 0)
        abort();
    if (msg_decode(buf, len, &lim, &again) != 0 || again.type != m.type ||
        again.id != m.id || again.hlc != m.hlc)
        abort();
    msg_free(&again);
    msg_free(&m);
    free(buf);
    return 0;
}
