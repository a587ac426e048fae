/* kvnode's node-to-node transport over libev (transport.h).
 *
 * - Links: one per peer, found by the member id its key proved, carrying
 *   replica, anti-entropy and push-pull messages both ways. An outbound link
 *   to a known member is kept only if the handshake proves the member holds
 *   the static key its id names; a push-pull is taken only if its sender id
 *   is the hash of the key the link proved.
 * - Datagrams: probes on the UDP socket, each sealed with the gossip key
 *   (crypto/seal.c); one that fails authentication is dropped and counted
 *   before anything in it is parsed.
 * - Faults: drop, delay, duplicate, reorder and corrupt, and blocks, for
 *   links and datagrams alike, through node/fault.c. */
#include "transport.h"

#include "conn.h"

#include "../common/common.h"
#include "core.h"
#include "fault.h"
#include "node.h"

#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define UDP_BUF (GOSSIP_UDP_MAX + SEAL_OVERHEAD)
/* A failed dial waits 50 ms, doubling per failure up to this, before the
 * same address is dialled again. */
#define DIAL_BACKOFF_MAX_MS 1000
#define BACKOFFS 64
/* A reordered datagram is held back 5 to 50 ms. */
#define REORDER_MIN_MS 5
#define REORDER_SPAN_MS 46
/* Output to a peer is bounded (security review M4). A peer that reads
 * slowly pushes back: past PEER_SLOW_BOUND bytes queued on its link, with
 * bytes still moving, the node takes no new client writes
 * (transport_slow). A peer that stops reading is cut off: past
 * PEER_OUT_BOUND bytes (beyond one largest message), what is sent to it
 * fails as if it were down (writes become hints), and a link whose output
 * has not moved for LINK_STALL_MS is closed. Links never stop reading for
 * their own output: two busy nodes cannot wait on each other. */
#define PEER_SLOW_BOUND (8u << 20)
#define PEER_OUT_BOUND (32u << 20)
#define PEER_MOVING_MS 1000
#define LINK_STALL_MS 10000

/* ---- the transport ---- */

/* A message to a peer waiting for the link's handshake to finish, or held
 * back by the fault layer until due_ms. */
struct outq {
    struct outq *next;
    uint64_t due_ms;
    struct fault_verdict verdict;
    bool gossip;
    size_t len;
    uint8_t buf[];
};

struct link {
    struct transport *t;
    struct conn *c;
    bool has_id;                           /* node_id is known */
    uint8_t node_id[CRYPTO_NODE_ID_BYTES]; /* from the key it proved */
    bool check_key;                        /* outbound to a known member */
    uint8_t expect_key[CRYPTO_KEY_BYTES];
    char dial_addr[GOSSIP_ADDR_MAX];  /* outbound: the address dialled */
    char fault_peer[GOSSIP_ADDR_MAX]; /* its listen address, if known */
    size_t bytes_slot; /* 1 + its t->bytes index, once looked up; 0: not */
    bool asked;        /* this node sent requests on it */
    struct outq *q, *q_tail; /* not yet sent */
    ev_timer q_w;            /* the fault layer's delays */
    uint8_t *held;           /* fault layer: a reordered message */
    size_t held_len;
    struct link *prev, *next;
};

/* A datagram the fault layer holds back (delay, reorder): one to send, or
 * one received and not yet looked at. */
struct held_dgram {
    struct held_dgram *next;
    uint64_t due_ms;
    bool inbound;
    struct sockaddr_storage sa; /* outbound: where to */
    socklen_t sl;
    char src[GOSSIP_ADDR_MAX]; /* inbound: whence */
    size_t len;
    uint8_t pkt[];
};

/* Bytes exchanged with one member, by its gossiped address (kvcli status
 * sums them per remote region). */
struct peer_bytes {
    char addr[GOSSIP_ADDR_MAX];
    uint64_t out, in;
};
#define MAX_PEER_BYTES 4096

struct backoff {
    char addr[GOSSIP_ADDR_MAX];
    unsigned fails;
    uint64_t until_ms;
};

