/* Ownership changes: plans, streams, progress and hints handed on
 * (topo.h, topo_int.h). */
#include "topo_int.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- planning the streams ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The ring of the view's read members, with the subject in (in true) or
 * out. NULL when empty or out of memory. */
static struct ring *ring_with(struct topo *t, bool in)
{
    size_t n = membership_size(t->m);
    struct ring_node *rn = calloc(n, sizeof(*rn));
    if (!rn)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct wire_member *w = &membership_get(t->m, i)->info;
        bool take;
        if (memcmp(w->id, t->subject, ID_BYTES) == 0)
            take = in;
        else
            take = w->status != MEMBER_LEFT &&
                   (w->ring == RING_NORMAL || w->ring == RING_JOINED ||
                    w->ring == RING_LEAVING);
        if (!take)
            continue;
        memcpy(rn[k].id, w->id, ID_BYTES);
        memcpy(rn[k].region, w->region, sizeof(rn[k].region));
        memcpy(rn[k].zone, w->zone, sizeof(rn[k].zone));
        k++;
    }
    struct ring *ring = k ? ring_build(rn, k, t->cfg.vnodes) : NULL;
    free(rn);
    return ring;
}

static int add_task(struct topo *t, uint64_t first, uint64_t last,
                    const uint8_t *source, const uint8_t *target)
{
    /* Contiguous with a task of the same pair: one longer scan. */
    for (size_t i = t->n_tasks; i-- > 0;) {
        struct task *x = &t->tasks[i];
        if (memcmp(x->source, source, ID_BYTES) == 0 &&
            memcmp(x->target, target, ID_BYTES) == 0 && x->last != UINT64_MAX &&
            x->last + 1 == first) {
            x->last = last;
            return 0;
        }
        if (t->n_tasks - i > 8)
            break;
    }
    if (t->n_tasks == t->cap) {
        size_t nc = t->cap ? 2 * t->cap : 64;
        void *p = realloc(t->tasks, nc * sizeof(*t->tasks));
        if (!p)
            return KV_ERR_NOMEM;
        t->tasks = p;
        t->cap = nc;
    }
    struct task *x = &t->tasks[t->n_tasks++];
    memset(x, 0, sizeof(*x));
    x->first = first;
    x->last = last;
    memcpy(x->source, source, ID_BYTES);
    memcpy(x->target, target, ID_BYTES);
    return 0;
}

static bool in_list(const struct ring *ring, const size_t *idx, size_t n,
                    const uint8_t *id)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(ring_node_at(ring, idx[i])->id, id, ID_BYTES) == 0)
            return true;
    return false;
}

/* The streams of one range [first, last]: each replica it gains gets the
 * records from the replica it displaces when that one is up, else from
 * every surviving replica (so that whatever a quorum held, it holds). */
static int plan_range(struct topo *t, const struct ring *before,
                      const struct ring *after, uint64_t first, uint64_t last)
{
    size_t b[REPL_MAX_REPLICAS], a[REPL_MAX_REPLICAS], nb = 0, na = 0;
    if (before)
        nb = ring_preference_list(before, last, &t->cfg.placement, b);
    if (after)
        na = ring_preference_list(after, last, &t->cfg.placement, a);
    const uint8_t *displaced = NULL;
    for (size_t i = 0; i < nb; i++) {
        const uint8_t *id = ring_node_at(before, b[i])->id;
        if (!in_list(after, a, na, id) && up(t, id) &&
            memcmp(id, t->subject, ID_BYTES) != 0)
            displaced = id;
        if (!in_list(after, a, na, id) &&
            memcmp(id, t->subject, ID_BYTES) == 0 && t->kind != CH_REMOVE)
            displaced = id; /* a decommission streams from the leaver */
    }
    for (size_t j = 0; j < na; j++) {
        const uint8_t *target = ring_node_at(after, a[j])->id;
        if (in_list(before, b, nb, target))
            continue;
        if (displaced) {
            if (add_task(t, first, last, displaced, target))
                return KV_ERR_NOMEM;
            continue;
        }
        for (size_t i = 0; i < nb; i++) {
            const uint8_t *id = ring_node_at(before, b[i])->id;
            if (memcmp(id, target, ID_BYTES) != 0 &&
                memcmp(id, t->subject, ID_BYTES) != 0)
                if (add_task(t, first, last, id, target))
                    return KV_ERR_NOMEM;
        }
    }
    return 0;
}

