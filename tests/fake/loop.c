/* The fake event loop (loop.h). */
#include "loop.h"

#include "../../common/common.h"

#include <stdlib.h>
#include <string.h>

uint64_t fake_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void fake_loop_init(struct fake_loop *l, uint64_t seed)
{
    memset(l, 0, sizeof(*l));
    l->rng = seed;
    crypto_generichash_init(&l->trace, NULL, 0, 32);
}

void fake_loop_free(struct fake_loop *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->heap[i].bytes);
    free(l->heap);
    l->heap = NULL;
    l->n = l->cap = 0;
}

uint64_t fake_loop_rand(struct fake_loop *l)
{
    return fake_splitmix64(&l->rng);
}

double fake_loop_uniform(struct fake_loop *l)
{
    return (double)(fake_loop_rand(l) >> 11) / 9007199254740992.0;
}

static bool before(const struct fake_event *a, const struct fake_event *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

void fake_loop_push(struct fake_loop *l, struct fake_event e)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->heap = realloc(l->heap, l->cap * sizeof(*l->heap));
        if (!l->heap)
            abort();
    }
    e.seq = l->next_seq++;
    size_t i = l->n++;
    while (i > 0 && before(&e, &l->heap[(i - 1) / 2])) {
        l->heap[i] = l->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    l->heap[i] = e;
}

static struct fake_event pop(struct fake_loop *l)
{
    struct fake_event top = l->heap[0], last = l->heap[--l->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->n)
            break;
        if (c + 1 < l->n && before(&l->heap[c + 1], &l->heap[c]))
            c++;
        if (!before(&l->heap[c], &last))
            break;
        l->heap[i] = l->heap[c];
        i = c;
    }
    if (l->n)
        l->heap[i] = last;
    return top;
}

void fake_loop_run_until(struct fake_loop *l, uint64_t t,
                         void (*run)(void *arg, struct fake_event *e),
                         void *arg)
{
    while (l->n && l->heap[0].at <= t) {
        struct fake_event e = pop(l);
        l->now = e.at;
        if (e.kind >= 0)
            run(arg, &e);
        free(e.bytes);
    }
    l->now = t;
}

size_t fake_loop_pending(const struct fake_loop *l)
{
    return l->n;
}

struct fake_event *fake_loop_event(struct fake_loop *l, size_t i)
{
    return &l->heap[i];
}

void fake_loop_trace(struct fake_loop *l, const void *p, size_t n)
{
    crypto_generichash_update(&l->trace, p, n);
}

void fake_loop_trace_hex(const struct fake_loop *l, char out[65])
{
    crypto_generichash_state copy = l->trace;
    uint8_t h[32];
    crypto_generichash_final(&copy, h, sizeof(h));
    hex_encode(out, h, sizeof(h));
}
