/* Ownership changes: phases, agreement, who drives what (topo.h,
 * topo_int.h). */
#include "topo_int.h"

#include <stdio.h>
#include <stdlib.h>

void topo_config_defaults(struct topo_config *cfg)
{
    *cfg = (struct topo_config){.vnodes = RING_DEFAULT_VNODES,
                                .stream_bytes_s = 50ull << 20,
                                .batch_bytes = 1u << 20,
                                .poll_ms = 200,
                                .io_timeout_ms = 10000,
                                .retry_ms = 200,
                                .stall_ms = 60000,
                                .takeover_ms = 10000};
    ring_placement_set_n(&cfg->placement, 3);
}

struct topo *topo_new(const struct topo_config *cfg, const struct env *env,
                      const uint8_t self[ID_BYTES], struct membership *m,
                      struct repl *r)
{
    struct topo *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cfg = *cfg;
    t->env = *env;
    memcpy(t->self, self, ID_BYTES);
    t->m = m;
    t->r = r;
    t->start_phase = membership_get(m, 0)->info.ring;
    t->next_id = 1 + ((env->random ? env->random(env->ctx) : 0) >> 2);
    return t;
}

void topo_hints_free(struct topo *t);

void topo_free(struct topo *t)
{
    if (!t)
        return;
    ring_free(t->before);
    topo_hints_free(t);
    free(t->tasks);
    free(t);
}

/* ---- what is in the way ---- */

/* Another member whose change is in the way of subject's (NULL: none):
 * any other changing member when flip is false (a change starts only
 * alone); when flip is true (subject is about to flip who is read), one
 * that has flipped, or one with a lower id. */
static const struct wire_member *in_the_way(struct topo *t,
                                            const uint8_t *subject, bool flip)
{
    size_t n = membership_size(t->m);
    for (size_t i = 0; i < n; i++) {
        const struct wire_member *w = &membership_get(t->m, i)->info;
        if (memcmp(w->id, subject, ID_BYTES) == 0 || w->status == MEMBER_LEFT ||
            !changing(w->ring))
            continue;
        if (!flip || flipped(w->ring) || memcmp(w->id, subject, ID_BYTES) < 0)
            return w;
    }
    return NULL;
}

static void describe(const struct wire_member *w, char *buf, size_t cap)
{
    char hex[2 * ID_BYTES + 1];
    hex_encode(hex, w->id, ID_BYTES);
    snprintf(buf, cap, "member %.12s (%s) is %s", hex, w->addr,
             ring_phase_name(w->ring));
}

/* ---- progress to the client ---- */

static void send_report(struct topo *t, void *client, uint64_t id, bool final,
                        int code, const char *text)
{
    struct msg m = {.type = MSG_REPAIR_RESULT, .id = id};
    struct msg_repair_result *res = &m.u.repair_result;
    res->final = final;
    res->code = code;
    res->text = text ? text : "";
    res->text_len = text ? strlen(text) : 0;
    res->done = (uint32_t)t->counters.ranges_done;
    res->total = (uint32_t)t->counters.ranges_total;
    res->bytes_sent = t->counters.bytes_out;
    res->bytes_received = t->counters.bytes_in;
    res->pushed = t->counters.records_in;
    t->env.reply(t->env.ctx, client, &m);
}

static void report(struct topo *t, bool final, int code, const char *text)
{
    if (!t->client)
        return;
    send_report(t, t->client, t->client_id, final, code, text);
    if (final)
        t->client = NULL;
}

/* A removenode asked here: its client hears how the removal goes, whoever
 * drives it (the live normal member with the lowest id). */