struct transport {
    struct ev_loop *loop;
    const struct node_config *cfg;
    struct core *core;
    uint8_t node_priv[CRYPTO_KEY_BYTES];
    uint8_t cluster_secret[CRYPTO_KEY_BYTES];
    struct sealer sealer;
    struct transport_counters counters;
    struct fault *fault; /* NULL: no fault injection */
    struct link *links;
    struct backoff backoff[BACKOFFS];
    /* links that failed with requests on them, not yet told to the core */
    ev_timer down_w;
    uint8_t (*down)[CRYPTO_NODE_ID_BYTES];
    size_t n_down, cap_down;
    int udp_fd;
    ev_io udp_w;
    struct held_dgram *held; /* by due time */
    ev_timer held_w;
    struct peer_bytes *bytes;
    size_t n_bytes, cap_bytes;
    transport_access_fn on_access; /* MSG_ACCESS_SET, for the server */
    void *access_arg;
};

static struct peer_bytes *bytes_of(struct transport *t, const char *addr)
{
    if (!addr || !addr[0])
        return NULL;
    for (size_t i = 0; i < t->n_bytes; i++)
        if (strcmp(t->bytes[i].addr, addr) == 0)
            return &t->bytes[i];
    if (t->n_bytes == t->cap_bytes) {
        size_t cap = t->cap_bytes ? 2 * t->cap_bytes : 16;
        void *p = cap <= MAX_PEER_BYTES
                      ? realloc(t->bytes, cap * sizeof(*t->bytes))
                      : NULL;
        if (!p)
            return NULL;
        t->bytes = p;
        t->cap_bytes = cap;
    }
    struct peer_bytes *b = &t->bytes[t->n_bytes++];
    memset(b, 0, sizeof(*b));
    snprintf(b->addr, sizeof(b->addr), "%s", addr);
    return b;
}

static void count_bytes(struct transport *t, const char *addr, size_t out,
                        size_t in)
{
    struct peer_bytes *b = bytes_of(t, addr);
    if (b) {
        b->out += out;
        b->in += in;
    }
}

size_t transport_peer_max_msg(const struct node_config *cfg)
{
    size_t n = (size_t)cfg->max_value + cfg->max_key + PROTO_MSG_OVERHEAD;
    return n > PROTO_PEER_MSG_MIN ? n : PROTO_PEER_MSG_MIN;
}

/* count_bytes for a link: its slot is looked up once, not per message. */
static void count_link_bytes(struct link *l, size_t out, size_t in)
{
    struct transport *t = l->t;
    if (!l->bytes_slot ||
        strcmp(t->bytes[l->bytes_slot - 1].addr, l->fault_peer) != 0) {
        struct peer_bytes *b = bytes_of(t, l->fault_peer);
        if (!b)
            return;
        l->bytes_slot = (size_t)(b - t->bytes) + 1;
    }
    t->bytes[l->bytes_slot - 1].out += out;
    t->bytes[l->bytes_slot - 1].in += in;
}

void transport_peer_bytes(const struct transport *t, const char *addr,
                          uint64_t *out, uint64_t *in)
{
    *out = *in = 0;
    for (size_t i = 0; i < t->n_bytes; i++)
        if (strcmp(t->bytes[i].addr, addr) == 0) {
            *out = t->bytes[i].out;
            *in = t->bytes[i].in;
        }
}

/* Requests sent on a failed link fail too, but not from inside whatever
 * core call is running now: they are reported from the loop. */
static void report_down(struct transport *t,
                        const uint8_t id[CRYPTO_NODE_ID_BYTES])
{
    if (t->n_down == t->cap_down) {
        size_t cap = t->cap_down ? 2 * t->cap_down : 8;
        void *p = realloc(t->down, cap * sizeof(*t->down));
        if (!p)
            return; /* the deadline will end those requests */
        t->down = p;
        t->cap_down = cap;
    }
    memcpy(t->down[t->n_down++], id, CRYPTO_NODE_ID_BYTES);
    ev_timer_start(t->loop, &t->down_w);
}

static void on_down(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport *t = w->data;
    /* The core may report more while this runs; take them all. */
    for (size_t i = 0; i < t->n_down; i++) {
        uint8_t id[CRYPTO_NODE_ID_BYTES];
        memcpy(id, t->down[i], sizeof(id));
        core_on_peer_down(t->core, id);
    }
    t->n_down = 0;
}

