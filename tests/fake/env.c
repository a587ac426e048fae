/* The capturing environment of single-node unit tests (env.h). */
#include "env.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t f_now(void *ctx)
{
    return ((struct fake_env *)ctx)->now;
}

static uint64_t f_wall(void *ctx)
{
    return ((struct fake_env *)ctx)->wall;
}

static uint64_t f_random(void *ctx)
{
    return ((struct fake_env *)ctx)->rng += 0x9e3779b97f4a7c15ULL;
}

static void f_timer(void *ctx, struct timer *t, uint64_t after)
{
    struct fake_env *f = ctx;
    f->timer = t;
    f->timer_at = f->now + after;
}

static struct fake_sent *next_sent(struct fake_env *f)
{
    if (f->n_sent++ >= FAKE_ENV_MAX)
        return NULL;
    struct fake_sent *s = &f->sent[f->n_sent - 1];
    memset(s, 0, sizeof(*s));
    return s;
}

static void f_gossip(void *ctx, const struct peer *to,
                     const struct gossip_msg *g)
{
    struct fake_sent *s = next_sent(ctx);
    if (!s)
        return;
    s->gossip = true;
    snprintf(s->addr, sizeof(s->addr), "%s", to->addr);
    s->g = *g;
    s->members =
        malloc((g->n_members ? g->n_members : 1) * sizeof(*s->members));
    if (!s->members)
        abort();
    memcpy(s->members, g->members, g->n_members * sizeof(*g->members));
    s->g.members = s->members;
}

/* An encoded copy of m and its decoding (pointing into the copy). */
static void keep(const struct msg *m, uint8_t **bytes, size_t *len,
                 struct msg *out)
{
    struct msg_limits lim = {PROTO_MAX_KEY, PROTO_MAX_VALUE_LIMIT};
    if (msg_encode(m, bytes, len) != 0 ||
        msg_decode(*bytes, *len, &lim, out) != 0)
        abort(); /* what a node sends always decodes */
}

static size_t f_send(void *ctx, const uint8_t to[CRYPTO_NODE_ID_BYTES],
                     const struct msg *m)
{
    struct fake_sent *s = next_sent(ctx);
    if (!s)
        return 1;
    memcpy(s->to, to, CRYPTO_NODE_ID_BYTES);
    keep(m, &s->bytes, &s->len, &s->m);
    return s->len;
}

static void f_reply(void *ctx, void *client, const struct msg *m)
{
    struct fake_env *f = ctx;
    if (f->n_replies++ >= FAKE_ENV_MAX)
        return;
    struct fake_reply *r = &f->replies[f->n_replies - 1];
    r->client = client;
    keep(m, &r->bytes, &r->len, &r->m);
}

int fake_env_hash(void *ctx, const uint8_t *data, const uint64_t *off, size_t n,
                  size_t outlen, uint8_t *out)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        crypto_generichash(out + i * outlen, outlen, data + off[i],
                           off[i + 1] - off[i], NULL, 0);
    return 0;
}

void fake_env_init(struct fake_env *f, const struct storage_port *store,
                   void *store_ctx)
{
    memset(f, 0, sizeof(*f));
    f->now = 1000000;
    f->wall = 1700000000000ull;
    f->env = (struct env){.now_ms = f_now,
                          .wall_ms = f_wall,
                          .random = f_random,
                          .timer = f_timer,
                          .gossip = f_gossip,
                          .send = f_send,
                          .reply = f_reply,
                          .hash = fake_env_hash,
                          .store = store,
                          .store_ctx = store_ctx,
                          .ctx = f};
}

void fake_env_advance(struct fake_env *f, uint64_t t)
{
    while (f->timer && f->timer_at <= t) {
        f->now = f->timer_at;
        struct timer *tm = f->timer;
        f->timer = NULL;
        tm->fire(tm->arg);
    }
    f->now = t;
}

void fake_env_clear_sent(struct fake_env *f)
{
    size_t n = f->n_sent < FAKE_ENV_MAX ? f->n_sent : FAKE_ENV_MAX;
    for (size_t i = 0; i < n; i++) {
        if (!f->sent[i].gossip)
            msg_free(&f->sent[i].m);
        free(f->sent[i].bytes);
        free(f->sent[i].members);
    }
    f->n_sent = 0;
}

void fake_env_clear(struct fake_env *f)
{
    fake_env_clear_sent(f);
    fake_env_clear_replies(f);
}

void fake_env_clear_replies(struct fake_env *f)
{
    size_t n = f->n_replies < FAKE_ENV_MAX ? f->n_replies : FAKE_ENV_MAX;
    for (size_t i = 0; i < n; i++) {
        msg_free(&f->replies[i].m);
        free(f->replies[i].bytes);
    }
    f->n_replies = 0;
}