static void watch_tick(struct topo *t)
{
    if (!t->watch_client)
        return;
    const struct wire_member *w = member(t, t->watch_id);
    char hex[2 * ID_BYTES + 1], text[200];
    hex_encode(hex, t->watch_id, ID_BYTES);
    int code = -1;
    if (!w || w->status == MEMBER_LEFT) {
        code = 0;
        snprintf(text, sizeof(text), "removal of %.12s done", hex);
    } else if (w->ring == RING_NORMAL || w->ring == RING_WAITING) {
        code = KV_ERR_UNAVAILABLE;
        snprintf(text, sizeof(text),
                 "the removal of %.12s could not finish and was undone; "
                 "the driving node's log says why",
                 hex);
    } else if (now(t) < t->watch_next) {
        return;
    } else {
        t->watch_next = now(t) + 1000;
        snprintf(text, sizeof(text), "removal of %.12s: %s", hex,
                 ring_phase_name(w->ring));
    }
    send_report(t, t->watch_client, t->watch_client_id, code >= 0,
                code >= 0 ? code : 0, text);
    if (code >= 0)
        t->watch_client = NULL;
}

void topo_put_progress(struct topo *t, const uint8_t *blob, size_t n);

static void end_change(struct topo *t, int code, const char *text)
{
    if (code == 0)
        t->counters.changes_done++;
    if (code == 0)
        log_info("ownership change done: %s", text);
    else
        log_warn("ownership change ended: %s", text);
    report(t, true, code, text);
    if (t->n_tasks)
        topo_put_progress(t, NULL, 0); /* done, or undone: nothing to resume */
    free(t->tasks);
    t->tasks = NULL;
    t->n_tasks = t->cap = t->cur = 0;
    ring_free(t->before);
    t->before = NULL;
    topo_hints_free(t);
    t->kind = CH_NONE;
    t->decommissioned = false;
    t->start_phase = RING_NORMAL; /* what it resumed is over */
    t->io_busy = false;
    t->state[0] = '\0';
}

/* Undoes a change that has not flipped who is read: safe, as only extra
 * copies were written (DESIGN §7b). */
static void revert(struct topo *t, const char *why)
{
    uint8_t back = t->kind == CH_JOIN ? RING_WAITING : RING_NORMAL;
    membership_set_ring(t->m, t->subject, back);
    char text[300];
    snprintf(text, sizeof(text),
             "%s: one ownership change at a time; nothing moved", why);
    end_change(t, KV_ERR_BUSY, text);
}

/* ---- agreement ---- */

void topo_start_round(struct topo *t)
{
    t->round_id = t->next_id;
    t->round_digest = repl_digest(t->r);
    t->round_want = t->round_same = t->round_got = 0;
    t->round_other = false;
    size_t n = membership_size(t->m);
    for (size_t i = 1; i < n; i++) {
        const struct wire_member *w = &membership_get(t->m, i)->info;
        if (!live(w->status))
            continue;
        struct msg q = {.type = MSG_STREAM, .id = t->next_id++};
        q.u.stream.op = STREAM_DIGEST;
        q.u.stream.digest = t->round_digest;
        send(t, w->id, &q);
        t->round_want++;
    }
    /* ids of this round: [round_id, next_id) */
    t->round_end = now(t) + t->cfg.poll_ms * 5;
    t->next_round = now(t) + t->cfg.poll_ms;
}

/* True once every live member answered this round with our digest, and
 * ours did not change meanwhile. */
static bool agreed(struct topo *t)
{
    return t->round_same == t->round_want && !t->round_other &&
           repl_digest(t->r) == t->round_digest;
}

/* ---- driving a change ---- */

static void begin(struct topo *t, uint8_t kind, const uint8_t *subject)
{
    t->kind = kind;
    memcpy(t->subject, subject, ID_BYTES);
    t->p1 = kind == CH_JOIN ? RING_JOINING : RING_LEAVING;
    t->p2 = kind == CH_JOIN ? RING_JOINED : RING_LEFT;
    t->step = S_AGREE_A;
    t->io_busy = false;
    t->backoff = 0;
    t->last_progress = now(t);
    t->counters.ranges_total = t->counters.ranges_done = 0;
    const struct wire_member *w = member(t, subject);
    if (w && w->ring != t->p1 && w->ring != t->p2)
        membership_set_ring(t->m, subject, t->p1);
    /* A change resumed after a crash may be past its first phase. */
    if (w && w->ring == t->p2)
        t->step = S_AGREE_C;
    topo_start_round(t);
}