static struct backoff *backoff_of(struct transport *t, const char *addr,
                                  bool make)
{
    struct backoff *oldest = &t->backoff[0];
    for (size_t i = 0; i < BACKOFFS; i++) {
        if (strcmp(t->backoff[i].addr, addr) == 0)
            return &t->backoff[i];
        if (t->backoff[i].until_ms < oldest->until_ms)
            oldest = &t->backoff[i];
    }
    if (!make)
        return NULL;
    memset(oldest, 0, sizeof(*oldest));
    snprintf(oldest->addr, sizeof(oldest->addr), "%s", addr);
    return oldest;
}

void transport_member_back(struct transport *t, const char *addr)
{
    struct backoff *b = backoff_of(t, addr, false);
    if (b)
        memset(b, 0, sizeof(*b));
}

/* ---- links ---- */

static void flush_queue(struct link *l);

static void on_queue_due(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    flush_queue(w->data);
}

static void link_free_queue(struct link *l)
{
    while (l->q) {
        struct outq *q = l->q;
        l->q = q->next;
        l->t->counters.peer_failed += q->gossip;
        free(q);
    }
    l->q_tail = NULL;
    free(l->held);
    l->held = NULL;
}

/* Sends what is queued and due, in order, through the fault layer; waits
 * for the handshake first. */
static void flush_queue(struct link *l)
{
    struct transport *t = l->t;
    uint64_t now = conn_loop_ms(t->loop);
    while (l->q && !conn_closed(l->c) && l->c->established) {
        struct outq *q = l->q;
        if (q->due_ms > now) {
            ev_timer_stop(t->loop, &l->q_w);
            ev_timer_set(&l->q_w, (double)(q->due_ms - now) / 1000.0, 0);
            ev_timer_start(t->loop, &l->q_w);
            break;
        }
        l->q = q->next;
        int rc = t->fault
                     ? fault_chan_send(t->fault, l->c->chan, &q->verdict,
                                       q->buf, q->len, &l->held, &l->held_len)
                     : chan_send(l->c->chan, q->buf, q->len);
        free(q);
        if (rc) {
            conn_close(l->c, "send failed");
            return;
        }
    }
    if (!l->q)
        l->q_tail = NULL;
    conn_flush(l->c);
}

/* A message to a peer (consumes buf): at once when the link is up and no
 * fault holds it, else behind what is queued. */
static void link_send(struct link *l, uint8_t *buf, size_t len, bool gossip)
{
    struct transport *t = l->t;
    struct fault_verdict v = {0};
    if (conn_closed(l->c)) {
        free(buf);
        return;
    }
    count_link_bytes(l, len, 0);
    if (t->fault) {
        fault_decide(t->fault, l->fault_peer, FAULT_OUT, FAULT_TCP, &v);
        if (v.drop && fault_blocked(t->fault, l->fault_peer)) {
            free(buf);
            conn_close(l->c, "partitioned from this peer (fault injection)");
            return;
        }
    } else if (l->c->established && !l->q) {
        conn_send(l->c, buf, len);
        free(buf);
        return;
    }
    struct outq *q = malloc(sizeof(*q) + len);
    if (q) {
        q->next = NULL;
        q->due_ms = conn_loop_ms(t->loop) + v.delay_ms;
        q->verdict = v;
        q->gossip = gossip;
        q->len = len;
        memcpy(q->buf, buf, len);
        if (l->q_tail)
            l->q_tail->next = q;
        else
            l->q = q;
        l->q_tail = q;
    }
    free(buf);
    if (l->c->established)
        flush_queue(l);
}

/* The listen address of the member with this id, for the fault layer. */
static void set_fault_peer(struct link *l)
{
    const struct wire_member *w =
        l->t->core ? core_member(l->t->core, l->node_id) : NULL;
    if (w)
        snprintf(l->fault_peer, sizeof(l->fault_peer), "%s", w->addr);
}