int topo_plan(struct topo *t)
{
    bool join = t->kind == CH_JOIN;
    struct ring *before = ring_with(t, !join), *after = ring_with(t, join);
    size_t nt = (before ? ring_token_count(before) : 0) +
                (after ? ring_token_count(after) : 0);
    uint64_t *tok = malloc((nt ? nt : 1) * sizeof(*tok));
    int rc = tok ? 0 : KV_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; tok && before && i < ring_token_count(before); i++)
        tok[k++] = ring_token_at(before, i);
    for (size_t i = 0; tok && after && i < ring_token_count(after); i++)
        tok[k++] = ring_token_at(after, i);
    if (tok)
        qsort(tok, k, sizeof(*tok), cmp_u64);
    free(t->tasks);
    t->tasks = NULL;
    t->n_tasks = t->cap = t->cur = 0;
    /* Between two consecutive tokens of either ring, both rings place keys
     * alike: one range. The first wraps around the top. */
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (u == 0 || tok[u - 1] != tok[i])
            tok[u++] = tok[i];
    for (size_t i = 0; rc == 0 && i < u; i++) {
        if (i == 0) {
            rc = plan_range(t, before, after, 0, tok[0]);
            if (rc == 0 && tok[u - 1] != UINT64_MAX)
                rc = plan_range(t, before, after, tok[u - 1] + 1, UINT64_MAX);
        } else {
            rc = plan_range(t, before, after, tok[i - 1] + 1, tok[i]);
        }
    }
    free(tok);
    ring_free(after);
    ring_free(t->before);
    t->before = before;
    t->counters.ranges_total = t->n_tasks;
    t->counters.ranges_done = 0;
    return rc;
}

/* ---- progress, kept in the store's meta (resumable after a crash) ---- */

#define PROGRESS_NAME "topo/progress"
#define PROGRESS_VERSION 1
#define PROGRESS_HEAD (2 + ID_BYTES + 4)
#define PROGRESS_TASK (8 + 8 + 2 * ID_BYTES + 1 + LKEY)

/* Submits a meta write of blob (n bytes; 0 deletes it). */
void topo_put_progress(struct topo *t, const uint8_t *blob, size_t n)
{
    struct topo_write *tw = calloc(1, sizeof(*tw) + sizeof(PROGRESS_NAME) + n);
    if (!tw)
        return; /* a resume then starts over: nothing is lost */
    memcpy(tw->data, PROGRESS_NAME, sizeof(PROGRESS_NAME) - 1);
    if (n)
        memcpy(tw->data + sizeof(PROGRESS_NAME), blob, n);
    struct storage_write *w = &tw->w;
    w->op = STORAGE_PUT_META;
    w->key = tw->data;
    w->key_len = sizeof(PROGRESS_NAME) - 1;
    w->value = tw->data + sizeof(PROGRESS_NAME);
    w->value_len = n;
    w->tag = TOPO_WRITE_TAG;
    w->ctx = tw;
    t->inflight++;
    t->env.store->submit(t->env.store_ctx, w);
}

/* Saves which streams are done and where each one is. */
void topo_save_progress(struct topo *t)
{
    size_t n = PROGRESS_HEAD + t->n_tasks * PROGRESS_TASK;
    uint8_t *b = malloc(n);
    if (!b)
        return;
    b[0] = PROGRESS_VERSION;
    b[1] = t->kind;
    memcpy(b + 2, t->subject, ID_BYTES);
    be32_put(b + 2 + ID_BYTES, (uint32_t)t->n_tasks);
    uint8_t *p = b + PROGRESS_HEAD;
    for (size_t i = 0; i < t->n_tasks; i++, p += PROGRESS_TASK) {
        const struct task *x = &t->tasks[i];
        be64_put(p, x->first);
        be64_put(p + 8, x->last);
        memcpy(p + 16, x->source, ID_BYTES);
        memcpy(p + 16 + ID_BYTES, x->target, ID_BYTES);
        p[16 + 2 * ID_BYTES] = (uint8_t)(x->done | x->has_after << 1);
        memcpy(p + 17 + 2 * ID_BYTES, x->after, LKEY);
    }
    topo_put_progress(t, b, n);
    free(b);
    t->progress_dirty = false;
    t->progress_at = now(t);
}

