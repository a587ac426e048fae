/* Hybrid logical clock (DESIGN §4): a u64 of 48 bits of wall-clock
 * milliseconds and a 16-bit logical counter. Sans-I/O: the caller passes the
 * physical time, so tests and the simulator drive it with virtual time. */
#ifndef ESSAIM_NODE_HLC_H
#define ESSAIM_NODE_HLC_H

#include <stdbool.h>
#include <stdint.h>

#define HLC_LOGICAL_BITS 16
#define HLC_LOGICAL_MASK ((1u << HLC_LOGICAL_BITS) - 1)

/* How far ahead of this node's clock a peer's clock, or a record's version,
 * may be before it is refused (DESIGN §4; --max-clock-offset-ms). */
#define HLC_MAX_OFFSET_MS 500

struct hlc {
    uint64_t last; /* the highest timestamp issued or observed */
};

static inline uint64_t hlc_physical_ms(uint64_t ts)
{
    return ts >> HLC_LOGICAL_BITS;
}

/* True when timestamp ts lies more than max_ms ahead of wall_ms: the one
 * test behind every clock guard (peer messages, records, sessions). */
static inline bool hlc_too_far_ahead(uint64_t ts, uint64_t wall_ms,
                                     uint64_t max_ms)
{
    return hlc_physical_ms(ts) > wall_ms + max_ms;
}

/* A timestamp for a local event (a write): strictly greater than every
 * timestamp this clock has issued or observed. */
uint64_t hlc_now(struct hlc *c, uint64_t wall_ms);

/* Merges a timestamp received from a peer or a client session, so the next
 * hlc_now() is greater than it. Returns the new clock value. */
uint64_t hlc_observe(struct hlc *c, uint64_t remote, uint64_t wall_ms);

#endif