static void link_established(struct conn *c)
{
    struct link *l = c->owner;
    struct transport *t = l->t;
    const uint8_t *remote = chan_remote_static(c->chan);
    if (l->check_key &&
        sodium_memcmp(remote, l->expect_key, CRYPTO_KEY_BYTES) != 0) {
        t->counters.peer_rejected++;
        conn_close(c, "the node there does not hold the member's key");
        return;
    }
    crypto_node_id(l->node_id, remote);
    l->has_id = true;
    if (c->outbound) {
        struct backoff *b = backoff_of(t, l->dial_addr, false);
        if (b)
            memset(b, 0, sizeof(*b));
    }
    if (!l->fault_peer[0])
        set_fault_peer(l);
    if (fault_blocked(t->fault, l->fault_peer)) {
        conn_close(c, "partitioned from this peer (fault injection)");
        return;
    }
    flush_queue(l);
}

/* Push-pull state that came over a link. */
static void link_gossip(struct link *l, const uint8_t *buf, size_t len)
{
    struct transport *t = l->t;
    struct gossip_msg m;
    if (gossip_decode(buf, len, &m) != 0) {
        t->counters.undecodable++;
        return;
    }
    if (memcmp(l->node_id, m.from, sizeof(l->node_id)) != 0) {
        t->counters.peer_rejected++;
        log_warn("gossip: refused state from a peer whose id does not match "
                 "its key");
        gossip_msg_free(&m);
        return;
    }
    /* Where the sender says it lives: its own record in the state. */
    const char *src = "";
    for (size_t i = 0; i < m.n_members; i++)
        if (memcmp(m.members[i].id, m.from, sizeof(m.from)) == 0)
            src = m.members[i].addr;
    if (!l->fault_peer[0])
        snprintf(l->fault_peer, sizeof(l->fault_peer), "%s", src);
    if (!fault_blocked(t->fault, src))
        core_on_gossip(t->core, src, &m);
    gossip_msg_free(&m);
}

/* A member's access list: for the server (see transport_set_access_handler). */
static void link_access(struct link *l, const uint8_t *buf, size_t len)
{
    struct transport *t = l->t;
    struct msg m;
    struct msg_limits lim = {PROTO_MAX_KEY, PROTO_MAX_VALUE_LIMIT};
    if (!l->has_id || !core_member(t->core, l->node_id)) {
        t->counters.peer_rejected++; /* members only */
        return;
    }
    if (msg_decode(buf, len, &lim, &m) != 0) {
        t->counters.undecodable++;
        conn_close(l->c, "malformed node message");
        return;
    }
    if (t->on_access)
        t->on_access(t->access_arg, l->node_id, &m);
    msg_free(&m);
}

void transport_set_access_handler(struct transport *t, transport_access_fn fn,
                                  void *arg)
{
    t->on_access = fn;
    t->access_arg = arg;
}

static void link_message(struct conn *c, const uint8_t *buf, size_t len)
{
    struct link *l = c->owner;
    struct transport *t = l->t;
    count_link_bytes(l, 0, len);
    if (fault_blocked(t->fault, l->fault_peer)) {
        conn_close(c, "partitioned from this peer (fault injection)");
        return;
    }
    switch (proto_peer_kind(buf, len)) {
    case PROTO_PEER_GOSSIP:
        link_gossip(l, buf, len);
        return;
    case PROTO_PEER_NODE:
        if (msg_peek_type(buf, len) == MSG_ACCESS_SET) {
            link_access(l, buf, len);
            return;
        }
        if (core_on_peer_message(t->core, l->node_id, buf, len) != 0)
            conn_close(c, "malformed node message");
        return;
    default:
        t->counters.undecodable++;
        conn_close(c, "not a node-to-node message");
        return;
    }
}

static void link_refused(struct conn *c, int rc)
{
    struct link *l = c->owner;
    if (!c->established) {
        l->t->counters.peer_rejected++;
        return;
    }
    l->t->counters.frames_rejected++;
    log_warn("%s: node-to-node frame refused (%s); closing the channel",
             c->addr, kv_strerror(rc));
}

/* Takes l off the transport's list and frees it. */
static void link_free(struct link *l)
{
    struct transport *t = l->t;
    if (l->prev)
        l->prev->next = l->next;
    else
        t->links = l->next;
    if (l->next)
        l->next->prev = l->prev;
    free(l);
}