/* After planning: takes up what a crash interrupted, when the saved
 * progress is of this very plan (same change, same streams). */
void topo_restore_progress(struct topo *t)
{
    uint8_t *b = NULL;
    size_t n = 0;
    if (!t->env.store->meta_get ||
        t->env.store->meta_get(t->env.store_ctx, PROGRESS_NAME, &b, &n) != 0)
        return;
    bool same = n == PROGRESS_HEAD + t->n_tasks * PROGRESS_TASK &&
                b[0] == PROGRESS_VERSION && b[1] == t->kind &&
                memcmp(b + 2, t->subject, ID_BYTES) == 0 &&
                be32_get(b + 2 + ID_BYTES) == t->n_tasks;
    const uint8_t *p = b + PROGRESS_HEAD;
    for (size_t i = 0; same && i < t->n_tasks; i++, p += PROGRESS_TASK) {
        const struct task *x = &t->tasks[i];
        same = be64_get(p) == x->first && be64_get(p + 8) == x->last &&
               memcmp(p + 16, x->source, ID_BYTES) == 0 &&
               memcmp(p + 16 + ID_BYTES, x->target, ID_BYTES) == 0;
    }
    size_t done = 0;
    p = b + PROGRESS_HEAD;
    for (size_t i = 0; same && i < t->n_tasks; i++, p += PROGRESS_TASK) {
        struct task *x = &t->tasks[i];
        x->done = p[16 + 2 * ID_BYTES] & 1;
        x->has_after = p[16 + 2 * ID_BYTES] >> 1 & 1;
        memcpy(x->after, p + 17 + 2 * ID_BYTES, LKEY);
        done += x->done;
    }
    free(b);
    if (!same)
        return;
    t->counters.ranges_done = done;
    t->counters.resumed++;
    log_info("%s resumed: %zu of %zu streams were done before the restart",
             t->kind == CH_JOIN           ? "join"
             : t->kind == CH_DECOMMISSION ? "decommission"
                                          : "removal",
             done, t->n_tasks);
}

/* ---- streaming ---- */

void topo_io_failed(struct topo *t, const char *what)
{
    t->io_busy = false;
    t->counters.retries++;
    t->backoff = t->backoff ? t->backoff * 2 : t->cfg.retry_ms;
    if (t->backoff > t->cfg.retry_ms * 64)
        t->backoff = t->cfg.retry_ms * 64;
    t->next_io = now(t) + t->backoff;
    if (t->counters.retries % 10 == 1)
        log_warn("stream: %s; retrying in %llu ms", what,
                 (unsigned long long)t->backoff);
}

/* The batch of the current task is stored at its target. */
static void batch_done(struct topo *t)
{
    struct task *x = &t->tasks[t->cur];
    t->io_busy = false;
    t->backoff = 0;
    t->last_progress = now(t);
    t->progress_dirty = true;
    if (t->io_records) {
        memcpy(x->after, t->io_last, LKEY);
        x->has_after = true;
    }
    if (!t->io_more) {
        x->done = true;
        t->counters.ranges_done++;
    }
    t->throttle_bytes += t->io_bytes;
}

/* The throttle: the bytes streamed since the step began stay within the
 * configured rate, with 200 ms of it as a burst (the tick that resumes a
 * stream held back comes every 100 ms). */
static bool within_rate(const struct topo *t)
{
    if (!t->cfg.stream_bytes_s)
        return true;
    uint64_t ms = now(t) - t->throttle_start + 200;
    return t->throttle_bytes < t->cfg.stream_bytes_s * ms / 1000;
}

static struct topo_write *write_new(const struct ae_record *rec, uint8_t op,
                                    const uint8_t *owner)
{
    size_t vlen = rec->tombstone ? 0 : rec->value_len;
    struct topo_write *tw = calloc(1, sizeof(*tw) + rec->key_len + vlen);
    if (!tw)
        return NULL;
    memcpy(tw->data, rec->key, rec->key_len);
    if (vlen)
        memcpy(tw->data + rec->key_len, rec->value, vlen);
    struct storage_write *w = &tw->w;
    w->op = op;
    if (owner)
        memcpy(w->owner, owner, ID_BYTES);
    w->key = tw->data;
    w->key_len = rec->key_len;
    w->value = tw->data + rec->key_len;
    w->value_len = vlen;
    w->version = rec->version;
    memcpy(w->origin, rec->origin, ID_BYTES);
    w->tombstone = rec->tombstone;
    w->tag = TOPO_WRITE_TAG;
    w->ctx = tw;
    return tw;
}

