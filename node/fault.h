/* Fault injection: what kvnode's transport does to traffic when the node was
 * started with --fault-injection, decided here without touching a socket.
 *
 * Rules name a peer (a member's listen address, or "*" for every peer), the
 * directions (in, out) and transports (UDP, TCP) they apply to, and rates in
 * parts per million for drop, duplicate, reorder and corrupt, plus a delay
 * (fixed and jitter). The most specific rule wins: one naming the peer over
 * "*". Blocked peers (a partition as this node sees it) lose everything in
 * both directions. A clock offset shifts the wall clock this node's HLC
 * reads. Decisions draw from a seeded generator, so a run replays. */
#ifndef ESSAIM_FAULT_H
#define ESSAIM_FAULT_H

#include "../proto/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What to do with one datagram or one chunk of a stream. */
struct fault_verdict {
    bool drop, dup, reorder, corrupt;
    uint32_t delay_ms;
};

struct fault;

/* Creates the fault layer; off unless enabled (every change is then
 * refused with KV_ERR_PERM). @retval NULL when out of memory. */
struct fault *fault_new(bool enabled, uint64_t seed);
void fault_free(struct fault *f);

bool fault_enabled(const struct fault *f);

/* Adds a rule, or replaces the one for the same peer, directions and
 * transports; a rule with every rate and delay 0 removes it.
 * @retval 0. @retval KV_ERR_PERM when off. @retval KV_ERR_INVAL for a rate
 * above FAULT_PPM, no direction or transport, or an empty peer.
 * @retval KV_ERR_FULL beyond FAULT_MAX_RULES. */
int fault_set_rule(struct fault *f, const struct fault_rule *r);

/* Replaces the blocked peers (listen addresses); n = 0 heals.
 * @retval 0, KV_ERR_PERM, or KV_ERR_TOO_LARGE beyond FAULT_MAX_BLOCKED. */
int fault_block(struct fault *f, const char *const *peers, size_t n);

/* Sets the offset added to the wall clock, at most a year either way.
 * @retval 0, KV_ERR_PERM, or KV_ERR_INVAL beyond FAULT_MAX_CLOCK_OFFSET_MS. */
#define FAULT_MAX_CLOCK_OFFSET_MS (366LL * 86400 * 1000)
int fault_set_clock_offset(struct fault *f, int64_t offset_ms);

/* Removes every rule, block and offset. @retval 0 or KV_ERR_PERM. */
int fault_clear(struct fault *f);

/* True when traffic with this peer is blocked (a partition); never when
 * the layer is off (nothing can be blocked then) or f is NULL. */
bool fault_blocked(struct fault *f, const char *peer);

/* Decides the fate of one unit of traffic with peer. Blocked peers are
 * dropped. Counts what it decides. */
void fault_decide(struct fault *f, const char *peer, enum fault_dir dir,
                  enum fault_transport tr, struct fault_verdict *v);

/* Flips one random bit of buf (len > 0). */
void fault_corrupt(struct fault *f, uint8_t *buf, size_t len);

/* Sends msg on an established channel as the verdict v for a stream says.
 * Frame faults act on the encrypted bytes the channel queued, so the
 * receiver's authentication refuses them and it closes the channel: drop
 * cuts them, dup queues them twice, corrupt flips one bit, and reorder
 * (when held is given) keeps them in *held to go out after the next
 * message's. Bytes held from before go out after this message's.
 * @retval 0 Success. @retval the errors of chan_send, or KV_ERR_NOMEM. */
int fault_chan_send(struct fault *f, struct chan *ch,
                    const struct fault_verdict *v, const uint8_t *msg,
                    size_t len, uint8_t **held, size_t *held_len);

/* The wall clock as this node should see it: wall_ms plus the offset. */
uint64_t fault_wall_ms(const struct fault *f, uint64_t wall_ms);

const struct fault_counters *fault_counters(const struct fault *f);

/* The rules and blocks, for `kvcli fault show`. */
size_t fault_rules(const struct fault *f, const struct fault_rule **out);
size_t fault_blocks(const struct fault *f, const char (**out)[GOSSIP_ADDR_MAX]);
int64_t fault_clock_offset(const struct fault *f);

#endif