static void link_closed(struct conn *c)
{
    struct link *l = c->owner;
    struct transport *t = l->t;
    if (l->asked && (l->has_id || l->check_key))
        report_down(t, l->node_id);
    if (c->outbound && !c->established) {
        struct backoff *b = backoff_of(t, l->dial_addr, true);
        b->fails++;
        unsigned shift = b->fails < 6 ? b->fails : 6;
        uint64_t wait = (uint64_t)50 << shift;
        b->until_ms = conn_loop_ms(t->loop) +
                      (wait < DIAL_BACKOFF_MAX_MS ? wait : DIAL_BACKOFF_MAX_MS);
    }
    link_free_queue(l);
    ev_timer_stop(t->loop, &l->q_w);
    link_free(l);
}

static const struct conn_ops link_ops = {
    .established = link_established,
    .message = link_message,
    .refused = link_refused,
    .closed = link_closed,
};

static struct link *link_new(struct transport *t)
{
    struct link *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->t = t;
    ev_init(&l->q_w, on_queue_due);
    l->q_w.data = l;
    l->next = t->links;
    if (t->links)
        t->links->prev = l;
    t->links = l;
    return l;
}

/* An open link to the node with this id (either direction), or NULL. */
static struct link *find_link(struct transport *t,
                              const uint8_t id[CRYPTO_NODE_ID_BYTES])
{
    for (struct link *l = t->links; l; l = l->next)
        if (!conn_closed(l->c) && (l->has_id || l->check_key) &&
            memcmp(l->node_id, id, CRYPTO_NODE_ID_BYTES) == 0)
            return l;
    return NULL;
}

/* An open link dialled to addr whose node is not known yet (a seed). */
static struct link *find_link_addr(struct transport *t, const char *addr)
{
    for (struct link *l = t->links; l; l = l->next)
        if (!conn_closed(l->c) && l->c->outbound &&
            strcmp(l->dial_addr, addr) == 0)
            return l;
    return NULL;
}

/* A link's limits (see PEER_OUT_BOUND). */
static void link_limits(const struct transport *t, struct conn *c)
{
    c->out_bound = 0;
    c->stall_ms = t->cfg->stall_timeout_ms < LINK_STALL_MS
                      ? t->cfg->stall_timeout_ms
                      : LINK_STALL_MS;
    c->partial_ms = 0;
}

/* Dials addr; the handshake must prove pubkey when it is given. */
static struct link *link_dial(struct transport *t, const char *addr,
                              const uint8_t *pubkey)
{
    struct backoff *b = backoff_of(t, addr, false);
    if ((b && conn_loop_ms(t->loop) < b->until_ms) ||
        fault_blocked(t->fault, addr))
        return NULL;
    struct chan *ch;
    if (chan_new(&ch, NOISE_INITIATOR, PROTO_PROLOGUE_PEER, t->cluster_secret,
                 t->node_priv, transport_peer_max_msg(t->cfg)) != 0)
        return NULL;
    struct link *l = link_new(t);
    if (!l) {
        chan_free(ch);
        return NULL;
    }
    snprintf(l->dial_addr, sizeof(l->dial_addr), "%s", addr);
    snprintf(l->fault_peer, sizeof(l->fault_peer), "%s", addr);
    if (pubkey) {
        l->check_key = true;
        memcpy(l->expect_key, pubkey, CRYPTO_KEY_BYTES);
        crypto_node_id(l->node_id, pubkey);
    }
    l->c = conn_dial(t->loop, addr, ch, t->cfg->handshake_timeout_ms,
                     t->cfg->idle_timeout_ms, &link_ops, l);
    if (!l->c) {
        link_free(l);
        return NULL;
    }
    link_limits(t, l->c);
    return l;
}

void transport_adopt(struct transport *t, struct conn *c)
{
    struct link *l = link_new(t);
    if (!l) {
        conn_close(c, "out of memory");
        return;
    }
    l->c = c;
    c->ops = &link_ops;
    c->owner = l;
    link_limits(t, c);
    link_established(c);
}