static void store_finish(struct topo *t, struct store_req *q);
static void hints_deleted(struct topo *t, int code);

/* Writes records here for q (op: STORAGE_PUT, or a hint operation for
 * owner); q finishes once all are durable. */
static void store_here(struct topo *t, struct store_req *q,
                       const struct ae_record *recs, size_t n, uint8_t op,
                       const uint8_t *owner)
{
    q->open = 1; /* held while submitting */
    for (size_t i = 0; i < n; i++) {
        struct topo_write *tw = write_new(&recs[i], op, owner);
        if (!tw) {
            q->code = KV_ERR_NOMEM;
            break;
        }
        tw->req = q;
        q->open++;
        t->inflight++;
        t->env.store->submit(t->env.store_ctx, &tw->w);
    }
    if (--q->open == 0)
        store_finish(t, q);
}

/* A record of token tok failed its checksum: the current task's target
 * takes that token from another replica that is up, later. */
static void refetch(struct topo *t, uint64_t tok)
{
    uint8_t source[ID_BYTES], target[ID_BYTES];
    memcpy(source, t->tasks[t->cur].source, ID_BYTES);
    memcpy(target, t->tasks[t->cur].target, ID_BYTES);
    char hex[2 * ID_BYTES + 1];
    hex_encode(hex, source, ID_BYTES);
    log_error("stream: a record from %.12s failed its checksum (token "
              "%016llx); taking it from another replica",
              hex, (unsigned long long)tok);
    const struct ring *ring = repl_ring(t->r);
    size_t idx[REPL_MAX_REPLICAS];
    size_t nr =
        ring ? ring_preference_list(ring, tok, &t->cfg.placement, idx) : 0;
    for (size_t j = 0; j < nr; j++) {
        const uint8_t *id = ring_node_at(ring, idx[j])->id;
        if (memcmp(id, source, ID_BYTES) == 0 ||
            memcmp(id, target, ID_BYTES) == 0 || !up(t, id))
            continue;
        if (add_task(t, tok, tok, id, target) == 0)
            t->counters.ranges_total++;
        return;
    }
}

/* Checks the records' values against the checksums their source stored
 * (through accel, in one batch); a record that fails is dropped, logged,
 * and taken from another replica. @retval how many were kept (compacted
 * to the front of recs). */
static size_t check_sums(struct topo *t, struct ae_record *recs, size_t n,
                         const uint8_t *sums, size_t sums_len)
{
    if (n == 0 || sums_len != n * SUM)
        return n;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += recs[i].value_len;
    uint8_t *data = malloc(total ? total : 1);
    uint64_t *off = malloc((n + 1) * sizeof(*off));
    uint8_t *out = malloc(n * SUM);
    size_t kept = n;
    if (data && off && out) {
        size_t p = 0;
        for (size_t i = 0; i < n; i++) {
            off[i] = p;
            if (recs[i].value_len)
                memcpy(data + p, recs[i].value, recs[i].value_len);
            p += recs[i].value_len;
        }
        off[n] = p;
        if (t->env.hash(t->env.ctx, data, off, n, SUM, out) == 0) {
            kept = 0;
            for (size_t i = 0; i < n; i++) {
                if (memcmp(out + i * SUM, sums + i * SUM, SUM) == 0) {
                    recs[kept++] = recs[i];
                    continue;
                }
                t->counters.corrupt++;
                refetch(t, storage_token(recs[i].key, recs[i].key_len));
            }
        }
    }
    free(data);
    free(off);
    free(out);
    return kept;
}