static const char *kind_name(uint8_t kind)
{
    return kind == CH_JOIN           ? "join"
           : kind == CH_DECOMMISSION ? "decommission"
                                     : "removal";
}

/* The live normal member with the lowest id drives removals. */
static bool removal_driver(struct topo *t)
{
    size_t n = membership_size(t->m);
    for (size_t i = 1; i < n; i++) {
        const struct wire_member *w = &membership_get(t->m, i)->info;
        if (live(w->status) && w->ring == RING_NORMAL &&
            memcmp(w->id, t->self, ID_BYTES) < 0)
            return false;
    }
    return true;
}

static bool seen_leaving(const struct topo *t, const uint8_t *id)
{
    for (size_t i = 0; i < t->n_leaving; i++)
        if (memcmp(t->leaving[i], id, ID_BYTES) == 0)
            return true;
    return false;
}

/* kvnode --replace: the member must be one the cluster holds dead and
 * normal; else the node stops (exit 2). */
static bool check_replace(struct topo *t)
{
    const struct wire_member *w = member(t, t->cfg.replace_id);
    char hex[2 * ID_BYTES + 1];
    hex_encode(hex, t->cfg.replace_id, ID_BYTES);
    if (!w || w->status == MEMBER_LEFT || is_self(t, t->cfg.replace_id))
        snprintf(t->failed, sizeof(t->failed),
                 "--replace %s: no such member in the cluster", hex);
    else if (live(w->status))
        snprintf(t->failed, sizeof(t->failed),
                 "--replace %s: that member (%s) is alive; stop it first, "
                 "or start this node without --replace",
                 hex, w->addr);
    else if (w->ring != RING_NORMAL)
        snprintf(t->failed, sizeof(t->failed),
                 "--replace %s: that member is %s", hex,
                 ring_phase_name(w->ring));
    if (t->failed[0])
        return false;
    log_info("replacing %.12s (%s): this node joins, then it is removed", hex,
             w->addr);
    t->replace_checked = true;
    return true;
}

/* Remembers the members seen leaving while alive (decommissions), and
 * forgets those that are no longer leaving. */
static void note_leaving(struct topo *t)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n_leaving; i++) {
        const struct wire_member *w = member(t, t->leaving[i]);
        if (w && w->status != MEMBER_LEFT &&
            (w->ring == RING_LEAVING || w->ring == RING_LEFT))
            memmove(t->leaving[k++], t->leaving[i], ID_BYTES);
    }
    t->n_leaving = k;
    size_t n = membership_size(t->m);
    for (size_t i = 1; i < n && t->n_leaving < MAX_LEAVING; i++) {
        const struct wire_member *w = &membership_get(t->m, i)->info;
        if (live(w->status) &&
            (w->ring == RING_LEAVING || w->ring == RING_LEFT) &&
            !seen_leaving(t, w->id))
            memcpy(t->leaving[t->n_leaving++], w->id, ID_BYTES);
    }
}