/* Bytes waiting for the peer: queued here and in the channel. */
static size_t link_backlog(const struct link *l)
{
    size_t n = conn_output_bytes(l->c);
    for (const struct outq *q = l->q; q; q = q->next)
        n += q->len;
    return n;
}

bool transport_slow(struct transport *t)
{
    uint64_t now = conn_loop_ms(t->loop);
    for (struct link *l = t->links; l; l = l->next)
        if (!conn_closed(l->c) && link_backlog(l) > PEER_SLOW_BOUND &&
            now - l->c->last_tx_ms < PEER_MOVING_MS)
            return true;
    return false;
}

/* Whether nothing waits for an answer to m (a link failing under it is no
 * news for the core). */
static bool is_answer(const struct msg *m)
{
    return m->type == MSG_REPLICA_ANSWER || m->type == MSG_AE_ANSWER ||
           m->type == MSG_STREAM_ANSWER || m->type == MSG_ACCESS_SET;
}

size_t transport_send(struct transport *t,
                      const uint8_t to[CRYPTO_NODE_ID_BYTES],
                      const struct msg *m)
{
    uint8_t *buf;
    size_t len;
    if (msg_encode(m, &buf, &len) != 0)
        return 0; /* out of memory: the request's deadline ends it */
    struct link *l = find_link(t, to);
    if (!l) {
        const struct wire_member *w = core_member(t->core, to);
        if (w)
            l = link_dial(t, w->addr, w->pubkey);
    }
    if (l &&
        link_backlog(l) > PEER_OUT_BOUND + transport_peer_max_msg(t->cfg)) {
        t->counters.peer_backlogged++;
        if (t->counters.peer_backlogged % 1000 == 1)
            log_warn("%s: %zu bytes wait for this peer to read; what is sent "
                     "to it fails until it does (%llu so far)",
                     l->c->addr, link_backlog(l),
                     (unsigned long long)t->counters.peer_backlogged);
        l = NULL;
    }
    if (!l) {
        free(buf);
        if (!is_answer(m))
            report_down(t, to);
        return 0;
    }
    if (!is_answer(m))
        l->asked = true;
    link_send(l, buf, len, false);
    return len;
}

/* ---- datagrams ---- */