/* Hands a batch to the current task's target: stored here, or sent. */
static void deliver(struct topo *t, struct ae_record *recs, size_t n,
                    const uint8_t *sums, size_t sums_len, bool more)
{
    struct task *x = &t->tasks[t->cur];
    t->io_records = n;
    t->io_more = more;
    t->io_bytes = 0;
    for (size_t i = 0; i < n; i++)
        t->io_bytes += recs[i].key_len + recs[i].value_len + 64;
    if (n)
        storage_lkey(t->io_last, recs[n - 1].key, recs[n - 1].key_len);
    n = check_sums(t, recs, n, sums, sums_len);
    x = &t->tasks[t->cur]; /* check_sums may have grown the list */
    if (n == 0) {
        batch_done(t);
        return;
    }
    if (is_self(t, x->target)) {
        struct store_req *q = calloc(1, sizeof(*q));
        if (!q) {
            topo_io_failed(t, "out of memory");
            return;
        }
        q->local = true;
        t->io_local = q;
        t->counters.records_in += n;
        t->counters.bytes_in += t->io_bytes;
        store_here(t, q, recs, n, STORAGE_PUT, NULL);
        return;
    }
    struct msg m = {.type = MSG_STREAM, .id = t->io_id = t->next_id++};
    m.u.stream.op = STREAM_STORE;
    m.u.stream.digest = repl_digest(t->r);
    m.u.stream.recs = recs;
    m.u.stream.n_recs = n;
    memcpy(t->io_peer, x->target, ID_BYTES);
    t->io_deadline = now(t) + t->cfg.io_timeout_ms;
    send(t, x->target, &m);
}

/* Records of [first, last] after `after`, up to max bytes (at least one),
 * copied out of the scan. */
struct scan_batch {
    struct ae_record *recs;
    uint8_t *sums;
    size_t n, cap, bytes, max;
    bool more;
};

static int scan_one(void *arg, const uint8_t *lkey,
                    const struct storage_record *rec, bool sound)
{
    (void)lkey;
    struct scan_batch *b = arg;
    if (!sound)
        return 0; /* scrub and anti-entropy deal with it */
    size_t sz = rec->key_len + rec->value_len + 64;
    if (b->n > 0 && (b->bytes + sz > b->max || b->n == STREAM_MAX_RECORDS)) {
        b->more = true;
        return 1;
    }
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        void *p = realloc(b->recs, nc * sizeof(*b->recs));
        void *q = p ? realloc(b->sums, nc * SUM) : NULL;
        if (p)
            b->recs = p;
        if (!p || !q)
            return 1;
        b->sums = q;
        b->cap = nc;
    }
    uint8_t *copy = malloc(rec->key_len + rec->value_len + 1);
    if (!copy)
        return 1;
    memcpy(copy, rec->key, rec->key_len);
    if (rec->value_len)
        memcpy(copy + rec->key_len, rec->value, rec->value_len);
    struct ae_record *r = &b->recs[b->n];
    r->key = copy;
    r->key_len = rec->key_len;
    r->value = copy + rec->key_len;
    r->value_len = rec->tombstone ? 0 : rec->value_len;
    r->version = rec->version;
    memcpy(r->origin, rec->origin, ID_BYTES);
    r->tombstone = rec->tombstone;
    memcpy(b->sums + b->n * SUM, rec->checksum, SUM);
    b->n++;
    b->bytes += sz;
    return 0;
}

static void scan_free(struct scan_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free((void *)b->recs[i].key);
    free(b->recs);
    free(b->sums);
}

static int scan_local(struct topo *t, uint64_t first, uint64_t last,
                      const uint8_t *after, size_t max, struct scan_batch *b)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
    return t->env.store->scan(t->env.store_ctx, first, last, after, scan_one, b,
                              NULL);
}

static void reroute(struct topo *t, size_t k)
{
    struct task x = t->tasks[k];
    if (!t->before)
        return;
    size_t idx[REPL_MAX_REPLICAS];
    size_t n = ring_preference_list(t->before, x.last, &t->cfg.placement, idx);
    size_t added = 0;
    for (size_t j = 0; j < n; j++) {
        const uint8_t *id = ring_node_at(t->before, idx[j])->id;
        if (!up(t, id) || memcmp(id, x.target, ID_BYTES) == 0 ||
            memcmp(id, x.source, ID_BYTES) == 0 ||
            (memcmp(id, t->subject, ID_BYTES) == 0 && t->kind == CH_REMOVE))
            continue;
        size_t before = t->n_tasks;
        if (add_task(t, x.first, x.last, id, x.target) != 0)
            return;
        if (t->n_tasks > before) { /* a new task: resume where it was */
            struct task *y = &t->tasks[t->n_tasks - 1];
            memcpy(y->after, x.after, LKEY);
            y->has_after = x.has_after;
        }
        added++;
    }
    if (added == 0)
        return;              /* nobody else has it: wait for the source */
    t->tasks[k].done = true; /* replaced */
    t->counters.ranges_total += added - 1;
}

