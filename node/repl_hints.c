/* Replication's hint replay: hints held for an owner that is up again are
 * offered to it a batch at a time and dropped once it has them; hints for an
 * owner that left go to the key's replicas as they are now (repl_int.h). */
#include "repl_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hint replay ---- */

void repl_replay_end(struct repl *r)
{
    if (!r->replay.active)
        return;
    storage_hints_free(r->replay.recs, r->replay.n);
    free(r->replay.items);
    memset(&r->replay, 0, sizeof(r->replay));
}

/* A target of the replayed hint with this request id answered. Once every
 * target has the record durably the hint can go; one failure keeps it for
 * a later round. */
void repl_replay_answer(struct repl *r, const uint8_t from[ID_BYTES],
                        uint64_t id, int code)
{
    struct replay *rp = &r->replay;
    if (!rp->active || id < rp->first_id || id - rp->first_id >= rp->n)
        return;
    size_t i = (size_t)(id - rp->first_id);
    struct replay_item *it = &rp->items[i];
    size_t j = 0;
    while (j < it->n_targets && memcmp(it->targets[j], from, ID_BYTES) != 0)
        j++;
    if (it->done || j == it->n_targets || (it->answered & (1u << j)))
        return;
    it->answered |= (uint16_t)(1u << j);
    if (code == 0 && it->answered != (1u << it->n_targets) - 1)
        return;
    it->done = true;
    rp->open--;
    if (code == 0) {
        /* The hint can go (unless a newer one arrived meanwhile; storage
         * checks). */
        struct storage_record h = rp->recs[i];
        h.value_len = 0; /* a deletion needs the key, version and origin */
        repl_local_submit(r, repl_local_write_new(&h, LW_HINT_DEL,
                                                  STORAGE_DEL_HINT, rp->owner));
        r->counters.hints_replayed++;
    }
    if (rp->open == 0)
        repl_replay_end(r);
}

/* Sends one hinted record to its targets: the owner, or, when the owner is
 * gone, the key's replicas now (all of them up, or it waits for a later
 * round). */
static void replay_send(struct repl *r, size_t i)
{
    struct replay *rp = &r->replay;
    struct replay_item *it = &rp->items[i];
    const struct storage_record *rec = &rp->recs[i];
    uint64_t id = rp->first_id + i;
    if (!rp->rehome) {
        it->n_targets = 1;
        memcpy(it->targets[0], rp->owner, ID_BYTES);
    } else {
        size_t idx[REPL_MAX_REPLICAS];
        size_t n =
            ring_preference_list(r->ring, storage_token(rec->key, rec->key_len),
                                 &r->cfg.placement, idx);
        bool all_up = n > 0;
        for (size_t k = 0; k < n; k++) {
            memcpy(it->targets[k], r->ring_info[idx[k]].id, ID_BYTES);
            all_up &= repl_node_up(r, it->targets[k]);
        }
        it->n_targets = (uint8_t)n;
        if (!all_up) {
            it->done = true;
            rp->open--;
            return;
        }
    }
    for (size_t k = 0; k < it->n_targets; k++) {
        if (!repl_is_self(r, it->targets[k])) {
            repl_send_write(r, it->targets[k], id, rec, NULL);
            continue;
        }
        struct local_write *lw =
            repl_local_write_new(rec, LW_REHOME, STORAGE_PUT, NULL);
        if (lw)
            lw->req_id = id;
        repl_local_submit(r, lw);
    }
}

/* Offers a batch of hints to the next owner (round robin) that is alive,
 * or to the keys' replicas now when the owner has left the ring. */
void repl_replay_start(struct repl *r)
{
    uint8_t owners[MAX_HINT_OWNERS][ID_BYTES];
    size_t n = 0;
    if (!r->env.store->hint_owners ||
        r->env.store->hint_owners(r->env.store_ctx, owners, MAX_HINT_OWNERS,
                                  &n) ||
        n == 0)
        return;
    size_t start = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(owners[i], r->last_owner, ID_BYTES) > 0) {
            start = i;
            break;
        }
    for (size_t k = 0; k < n; k++) {
        const uint8_t *owner = owners[(start + k) % n];
        const struct wire_member *w = repl_member_info(r, owner);
        /* Until this node has joined, an owner missing from its view may
         * only be unknown to it yet. */
        bool gone = !w || w->status == MEMBER_LEFT;
        if (repl_is_self(r, owner) ||
            (gone ? !r->ready || !r->ring : w->status != MEMBER_ALIVE))
            continue;
        struct replay *rp = &r->replay;
        if (r->env.store->hints(r->env.store_ctx, owner, REPLAY_BATCH,
                                &rp->recs, &rp->n) ||
            rp->n == 0) {
            if (rp->recs)
                storage_hints_free(rp->recs, rp->n);
            rp->recs = NULL;
            rp->n = 0;
            continue;
        }
        rp->items = calloc(rp->n, sizeof(*rp->items));
        if (!rp->items) {
            storage_hints_free(rp->recs, rp->n);
            rp->recs = NULL;
            rp->n = 0;
            return;
        }
        rp->active = true;
        rp->rehome = gone;
        memcpy(rp->owner, owner, ID_BYTES);
        memcpy(r->last_owner, owner, ID_BYTES);
        rp->first_id = r->next_id;
        r->next_id += rp->n;
        rp->open = rp->n;
        rp->deadline = r->env.now_ms(r->env.ctx) + r->cfg.request_timeout_ms;
        for (size_t i = 0; i < rp->n; i++)
            replay_send(r, i);
        if (rp->open == 0)
            repl_replay_end(r);
        return;
    }
}