/* Looks for a change this node should drive. */
static void look_for_change(struct topo *t, bool joined)
{
    const struct wire_member *me = &membership_get(t->m, 0)->info;
    if (!joined || !live(me->status))
        return;
    size_t n = membership_size(t->m);
    /* Our own join or decommission, resumed after a crash. */
    if (me->ring == RING_JOINING || me->ring == RING_JOINED) {
        begin(t, CH_JOIN, t->self);
        return;
    }
    /* Only a decommission this node began: leaving is also what a node
     * learns when it comes back in the middle of its removal, and then
     * the removal goes on without it (its store may be stale or empty). */
    if ((me->ring == RING_LEAVING || me->ring == RING_LEFT) &&
        (t->start_phase == RING_LEAVING || t->start_phase == RING_LEFT ||
         t->decommissioned)) {
        begin(t, CH_DECOMMISSION, t->self);
        return;
    }
    /* A removal: the live normal member with the lowest id drives it (so
     * another takes over when it goes away). It also ends the changes of
     * members that died in the middle, once they have been dead a while
     * (a restart takes its own change up again): a join that had not
     * flipped reads is undone, one that had is finished, and a
     * decommission becomes a removal (the survivors stream instead). */
    if (me->ring == RING_NORMAL && removal_driver(t)) {
        uint64_t tnow = now(t);
        for (size_t i = 1; i < n; i++) {
            const struct member_view *v = membership_get(t->m, i);
            const struct wire_member *w = &v->info;
            if (live(w->status) || w->status == MEMBER_LEFT ||
                !changing(w->ring))
                continue;
            /* A member that was decommissioning when it went down may be
             * restarting (it takes its decommission up again): it gets
             * stall_ms; one put to leaving while already dead (removenode)
             * none; a joiner takeover_ms. */
            uint64_t grace = w->ring == RING_JOINING || w->ring == RING_JOINED
                                 ? t->cfg.takeover_ms
                             : seen_leaving(t, w->id) ? t->cfg.stall_ms
                                                      : 0;
            if (tnow - v->changed_ms < grace)
                continue;
            if (w->ring == RING_JOINING) {
                log_info("member %s died while joining: its join is undone",
                         w->addr);
                membership_set_ring(t->m, w->id, RING_WAITING);
                return;
            }
            begin(t, w->ring == RING_JOINED ? CH_JOIN : CH_REMOVE, w->id);
            return;
        }
    }
    if (me->ring != RING_WAITING)
        return;
    if (t->cfg.replace && !t->replace_checked && !check_replace(t))
        return;
    /* Our turn to join: nobody changing, no live waiting member with a
     * lower id. With no member on the read ring at all, no data has ever
     * been placed: the first waiting member forms the ring at once. */
    bool any_read = false;
    for (size_t i = 1; i < n; i++) {
        const struct wire_member *w = &membership_get(t->m, i)->info;
        if (w->status == MEMBER_LEFT)
            continue;
        if (changing(w->ring))
            return;
        any_read |= w->ring == RING_NORMAL;
        if (w->ring == RING_WAITING && live(w->status) &&
            memcmp(w->id, t->self, ID_BYTES) < 0)
            return;
    }
    if (!any_read) {
        log_info("no member owns any range yet: this node forms the ring");
        membership_set_ring(t->m, t->self, RING_NORMAL);
        return;
    }
    log_info("joining: streaming the ranges this node will own");
    begin(t, CH_JOIN, t->self);
}

static void next_step(struct topo *t)
{
    char why[160];
    const struct wire_member *w;
    switch (t->step) {
    case S_AGREE_A:
        if ((w = in_the_way(t, t->subject, true))) {
            describe(w, why, sizeof(why));
            revert(t, why);
            return;
        }
        if (topo_plan(t) != 0) {
            topo_io_failed(t, "out of memory planning the streams");
            topo_start_round(t);
            return;
        }
        topo_restore_progress(t);
        log_info("%s: %zu stream(s) to run", kind_name(t->kind), t->n_tasks);
        t->step = S_STREAM;
        t->next_io = t->throttle_start = now(t);
        t->throttle_bytes = 0;
        return;
    case S_AGREE_B:
        if ((w = in_the_way(t, t->subject, true))) {
            describe(w, why, sizeof(why));
            revert(t, why);
            return;
        }
        membership_set_ring(t->m, t->subject, t->p2);
        t->step = S_AGREE_C;
        topo_start_round(t);
        return;
    default: { /* S_AGREE_C: the change is done */
        char text[160];
        char hex[2 * ID_BYTES + 1];
        hex_encode(hex, t->subject, ID_BYTES);
        snprintf(text, sizeof(text), "%s of %.12s done: %llu ranges streamed",
                 kind_name(t->kind), hex,
                 (unsigned long long)t->counters.ranges_done);
        if (t->kind == CH_JOIN) {
            membership_set_ring(t->m, t->subject, RING_NORMAL);
            if (t->cfg.replace && t->replace_checked &&
                is_self(t, t->subject)) {
                /* The member replaced is removed now: its ranges go to
                 * their owners (this node among them). */
                t->cfg.replace = false;
                end_change(t, 0, text);
                const struct wire_member *x = member(t, t->cfg.replace_id);
                if (x && !live(x->status) && x->status != MEMBER_LEFT &&
                    !changing(x->ring)) {
                    membership_set_ring(t->m, t->cfg.replace_id, RING_LEAVING);
                    if (removal_driver(t))
                        begin(t, CH_REMOVE, t->cfg.replace_id);
                }
                return;
            }
        } else if (t->kind == CH_REMOVE) {
            membership_remove(t->m, t->subject);
        } else {
            /* Hints held here are for others: the replay hands them on
             * while the node drains; then it is gone. */
            end_change(t, 0, text);
            membership_leave(t->m);
            t->gone = true;
            return;
        }
        end_change(t, 0, text);
        return;
    }
    }
}