static int resolve(const char *hostport, int socktype,
                   struct sockaddr_storage *sa, socklen_t *sl)
{
    char host[GOSSIP_ADDR_MAX], port[16];
    if (net_split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
        return KV_ERR_INVAL;
    /* Numeric only: resolving a name would block the loop. */
    struct addrinfo hints = {.ai_socktype = socktype,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV},
                    *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return KV_ERR_INVAL;
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* Opens, decodes and hands one received datagram to the core. */
static void take_datagram(struct transport *t, const uint8_t *pkt, size_t len,
                          const char *src)
{
    uint8_t plain[UDP_BUF + 1];
    size_t plen;
    if (seal_open(&t->sealer, clock_wall_ms(), pkt, len, plain, &plen) != 0)
        return;                  /* counted by the sealer; nothing parsed */
    count_bytes(t, src, 0, len); /* only what a member sealed */
    struct gossip_msg msg;
    if (gossip_decode(plain, plen, &msg) != 0) {
        t->counters.undecodable++;
        return;
    }
    if (msg.type == GOSSIP_SYNC || msg.type == GOSSIP_SYNC_REPLY)
        t->counters.undecodable++; /* full state only over links */
    else
        core_on_gossip(t->core, src, &msg);
    gossip_msg_free(&msg);
}

static void put_datagram(struct transport *t, const uint8_t *pkt, size_t len,
                         const struct sockaddr_storage *sa, socklen_t sl)
{
    /* Datagrams may be lost; SWIM expects it, so a full buffer is a loss. */
    (void)sendto(t->udp_fd, pkt, len, MSG_DONTWAIT, (const struct sockaddr *)sa,
                 sl);
}

static void arm_held(struct transport *t)
{
    ev_timer_stop(t->loop, &t->held_w);
    if (!t->held)
        return;
    uint64_t now = clock_mono_ms();
    uint64_t wait = t->held->due_ms > now ? t->held->due_ms - now : 0;
    ev_timer_set(&t->held_w, (double)wait / 1000.0, 0);
    ev_timer_start(t->loop, &t->held_w);
}

static void on_held(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport *t = w->data;
    uint64_t now = clock_mono_ms();
    while (t->held && t->held->due_ms <= now) {
        struct held_dgram *h = t->held;
        t->held = h->next;
        if (h->inbound)
            take_datagram(t, h->pkt, h->len, h->src);
        else
            put_datagram(t, h->pkt, h->len, &h->sa, h->sl);
        free(h);
    }
    arm_held(t);
}

/* Holds a datagram back for delay_ms; a later one may pass it. */
static void hold_datagram(struct transport *t, const uint8_t *pkt, size_t len,
                          uint32_t delay_ms, bool inbound,
                          const struct sockaddr_storage *sa, socklen_t sl,
                          const char *src)
{
    struct held_dgram *h = calloc(1, sizeof(*h) + len);
    if (!h)
        return; /* a lost datagram */
    h->due_ms = clock_mono_ms() + delay_ms;
    h->inbound = inbound;
    if (sa)
        memcpy(&h->sa, sa, sl);
    h->sl = sl;
    snprintf(h->src, sizeof(h->src), "%s", src ? src : "");
    h->len = len;
    memcpy(h->pkt, pkt, len);
    struct held_dgram **p = &t->held;
    while (*p && (*p)->due_ms <= h->due_ms)
        p = &(*p)->next;
    h->next = *p;
    *p = h;
    arm_held(t);
}

/* One datagram through the fault layer (if on) in either direction: dropped,
 * corrupted (the seal then refuses it), held back, or passed on twice. */
static void datagram_through_faults(struct transport *t, uint8_t *pkt,
                                    size_t len, bool inbound, const char *peer,
                                    const struct sockaddr_storage *sa,
                                    socklen_t sl)
{
    struct fault_verdict v = {0};
    if (t->fault)
        fault_decide(t->fault, peer, inbound ? FAULT_IN : FAULT_OUT, FAULT_UDP,
                     &v);
    if (v.drop)
        return;
    if (v.corrupt)
        fault_corrupt(t->fault, pkt, len);
    uint32_t delay =
        v.delay_ms +
        (v.reorder ? REORDER_MIN_MS + randombytes_uniform(REORDER_SPAN_MS) : 0);
    for (int copy = 0; copy < (v.dup ? 2 : 1); copy++) {
        if (delay)
            hold_datagram(t, pkt, len, delay, inbound, sa, sl, peer);
        else if (inbound)
            take_datagram(t, pkt, len, peer);
        else
            put_datagram(t, pkt, len, sa, sl);
    }
}

static void send_datagram(struct transport *t, const struct peer *to,
                          const struct gossip_msg *msg)
{
    struct sockaddr_storage sa;
    socklen_t sl;
    uint8_t *body, pkt[UDP_BUF];
    size_t len, n;
    if (resolve(to->addr, SOCK_DGRAM, &sa, &sl) ||
        gossip_encode(msg, GOSSIP_UDP_MAX, &body, &len, &n) != 0)
        return;
    seal_packet(&t->sealer, clock_wall_ms(), body, len, pkt);
    free(body);
    count_bytes(t, to->addr, len + SEAL_OVERHEAD, 0);
    datagram_through_faults(t, pkt, len + SEAL_OVERHEAD, false, to->addr, &sa,
                            sl);
}

static void on_udp(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct transport *t = w->data;
    for (int burst = 0; burst < 64; burst++) {
        uint8_t pkt[UDP_BUF + 1];
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        ssize_t r = recvfrom(t->udp_fd, pkt, sizeof(pkt), 0,
                             (struct sockaddr *)&sa, &sl);
        if (r < 0)
            return;
        char host[48] = "", port[8] = "", src[GOSSIP_ADDR_MAX];
        getnameinfo((struct sockaddr *)&sa, sl, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(src, sizeof(src), "%s:%s", host, port);
        datagram_through_faults(t, pkt, (size_t)r, true, src, NULL, 0);
    }
}

void transport_gossip(struct transport *t, const struct peer *to,
                      const struct gossip_msg *m)
{
    if (m->type != GOSSIP_SYNC && m->type != GOSSIP_SYNC_REPLY) {
        send_datagram(t, to, m);
        return;
    }
    /* Push-pull: over the link to that member, or to that address when its
     * key is not known yet (a seed). */
    struct link *l = NULL;
    if (to->pubkey) {
        uint8_t id[CRYPTO_NODE_ID_BYTES];
        crypto_node_id(id, to->pubkey);
        l = find_link(t, id);
    } else {
        l = find_link_addr(t, to->addr);
    }
    if (!l)
        l = link_dial(t, to->addr, to->pubkey);
    uint8_t *buf;
    size_t len, n;
    if (!l ||
        gossip_encode(m, (size_t)PROTO_MAX_VALUE_LIMIT, &buf, &len, &n) != 0) {
        t->counters.peer_failed++;
        return;
    }
    link_send(l, buf, len, true);
}

/* ---- life cycle ---- */

int transport_new(struct transport **out, struct ev_loop *loop,
                  const struct node_config *cfg,
                  const uint8_t node_priv[CRYPTO_KEY_BYTES],
                  const uint8_t cluster_secret[CRYPTO_KEY_BYTES],
                  const uint8_t *old_cluster_secret, struct fault *fault)
{
    /* It holds the node key and the gossip keys: locked in memory, kept out
     * of core dumps, guarded by inaccessible pages (sodium_malloc;
     * security review L3). */
    struct transport *t = sodium_malloc(sizeof(*t));
    if (!t)
        return KV_ERR_NOMEM;
    memset(t, 0, sizeof(*t));
    t->loop = loop;
    t->cfg = cfg;
    t->udp_fd = -1;
    t->fault = fault && fault_enabled(fault) ? fault : NULL;
    memcpy(t->node_priv, node_priv, CRYPTO_KEY_BYTES);
    memcpy(t->cluster_secret, cluster_secret, CRYPTO_KEY_BYTES);
    seal_init(&t->sealer, cluster_secret);
    if (old_cluster_secret)
        seal_add_old_key(&t->sealer, old_cluster_secret);
    ev_init(&t->down_w, on_down);
    ev_init(&t->held_w, on_held);
    t->down_w.data = t->held_w.data = t;
    struct sockaddr_storage sa;
    socklen_t sl;
    int rc = resolve(cfg->listen, SOCK_DGRAM, &sa, &sl);
    if (rc) {
        log_error("gossip: --listen %s is not a numeric HOST:PORT that other "
                  "nodes can reach",
                  cfg->listen);
        transport_free(t);
        return rc;
    }
    t->udp_fd =
        socket(sa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (t->udp_fd < 0 || bind(t->udp_fd, (struct sockaddr *)&sa, sl) != 0) {
        log_error("gossip: cannot bind UDP %s: %s", cfg->listen,
                  strerror(errno));
        transport_free(t);
        return KV_ERR_IO;
    }
    ev_io_init(&t->udp_w, on_udp, t->udp_fd, EV_READ);
    t->udp_w.data = t;
    *out = t;
    return 0;
}

void transport_start(struct transport *t, struct core *core)
{
    t->core = core;
    ev_io_start(t->loop, &t->udp_w);
}

void transport_peer_refused(struct transport *t)
{
    t->counters.peer_rejected++;
}

const struct transport_counters *transport_counters(struct transport *t)
{
    t->counters.udp = t->sealer.counters;
    return &t->counters;
}

void transport_free(struct transport *t)
{
    if (!t)
        return;
    while (t->links)
        conn_close(t->links->c, NULL); /* frees the link */
    while (t->held) {
        struct held_dgram *h = t->held;
        t->held = h->next;
        free(h);
    }
    ev_timer_stop(t->loop, &t->held_w);
    ev_timer_stop(t->loop, &t->down_w);
    if (t->udp_fd >= 0) {
        ev_io_stop(t->loop, &t->udp_w);
        close(t->udp_fd);
    }
    free(t->down);
    free(t->bytes);
    seal_wipe(&t->sealer);
    sodium_free(t); /* wiped as it is freed */
}