/* Starts the next batch of the stream. */
static void pump_one(struct topo *t)
{
    size_t tries = 0;
    while (t->cur < t->n_tasks && t->tasks[t->cur].done)
        t->cur++;
    if (t->cur == t->n_tasks) {
        topo_save_progress(t);
        if (t->kind == CH_DECOMMISSION) {
            t->step = S_HINTS; /* then S_AGREE_B */
            return;
        }
        t->step = S_AGREE_B;
        topo_start_round(t);
        return;
    }
    /* A task whose source is down goes on from every other replica the
     * range had (from where it was: whatever a quorum held, one of them
     * holds); one whose target is down waits, the others go on. */
    for (size_t k = t->cur; k < t->n_tasks; k++)
        if (!t->tasks[k].done && !up(t, t->tasks[k].source))
            reroute(t, k);
    size_t i = t->cur;
    while (tries < t->n_tasks) {
        struct task *x = &t->tasks[i];
        if (!x->done && up(t, x->source) && up(t, x->target))
            break;
        i = (i + 1) % t->n_tasks;
        tries++;
    }
    if (tries == t->n_tasks) {
        topo_io_failed(t, "every stream waits for a node that is down");
        return;
    }
    if (i != t->cur) { /* bring it forward */
        struct task tmp = t->tasks[t->cur];
        t->tasks[t->cur] = t->tasks[i];
        t->tasks[i] = tmp;
    }
    struct task *x = &t->tasks[t->cur];
    t->io_busy = true;
    if (is_self(t, x->source)) {
        struct scan_batch b;
        int rc =
            scan_local(t, x->first, x->last, x->has_after ? x->after : NULL,
                       t->cfg.batch_bytes, &b);
        if (rc) {
            scan_free(&b);
            topo_io_failed(t, kv_strerror(rc));
            return;
        }
        t->counters.records_out += b.n;
        t->counters.bytes_out += b.bytes;
        deliver(t, b.recs, b.n, NULL, 0, b.more);
        scan_free(&b);
        return;
    }
    struct msg m = {.type = MSG_STREAM, .id = t->io_id = t->next_id++};
    m.u.stream.op = STREAM_SCAN;
    m.u.stream.digest = repl_digest(t->r);
    m.u.stream.first = x->first;
    m.u.stream.last = x->last;
    m.u.stream.has_after = x->has_after;
    memcpy(m.u.stream.after, x->after, LKEY);
    m.u.stream.max_bytes = t->cfg.batch_bytes;
    memcpy(t->io_peer, x->source, ID_BYTES);
    t->io_deadline = now(t) + t->cfg.io_timeout_ms;
    send(t, x->source, &m);
}

/* Starts batches while the throttle allows and none is out (a batch that
 * finishes at once, an empty range say, lets the next one go). */
void topo_pump(struct topo *t)
{
    while (t->kind != CH_NONE && t->step == S_STREAM && !t->io_busy &&
           now(t) >= t->next_io && within_rate(t))
        pump_one(t);
}

/* ---- a decommission hands on its hints ---- */

void topo_hints_free(struct topo *t)
{
    if (t->hint_recs)
        storage_hints_free(t->hint_recs, t->n_hint_recs);
    t->hint_recs = NULL;
    t->n_hint_recs = 0;
}

/* The hints being handed on as records (at most 64): whole, to send, or
 * only their keys and versions, to delete them here once sent. */
static void hint_records(const struct topo *t, struct ae_record *recs,
                         bool whole)
{
    for (size_t k = 0; k < t->n_hint_recs; k++) {
        const struct storage_record *r = &t->hint_recs[k];
        recs[k] = (struct ae_record){.key = r->key,
                                     .key_len = r->key_len,
                                     .version = r->version,
                                     .tombstone = !whole || r->tombstone};
        if (whole) {
            recs[k].value = r->value;
            recs[k].value_len = r->value_len;
        }
        memcpy(recs[k].origin, r->origin, ID_BYTES);
    }
}