void topo_tick(struct topo *t, bool joined)
{
    watch_tick(t);
    note_leaving(t);
    if (t->kind == CH_NONE) {
        look_for_change(t, joined);
        if (t->kind == CH_NONE)
            return;
    }
    uint64_t tnow = now(t);
    /* The subject's phase was changed under us (a revert elsewhere, or a
     * removed member came back and refuted): stop driving. */
    const struct wire_member *w = member(t, t->subject);
    if (!w || w->status == MEMBER_LEFT ||
        (w->ring != t->p1 && w->ring != t->p2)) {
        end_change(t, KV_ERR_UNAVAILABLE,
                   "the change was undone by another member");
        return;
    }
    /* A member being removed that comes back stays out of it: its ranges
     * still come from the survivors (its own copy may be stale, or gone),
     * and it is told it was removed at the end. */
    snprintf(t->state, sizeof(t->state), "%s %s: %llu/%llu ranges",
             kind_name(t->kind),
             t->step == S_STREAM ? "streaming" : "waiting for agreement",
             (unsigned long long)t->counters.ranges_done,
             (unsigned long long)t->counters.ranges_total);
    /* A decommission or removal that cannot go on is undone before it
     * flips who is read: the member stays, and nothing is lost. */
    if (t->kind != CH_JOIN && t->step != S_AGREE_C &&
        tnow - t->last_progress > t->cfg.stall_ms) {
        char why[200];
        snprintf(why, sizeof(why),
                 "cannot finish: no progress for %u s (%s); the member "
                 "stays, nothing moved",
                 (unsigned)(t->cfg.stall_ms / 1000), t->state);
        uint8_t back = RING_NORMAL;
        membership_set_ring(t->m, t->subject, back);
        end_change(t, KV_ERR_UNAVAILABLE, why);
        return;
    }
    if (t->client && tnow >= t->next_progress) {
        t->next_progress = tnow + 1000;
        report(t, false, 0, t->state);
    }
    if (t->step == S_HINTS) {
        if (t->io_busy && !t->io_local && tnow >= t->io_deadline)
            topo_io_failed(t, "hints handed on were not acknowledged in time");
        topo_hints_pump(t);
        return;
    }
    if (t->step == S_STREAM) {
        if (t->progress_dirty && tnow - t->progress_at >= 1000)
            topo_save_progress(t);
        if (t->io_busy && !t->io_local && tnow >= t->io_deadline)
            topo_io_failed(t, "a stream's peer did not answer in time");
        topo_pump(t);
        return;
    }
    if (agreed(t)) {
        t->last_progress = tnow;
        next_step(t);
        return;
    }
    bool answered = t->round_got >= t->round_want;
    if ((answered && tnow >= t->next_round) || tnow >= t->round_end)
        topo_start_round(t);
}

/* ---- requests ---- */

