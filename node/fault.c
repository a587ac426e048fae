/* Fault injection decisions (see fault.h). */
#include "fault.h"

#include "../common/common.h"

#include <stdlib.h>
#include <string.h>

struct fault {
    bool enabled;
    uint64_t rng;
    struct fault_rule rules[FAULT_MAX_RULES];
    size_t n_rules;
    char blocked[FAULT_MAX_BLOCKED][GOSSIP_ADDR_MAX];
    size_t n_blocked;
    int64_t clock_offset_ms;
    struct fault_counters counters;
};

struct fault *fault_new(bool enabled, uint64_t seed)
{
    struct fault *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->enabled = enabled;
    f->rng = seed;
    return f;
}

void fault_free(struct fault *f)
{
    free(f);
}

bool fault_enabled(const struct fault *f)
{
    return f->enabled;
}

/* splitmix64: small, seeded, and good enough to pick faults. */
static uint64_t next(struct fault *f)
{
    uint64_t z = (f->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static bool chance(struct fault *f, uint32_t ppm)
{
    return ppm > 0 && next(f) % FAULT_PPM < ppm;
}

static bool rule_is_noop(const struct fault_rule *r)
{
    return !r->drop && !r->dup && !r->reorder && !r->corrupt && !r->delay_ms &&
           !r->jitter_ms;
}

int fault_set_rule(struct fault *f, const struct fault_rule *r)
{
    if (!f->enabled)
        return KV_ERR_PERM;
    /* Stream faults act where the bytes are sent (fault_chan_send). */
    if ((r->transports & FAULT_TCP) && (r->dirs & FAULT_IN))
        return KV_ERR_INVAL;
    if (r->drop > FAULT_PPM || r->dup > FAULT_PPM || r->reorder > FAULT_PPM ||
        r->corrupt > FAULT_PPM || !r->dirs || !r->transports ||
        (r->dirs & ~3u) || (r->transports & ~3u) || r->peer[0] == '\0' ||
        !memchr(r->peer, '\0', sizeof(r->peer)))
        return KV_ERR_INVAL;
    size_t i = 0;
    while (i < f->n_rules && !(strcmp(f->rules[i].peer, r->peer) == 0 &&
                               f->rules[i].dirs == r->dirs &&
                               f->rules[i].transports == r->transports))
        i++;
    if (rule_is_noop(r)) {
        if (i < f->n_rules)
            f->rules[i] = f->rules[--f->n_rules];
        return 0;
    }
    if (i == f->n_rules) {
        if (f->n_rules == FAULT_MAX_RULES)
            return KV_ERR_FULL;
        f->n_rules++;
    }
    f->rules[i] = *r;
    return 0;
}

int fault_block(struct fault *f, const char *const *peers, size_t n)
{
    if (!f->enabled)
        return KV_ERR_PERM;
    if (n > FAULT_MAX_BLOCKED)
        return KV_ERR_TOO_LARGE;
    for (size_t i = 0; i < n; i++)
        if (strlen(peers[i]) >= GOSSIP_ADDR_MAX)
            return KV_ERR_TOO_LARGE;
    for (size_t i = 0; i < n; i++)
        memcpy(f->blocked[i], peers[i], strlen(peers[i]) + 1);
    f->n_blocked = n;
    return 0;
}

int fault_set_clock_offset(struct fault *f, int64_t offset_ms)
{
    if (!f->enabled)
        return KV_ERR_PERM;
    /* A year either way is more skew than any test needs, and keeps the
     * arithmetic in fault_wall_ms clear of overflow (security review L7). */
    if (offset_ms > FAULT_MAX_CLOCK_OFFSET_MS ||
        offset_ms < -FAULT_MAX_CLOCK_OFFSET_MS)
        return KV_ERR_INVAL;
    f->clock_offset_ms = offset_ms;
    return 0;
}

int fault_clear(struct fault *f)
{
    if (!f->enabled)
        return KV_ERR_PERM;
    f->n_rules = 0;
    f->n_blocked = 0;
    f->clock_offset_ms = 0;
    return 0;
}

bool fault_blocked(struct fault *f, const char *peer)
{
    if (!f)
        return false;
    for (size_t i = 0; i < f->n_blocked; i++)
        if (strcmp(f->blocked[i], peer) == 0)
            return true;
    return false;
}

/* The rule for this traffic: one naming the peer before one for "*". */
static const struct fault_rule *match(const struct fault *f, const char *peer,
                                      enum fault_dir dir,
                                      enum fault_transport tr)
{
    const struct fault_rule *any = NULL;
    for (size_t i = 0; i < f->n_rules; i++) {
        const struct fault_rule *r = &f->rules[i];
        if (!(r->dirs & dir) || !(r->transports & tr))
            continue;
        if (strcmp(r->peer, peer) == 0)
            return r;
        if (strcmp(r->peer, "*") == 0 && !any)
            any = r;
    }
    return any;
}

void fault_decide(struct fault *f, const char *peer, enum fault_dir dir,
                  enum fault_transport tr, struct fault_verdict *v)
{
    memset(v, 0, sizeof(*v));
    if (!f->enabled)
        return;
    if (fault_blocked(f, peer)) {
        v->drop = true;
        f->counters.blocked++;
        return;
    }
    const struct fault_rule *r = match(f, peer, dir, tr);
    if (!r)
        return;
    if (chance(f, r->drop)) {
        v->drop = true;
        f->counters.dropped++;
        return;
    }
    v->dup = chance(f, r->dup);
    v->reorder = chance(f, r->reorder);
    v->corrupt = chance(f, r->corrupt);
    v->delay_ms = r->delay_ms +
                  (r->jitter_ms ? (uint32_t)(next(f) % (r->jitter_ms + 1)) : 0);
    f->counters.duplicated += v->dup;
    f->counters.reordered += v->reorder;
    f->counters.corrupted += v->corrupt;
    f->counters.delayed += v->delay_ms > 0;
}

void fault_corrupt(struct fault *f, uint8_t *buf, size_t len)
{
    if (len == 0)
        return;
    uint64_t x = next(f);
    buf[(x >> 3) % len] ^= (uint8_t)(1u << (x & 7));
}

int fault_chan_send(struct fault *f, struct chan *ch,
                    const struct fault_verdict *v, const uint8_t *msg,
                    size_t len, uint8_t **held, size_t *held_len)
{
    const uint8_t *p;
    size_t before, after;
    chan_output(ch, &p, &before);
    int rc = chan_send(ch, msg, len);
    if (rc)
        return rc;
    chan_output(ch, &p, &after);
    size_t n = after - before;
    uint8_t *mine = NULL;
    if (v->drop || v->dup || v->corrupt || (v->reorder && held)) {
        mine = malloc(n ? n : 1);
        if (!mine)
            return KV_ERR_NOMEM;
        memcpy(mine, p + before, n);
        chan_output_trim(ch, before);
    }
    uint8_t *prev = held ? *held : NULL;
    size_t prev_len = held ? *held_len : 0;
    if (held)
        *held = NULL;
    /* A flipped bit in the ciphertext, past the frame's 4-byte length: one
     * in the length would leave the receiver waiting for bytes that never
     * come, where a real stream's damage is found at once. */
    if (mine && v->corrupt && n > 4)
        fault_corrupt(f, mine + 4, n - 4);
    if (mine && v->reorder && held && !v->drop) {
        *held = mine; /* goes out after the next message */
        *held_len = n;
        mine = NULL;
    }
    if (mine && !v->drop) {
        rc = chan_output_raw(ch, mine, n);
        if (rc == 0 && v->dup)
            rc = chan_output_raw(ch, mine, n);
    }
    if (rc == 0 && prev)
        rc = chan_output_raw(ch, prev, prev_len);
    free(mine);
    free(prev);
    return rc;
}

uint64_t fault_wall_ms(const struct fault *f, uint64_t wall_ms)
{
    if (f->clock_offset_ms < 0 && (uint64_t)-f->clock_offset_ms > wall_ms)
        return 0;
    return wall_ms + (uint64_t)f->clock_offset_ms;
}

const struct fault_counters *fault_counters(const struct fault *f)
{
    return &f->counters;
}

size_t fault_rules(const struct fault *f, const struct fault_rule **out)
{
    *out = f->rules;
    return f->n_rules;
}

size_t fault_blocks(const struct fault *f, const char (**out)[GOSSIP_ADDR_MAX])
{
    *out = (const char(*)[GOSSIP_ADDR_MAX])f->blocked;
    return f->n_blocked;
}

int64_t fault_clock_offset(const struct fault *f)
{
    return f->clock_offset_ms;
}