/* Who takes hints for owner: the owner itself when it is up (they are its
 * data), else the first live normal member other than this node. */
static const uint8_t *hint_target(struct topo *t, const uint8_t *owner)
{
    if (up(t, owner) && !is_self(t, owner))
        return owner;
    size_t n = membership_size(t->m);
    for (size_t i = 1; i < n; i++) {
        const struct wire_member *w = &membership_get(t->m, i)->info;
        if (w->status == MEMBER_ALIVE && w->ring == RING_NORMAL &&
            memcmp(w->id, owner, ID_BYTES) != 0)
            return w->id;
    }
    return NULL;
}

/* Sends the next batch of hints on, or, when none is left, goes on to the
 * flip. */
void topo_hints_pump(struct topo *t)
{
    if (t->io_busy || now(t) < t->next_io)
        return;
    uint8_t owners[16][ID_BYTES];
    size_t n_owners = 0;
    if (t->env.store->hint_owners(t->env.store_ctx, owners, 16, &n_owners) != 0)
        n_owners = 0;
    for (size_t i = 0; i < n_owners; i++) {
        const uint8_t *to = hint_target(t, owners[i]);
        if (!to)
            continue;
        topo_hints_free(t);
        if (t->env.store->hints(t->env.store_ctx, owners[i], 64, &t->hint_recs,
                                &t->n_hint_recs) != 0 ||
            t->n_hint_recs == 0) {
            topo_hints_free(t);
            continue;
        }
        struct ae_record recs[64];
        hint_records(t, recs, true);
        memcpy(t->hint_owner, owners[i], ID_BYTES);
        struct msg m = {.type = MSG_STREAM, .id = t->io_id = t->next_id++};
        m.u.stream.op = STREAM_HINTS;
        m.u.stream.digest = repl_digest(t->r);
        memcpy(m.u.stream.owner, owners[i], ID_BYTES);
        m.u.stream.recs = recs;
        m.u.stream.n_recs = t->n_hint_recs;
        memcpy(t->io_peer, to, ID_BYTES);
        t->io_busy = true;
        t->io_deadline = now(t) + t->cfg.io_timeout_ms;
        send(t, to, &m);
        return;
    }
    if (t->hints_handed)
        log_info("decommission: %llu hint(s) handed on",
                 (unsigned long long)t->hints_handed);
    if (n_owners)
        log_warn("decommission: hints for %zu owner(s) stay behind: no "
                 "live member can take them",
                 n_owners);
    t->step = S_AGREE_B;
    topo_start_round(t);
}

/* The hints sent were stored there: they go from here. */
static void hints_sent(struct topo *t)
{
    struct store_req *q = calloc(1, sizeof(*q));
    if (!q) {
        topo_io_failed(t, "out of memory");
        return;
    }
    q->local = q->hint_del = true;
    t->io_local = q;
    t->hints_handed += t->n_hint_recs;
    struct ae_record recs[64];
    hint_records(t, recs, false);
    store_here(t, q, recs, t->n_hint_recs, STORAGE_DEL_HINT, t->hint_owner);
}

static void hints_deleted(struct topo *t, int code)
{
    topo_hints_free(t);
    t->io_busy = false;
    t->last_progress = now(t);
    if (code)
        topo_io_failed(t, kv_strerror(code));
    topo_hints_pump(t);
}

/* ---- the stored side ---- */

void topo_on_stored(struct topo *t, struct storage_write *w)
{
    struct topo_write *tw = w->ctx;
    struct store_req *q = tw->req;
    if (w->op == STORAGE_PUT_META) {
        if (w->result)
            log_warn("stream: saving its progress failed: %s",
                     kv_strerror(w->result));
        free(tw);
        t->inflight--;
        return;
    }
    if (w->result && !q->code)
        q->code = w->result;
    free(tw);
    t->inflight--;
    if (--q->open == 0)
        store_finish(t, q);
}

/* Every record of q is durable (or failed): the driver goes on, or the
 * driver that sent them is told. */
