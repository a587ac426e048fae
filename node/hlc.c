/* Hybrid logical clocks after Kulkarni et al., "Logical Physical Clocks and
 * Consistent Snapshots in Globally Distributed Databases" (2014), packed into
 * one u64 as DESIGN §4 fixes: physical ms << 16 | logical counter. When the
 * counter would overflow, the physical part moves on by one millisecond: the
 * clock stays monotonic and runs at most marginally ahead of wall time. */
#include "hlc.h"

uint64_t hlc_now(struct hlc *c, uint64_t wall_ms)
{
    uint64_t phys = wall_ms << HLC_LOGICAL_BITS;
    if (phys > c->last)
        c->last = phys;
    else
        c->last++; /* a logical tick; a carry advances the millisecond */
    return c->last;
}

uint64_t hlc_observe(struct hlc *c, uint64_t remote, uint64_t wall_ms)
{
    uint64_t phys = wall_ms << HLC_LOGICAL_BITS;
    if (remote > c->last)
        c->last = remote;
    if (phys > c->last)
        c->last = phys;
    return c->last;
}