int topo_request(struct topo *t, void *client, uint64_t id,
                 const struct msg_topo *q, char *buf, size_t cap)
{
    if (t->kind != CH_NONE) {
        snprintf(buf, cap, "this node is already driving a %s",
                 kind_name(t->kind));
        return KV_ERR_BUSY;
    }
    const uint8_t *subject = q->op == TOPO_DECOMMISSION ? t->self : q->node;
    const struct wire_member *w = member(t, subject);
    if (!w || w->status == MEMBER_LEFT) {
        snprintf(buf, cap, "no member with that id in this node's view");
        return KV_ERR_NOT_FOUND;
    }
    if (q->op == TOPO_REMOVENODE) {
        if (is_self(t, subject) || live(w->status)) {
            snprintf(buf, cap,
                     "%s is %s: removenode takes a dead member; run kvcli "
                     "decommission on a live one",
                     is_self(t, subject) ? "this node" : w->addr,
                     is_self(t, subject) ? "alive" : "alive");
            return KV_ERR_INVAL;
        }
    }
    if (w->ring != RING_NORMAL) {
        snprintf(buf, cap, "%s is %s, not normal", w->addr,
                 ring_phase_name(w->ring));
        return KV_ERR_INVAL;
    }
    const struct wire_member *other = in_the_way(t, subject, false);
    if (other) {
        char why[160];
        describe(other, why, sizeof(why));
        snprintf(buf, cap,
                 "%s: one ownership change at a time; try again "
                 "when it is done",
                 why);
        return KV_ERR_BUSY;
    }
    /* The owners that would be left, in the leaving node's region when
     * replicas are counted per region. */
    const struct ring_placement *p = &t->cfg.placement;
    const struct wire_member *me = w;
    unsigned factor = p->n;
    for (size_t i = 0; i < p->n_regions; i++)
        if (strcmp(p->regions[i].name, me->region) == 0)
            factor = p->regions[i].count;
    size_t owners = 0, local = 0, n = membership_size(t->m);
    for (size_t i = 0; i < n; i++) {
        const struct wire_member *x = &membership_get(t->m, i)->info;
        bool owns = x->status != MEMBER_LEFT && x->ring == RING_NORMAL;
        owners += owns;
        local += owns && (!p->n_regions || !strcmp(x->region, me->region));
    }
    if (q->op == TOPO_DECOMMISSION && local - 1 < factor && !q->force) {
        snprintf(buf, cap,
                 "refused: %zu node(s) would be left%s%s, fewer than the "
                 "replication factor %u; add a node first, or use --force",
                 local - 1, p->n_regions ? " in region " : "",
                 p->n_regions ? me->region : "", factor);
        return KV_ERR_INVAL;
    }
    if (q->op == TOPO_DECOMMISSION && owners == 1) {
        snprintf(buf, cap, "refused: this node is the only owner");
        return KV_ERR_INVAL;
    }
    if (q->op == TOPO_REMOVENODE) {
        if (t->watch_client) {
            snprintf(buf, cap, "a removenode asked here is still running");
            return KV_ERR_BUSY;
        }
        memcpy(t->watch_id, subject, ID_BYTES);
        t->watch_client = client;
        t->watch_client_id = id;
        t->watch_next = 0;
        membership_set_ring(t->m, subject, RING_LEAVING);
        if (removal_driver(t))
            begin(t, CH_REMOVE, subject); /* no need to wait: it is ours */
        return 0;
    }
    t->client = client;
    t->client_id = id;
    t->next_progress = 0;
    t->decommissioned = true;
    begin(t, CH_DECOMMISSION, subject);
    return 0;
}

void topo_client_gone(struct topo *t, void *client)
{
    if (t->client == client)
        t->client = NULL;
    if (t->watch_client == client)
        t->watch_client = NULL;
}

bool topo_gone(const struct topo *t)
{
    return t->gone;
}

const char *topo_failed(const struct topo *t)
{
    return t->failed[0] ? t->failed : NULL;
}

bool topo_busy(const struct topo *t)
{
    return t->inflight > 0;
}

const struct topo_counters *topo_counters(const struct topo *t)
{
    return &t->counters;
}

const char *topo_state(const struct topo *t)
{
    return t->kind == CH_NONE ? "" : t->state;
}