static void store_finish(struct topo *t, struct store_req *q)
{
    if (q->local) {
        if (t->io_local == q)
            t->io_local = NULL;
        int code = q->code;
        bool hint_del = q->hint_del;
        free(q);
        if (t->kind == CH_NONE || !t->io_busy)
            return;
        if (hint_del) {
            hints_deleted(t, code);
            return;
        }
        if (code)
            topo_io_failed(t, kv_strerror(code));
        else
            batch_done(t);
        topo_pump(t);
        return;
    }
    struct msg a = {.type = MSG_STREAM_ANSWER, .id = q->id};
    a.u.stream.op = q->op;
    a.u.stream.code = q->code;
    a.u.stream.digest = repl_digest(t->r);
    send(t, q->from, &a);
    free(q);
}

/* ---- messages ---- */

static void on_request(struct topo *t, const uint8_t *from, const struct msg *m)
{
    const struct msg_stream *s = &m->u.stream;
    struct msg a = {.type = MSG_STREAM_ANSWER, .id = m->id};
    a.u.stream.op = s->op;
    a.u.stream.digest = repl_digest(t->r);
    switch (s->op) {
    case STREAM_DIGEST:
        send(t, from, &a);
        return;
    case STREAM_SCAN: {
        struct scan_batch b;
        size_t max = s->max_bytes ? s->max_bytes : t->cfg.batch_bytes;
        if (max > t->cfg.batch_bytes * 4)
            max = t->cfg.batch_bytes * 4;
        int rc = scan_local(t, s->first, s->last,
                            s->has_after ? s->after : NULL, max, &b);
        a.u.stream.code = rc;
        if (rc == 0) {
            a.u.stream.recs = b.recs;
            a.u.stream.n_recs = b.n;
            a.u.stream.sums = b.sums;
            a.u.stream.sums_len = b.n * SUM;
            a.u.stream.more = b.more;
            t->counters.records_out += b.n;
            t->counters.bytes_out += b.bytes;
        }
        send(t, from, &a);
        scan_free(&b);
        return;
    }
    default: { /* STREAM_STORE, STREAM_HINTS */
        struct store_req *q = calloc(1, sizeof(*q));
        if (!q) {
            a.u.stream.code = KV_ERR_NOMEM;
            send(t, from, &a);
            return;
        }
        memcpy(q->from, from, ID_BYTES);
        q->id = m->id;
        q->op = s->op;
        t->counters.records_in += s->n_recs;
        for (size_t i = 0; i < s->n_recs; i++)
            t->counters.bytes_in += s->recs[i].key_len + s->recs[i].value_len;
        /* Hints handed on for this very node are its data. */
        bool hints = s->op == STREAM_HINTS && !is_self(t, s->owner);
        store_here(t, q, s->recs, s->n_recs,
                   hints ? STORAGE_PUT_HINT : STORAGE_PUT,
                   hints ? s->owner : NULL);
        return;
    }
    }
}

void topo_on_peer_message(struct topo *t, const uint8_t from[ID_BYTES],
                          const struct msg *m)
{
    if (m->type == MSG_STREAM) {
        on_request(t, from, m);
        return;
    }
    const struct msg_stream *s = &m->u.stream;
    if (s->op == STREAM_DIGEST) {
        if (m->id >= t->round_id && m->id < t->round_id + t->round_want) {
            t->round_got++;
            if (s->digest == t->round_digest)
                t->round_same++;
            else
                t->round_other = true;
        }
        return;
    }
    if (t->kind == CH_NONE || !t->io_busy || m->id != t->io_id ||
        memcmp(from, t->io_peer, ID_BYTES) != 0)
        return; /* late, or not ours */
    if (s->code) {
        topo_io_failed(t, kv_strerror(s->code));
        return;
    }
    if (s->op == STREAM_STORE) {
        batch_done(t);
        topo_pump(t);
        return;
    }
    if (s->op == STREAM_HINTS) {
        hints_sent(t);
        return;
    }
    /* A scan's answer: to its target. The records point into m, which
     * lives through this call: deliver copies or sends them now. */
    deliver(t, s->recs, s->n_recs, s->sums, s->sums_len, s->more);
    topo_pump(t);
}

void topo_on_peer_down(struct topo *t, const uint8_t id[ID_BYTES])
{
    if (t->io_busy && !t->io_local && memcmp(id, t->io_peer, ID_BYTES) == 0)
        topo_io_failed(t, "the link to a stream's peer failed");
}
