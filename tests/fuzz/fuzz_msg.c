/* libFuzzer target: msg_decode on arbitrary bytes (every wire message a node
 * or client decodes). A decoded message is re-encoded and decoded again, and
 * must come back the same, byte for byte once re-encoded. msg_peek_type and
 * msg_peek_id, which a node runs on a client's bytes before decoding them,
 * must agree with the decoder on every message it accepts. */
#include "../../common/common.h"
#include "../../proto/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct msg_limits lim = {PROTO_MAX_KEY, PROTO_MAX_VALUE_LIMIT};
    struct msg m, again;
    uint64_t peeked;
    bool have_id = msg_peek_id(data, size, &peeked);
    int type = msg_peek_type(data, size);
    if (msg_decode(data, size, &lim, &m) != 0)
        return 0;
    if (type != m.type || !have_id || peeked != m.id)
        abort();
    uint8_t *buf;
    size_t len;
    if (msg_encode(&m, &buf, &len) != 0)
        abort();
    if (msg_decode(buf, len, &lim, &again) != 0 || again.type != m.type ||
        again.id != m.id || again.hlc != m.hlc)
        abort();
    /* Every field survives: encoding what was decoded gives the same bytes
     * again. */
    uint8_t *buf2;
    size_t len2;
    if (msg_encode(&again, &buf2, &len2) != 0 || len2 != len ||
        memcmp(buf, buf2, len) != 0)
        abort();
    free(buf2);
    msg_free(&again);
    msg_free(&m);
    free(buf);
    return 0;
}
