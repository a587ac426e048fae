/* kv_strerror: the one table of error texts. Clients print these to users,
 * so each says what happened in words a user of a database understands. */
#include "common.h"

static const char *const texts[] = {
    [0] = "success",
    [1] = "out of memory",
    [2] = "input/output error",
    [3] = "invalid argument or malformed input",
    [4] = "not found",
    [5] = "too large",
    [6] = "authentication refused",
    [7] = "key file permissions too open",
    [8] = "stored data is corrupt (checksum mismatch)",
    [9] = "storage full",
    [10] = "storage is read-only",
    [11] = "timed out",
    [12] = "unavailable",
    [13] = "protocol violation",
    [14] = "truncated input",
    [15] = "trailing bytes after message",
    [16] = "field has the wrong type",
    [17] = "required field missing",
    [18] = "unknown message type",
    [19] = "unsupported version",
    [20] = "cipher nonce exhausted",
    [21] = "connection closed",
    [22] = "too busy",
    [23] = "clock offset too large",
};

const char *kv_strerror(int err)
{
    int i = -err;
    if (i < 0 || i >= (int)(sizeof(texts) / sizeof(texts[0])) || !texts[i])
        return "unknown error";
    return texts[i];
}
