/* libFuzzer target: a node's handlers of decoded peer input, through the
 * node core, as a peer whose link authenticated could drive them: replica
 * and anti-entropy messages (core_on_peer_message decodes and dispatches
 * them) and gossip (decoded, then core_on_gossip), with time passing and
 * storage completing in between. The node runs over the fake env and the
 * in-memory store (tests/fake/), so whole conversations replay exactly.
 *
 * Input: records of [kind][length: 2 bytes, big-endian][bytes]. kind % 4:
 * 0, 1: a peer message from peer 0 or 1; 2: a gossip message from peer 0's
 * address; 3: time moves on by length * 7 ms (bytes ignored). */
#include "../../common/common.h"
#include "../../node/core.h"
#include "../../proto/proto.h"
#include "../fake/env.h"
#include "../fake/store.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static void deliver(struct core *c, struct fake_store *fs)
{
    struct storage_write *w = fake_store_completed(fs);
    while (w) {
        struct storage_write *next = w->next;
        core_on_stored(c, w);
        w = next;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        if (crypto_init() != 0)
            abort();
        log_set_level(LOG_ERROR);
        ready = 1;
    }
    static const char *const peer_addr[2] = {"127.0.0.1:7401",
                                             "127.0.0.1:7402"};
    uint8_t peer_id[2][CRYPTO_NODE_ID_BYTES];
    memset(peer_id[0], 0x22, sizeof(peer_id[0]));
    memset(peer_id[1], 0x33, sizeof(peer_id[1]));
    struct fake_store *fs = fake_store_new();
    static struct fake_env f; /* large: not on the stack */
    fake_env_init(&f, &fake_store_port, fs);
    struct core_config cc;
    core_config_defaults(&cc);
    struct wire_member self = {.version = PROTO_VERSION, .incarnation = 1};
    memset(self.id, 0x11, sizeof(self.id));
    snprintf(self.addr, sizeof(self.addr), "127.0.0.1:7400");
    struct core *c = core_new(&cc, &f.env, &self);
    if (!c)
        abort();
    core_start(c, peer_addr, 2);
    size_t off = 0;
    while (off + 3 <= size) {
        uint8_t kind = data[off] % 4;
        size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
        off += 3;
        if (len > size - off)
            len = size - off;
        const uint8_t *p = data + off;
        off += len;
        if (kind < 2) {
            core_on_peer_message(c, peer_id[kind], p, len);
        } else if (kind == 2) {
            struct gossip_msg g;
            if (gossip_decode(p, len, &g) == 0) {
                core_on_gossip(c, peer_addr[0], &g);
                gossip_msg_free(&g);
            }
        } else {
            fake_env_advance(&f, f.now + len * 7);
            f.wall += len * 7;
            core_tick(c);
        }
        deliver(c, fs);
        fake_env_clear(&f);
    }
    core_stop(c);
    for (int i = 0; i < 100 && !core_drained(c); i++) {
        fake_env_advance(&f, f.now + 100);
        core_tick(c);
        deliver(c, fs);
        fake_env_clear(&f);
    }
    core_free(c);
    fake_store_free(fs);
    fake_env_clear(&f);
    return 0;
}
