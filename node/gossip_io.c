/* Gossip's transport over libev (DESIGN §3): the core's env->gossip on real
 * sockets, and what arrives handed back to the core.
 *
 * - Datagrams (ping, ack, ping-req, nack) go over UDP on the listen port,
 *   each sealed with the gossip key (crypto/seal.c); a datagram that fails
 *   authentication is dropped and counted before anything in it is parsed.
 * - Push-pull state (sync, sync reply) goes over the Noise channel with the
 *   cluster secret and the peer prologue, one short outbound connection per
 *   message; the answer comes back the same way. An outbound connection to a
 *   known member is kept only if the handshake proves the member holds the
 *   static key its id names; an inbound message is taken only if its sender
 *   id is the hash of the key its handshake proved. */
#include "gossip_io.h"

#include "../common/common.h"
#include "fault.h"
#include "node.h"

#include <errno.h>
#include <ev.h>
#include <netdb.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PEER_TIMEOUT 5.0 /* s: a push-pull connection must be done by then */
#define UDP_BUF (GOSSIP_UDP_MAX + SEAL_OVERHEAD)

struct peer_out;

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

struct gossip_io {
    struct ev_loop *loop;
    const struct node_config *cfg;
    gossip_deliver_fn deliver;
    void *deliver_arg;
    uint8_t node_priv[CRYPTO_KEY_BYTES];
    uint8_t cluster_secret[CRYPTO_KEY_BYTES];
    struct sealer sealer;
    struct gossip_counters counters;
    int udp_fd;
    ev_io udp_w;
    struct peer_out *outs;
    struct fault *fault;     /* NULL: no fault injection */
    struct held_dgram *held; /* by due time */
    ev_timer held_w;
};

/* One outbound push-pull: connect, handshake, send one message, close. */
struct peer_out {
    struct gossip_io *g;
    int fd;
    ev_io rio, wio;
    ev_timer deadline;
    struct chan *chan;
    bool check_key, connected;
    struct fault_verdict verdict; /* what the fault layer does to it */
    ev_timer delay_w;             /* the fault layer's delay, then dial */
    uint8_t pubkey[CRYPTO_KEY_BYTES];
    uint8_t *msg;
    size_t len;
    char addr[GOSSIP_ADDR_MAX];
    struct sockaddr_storage sa; /* addr, resolved */
    socklen_t sl;
    struct peer_out *prev, *next;
};

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

/* ---- outbound push-pull connections ---- */

static void out_free(struct peer_out *o, const char *why)
{
    struct gossip_io *g = o->g;
    if (why) {
        g->counters.peer_failed++;
        log_info("gossip: push-pull to %s failed: %s", o->addr, why);
    }
    ev_io_stop(g->loop, &o->rio);
    ev_io_stop(g->loop, &o->wio);
    ev_timer_stop(g->loop, &o->deadline);
    ev_timer_stop(g->loop, &o->delay_w);
    if (o->fd >= 0)
        close(o->fd);
    chan_free(o->chan);
    free(o->msg);
    if (o->prev)
        o->prev->next = o->next;
    else
        g->outs = o->next;
    if (o->next)
        o->next->prev = o->prev;
    free(o);
}

/* Writes what is queued; once the handshake is done and the message is
 * out, the connection has served its purpose. */
static void out_flush(struct peer_out *o)
{
    if (net_flush(o->chan, o->fd) != 0) {
        out_free(o, "connection lost");
        return;
    }
    const uint8_t *p;
    size_t n;
    chan_output(o->chan, &p, &n);
    if (n > 0) {
        ev_io_start(o->g->loop, &o->wio);
        return;
    }
    ev_io_stop(o->g->loop, &o->wio);
    if (chan_established(o->chan) && !o->msg)
        out_free(o, NULL);
}

static void out_established(struct peer_out *o)
{
    struct gossip_io *g = o->g;
    if (o->check_key && sodium_memcmp(chan_remote_static(o->chan), o->pubkey,
                                      CRYPTO_KEY_BYTES) != 0) {
        g->counters.peer_rejected++;
        out_free(o, "it does not hold the key of the member at that address");
        return;
    }
    int rc = g->fault ? fault_chan_send(g->fault, o->chan, &o->verdict, o->msg,
                                        o->len, NULL, NULL)
                      : chan_send(o->chan, o->msg, o->len);
    free(o->msg);
    o->msg = NULL;
    if (rc) {
        out_free(o, kv_strerror(rc));
        return;
    }
    out_flush(o);
}

static void on_out_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct peer_out *o = w->data;
    uint8_t buf[4096];
    ssize_t r = recv(o->fd, buf, sizeof(buf), 0);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        out_free(o, r == 0 ? "closed during the handshake (wrong cluster "
                             "key?)"
                           : strerror(errno));
        return;
    }
    size_t off = 0, used;
    while (off < (size_t)r) {
        int rc = chan_input(o->chan, buf + off, (size_t)r - off, &used);
        if (rc) {
            out_free(o, kv_strerror(rc));
            return;
        }
        off += used;
        const uint8_t *m;
        size_t ml;
        chan_take(o->chan, &m, &ml); /* nothing is expected back */
    }
    if (chan_established(o->chan) && o->msg) {
        /* Our third handshake message is queued: send it with the state. */
        out_established(o);
        return;
    }
    out_flush(o);
}

static void on_out_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct peer_out *o = w->data;
    if (!o->connected) {
        int err = net_connect_error(o->fd);
        if (err) {
            out_free(o, strerror(err));
            return;
        }
        o->connected = true;
        ev_io_start(loop, &o->rio);
    }
    out_flush(o);
}

static void on_out_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    out_free(w->data, "timed out");
}

/* Dials o->sa and starts the handshake. */
static void out_dial(struct peer_out *o)
{
    struct gossip_io *g = o->g;
    o->fd =
        socket(o->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ev_io_init(&o->rio, on_out_readable, o->fd, EV_READ);
    ev_io_init(&o->wio, on_out_writable, o->fd, EV_WRITE);
    o->rio.data = o->wio.data = o;
    ev_timer_start(g->loop, &o->deadline);
    if (o->fd < 0 ||
        chan_new(&o->chan, NOISE_INITIATOR, PROTO_PROLOGUE_PEER,
                 g->cluster_secret, g->node_priv, PROTO_MAX_VALUE_LIMIT) != 0 ||
        (connect(o->fd, (const struct sockaddr *)&o->sa, o->sl) != 0 &&
         errno != EINPROGRESS)) {
        out_free(o, strerror(errno));
        return;
    }
    ev_io_start(g->loop, &o->wio); /* fires once connected */
}

static void on_out_delayed(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    out_dial(w->data);
}

static void send_stream(struct gossip_io *g, const struct peer *to,
                        const struct gossip_msg *msg)
{
    struct sockaddr_storage sa;
    socklen_t sl;
    if (resolve(to->addr, SOCK_STREAM, &sa, &sl)) {
        g->counters.peer_failed++;
        return;
    }
    struct fault_verdict v = {0};
    if (g->fault)
        fault_decide(g->fault, to->addr, FAULT_OUT, FAULT_TCP, &v);
    if (v.drop && fault_blocked(g->fault, to->addr))
        return; /* partitioned: as if the connection never got through */
    struct peer_out *o = calloc(1, sizeof(*o));
    size_t n;
    if (!o || gossip_encode(msg, (size_t)PROTO_MAX_VALUE_LIMIT, &o->msg,
                            &o->len, &n) != 0) {
        free(o);
        return;
    }
    o->g = g;
    o->fd = -1;
    o->verdict = v;
    snprintf(o->addr, sizeof(o->addr), "%s", to->addr);
    o->sa = sa;
    o->sl = sl;
    o->check_key = to->pubkey != NULL;
    if (to->pubkey)
        memcpy(o->pubkey, to->pubkey, CRYPTO_KEY_BYTES);
    o->prev = NULL;
    o->next = g->outs;
    if (g->outs)
        g->outs->prev = o;
    g->outs = o;
    ev_init(&o->rio, on_out_readable);
    ev_init(&o->wio, on_out_writable);
    ev_timer_init(&o->deadline, on_out_deadline, PEER_TIMEOUT, 0);
    /* A reordered message of its own connection can only come late. */
    uint32_t delay = v.delay_ms + (v.reorder ? 20 : 0);
    ev_timer_init(&o->delay_w, on_out_delayed, delay / 1000.0, 0);
    o->deadline.data = o->delay_w.data = o;
    if (delay)
        ev_timer_start(g->loop, &o->delay_w);
    else
        out_dial(o);
}

static bool is_stream_type(uint8_t type)
{
    return type == GOSSIP_SYNC || type == GOSSIP_SYNC_REPLY;
}

/* ---- datagrams ---- */

/* Opens, decodes and hands one received datagram to the core. */
static void take_datagram(struct gossip_io *g, const uint8_t *pkt, size_t len,
                          const char *src)
{
    uint8_t plain[UDP_BUF + 1];
    size_t plen;
    if (seal_open(&g->sealer, clock_wall_ms(), pkt, len, plain, &plen) != 0)
        return; /* counted by the sealer; nothing parsed */
    struct gossip_msg msg;
    if (gossip_decode(plain, plen, &msg) != 0) {
        g->counters.undecodable++;
        return;
    }
    if (is_stream_type(msg.type))
        g->counters.undecodable++; /* full state only on the stream */
    else
        g->deliver(g->deliver_arg, src, &msg);
    gossip_msg_free(&msg);
}

static void put_datagram(struct gossip_io *g, const uint8_t *pkt, size_t len,
                         const struct sockaddr_storage *sa, socklen_t sl)
{
    /* Datagrams may be lost; SWIM expects it, so a full buffer is a loss. */
    (void)sendto(g->udp_fd, pkt, len, MSG_DONTWAIT, (const struct sockaddr *)sa,
                 sl);
}

static void arm_held(struct gossip_io *g)
{
    ev_timer_stop(g->loop, &g->held_w);
    if (!g->held)
        return;
    uint64_t now = clock_mono_ms();
    uint64_t wait = g->held->due_ms > now ? g->held->due_ms - now : 0;
    ev_timer_set(&g->held_w, (double)wait / 1000.0, 0);
    ev_timer_start(g->loop, &g->held_w);
}

static void on_held(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct gossip_io *g = w->data;
    uint64_t now = clock_mono_ms();
    while (g->held && g->held->due_ms <= now) {
        struct held_dgram *h = g->held;
        g->held = h->next;
        if (h->inbound)
            take_datagram(g, h->pkt, h->len, h->src);
        else
            put_datagram(g, h->pkt, h->len, &h->sa, h->sl);
        free(h);
    }
    arm_held(g);
}

/* Holds a datagram back for delay_ms; a later one may pass it. */
static void hold_datagram(struct gossip_io *g, const uint8_t *pkt, size_t len,
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
    struct held_dgram **p = &g->held;
    while (*p && (*p)->due_ms <= h->due_ms)
        p = &(*p)->next;
    h->next = *p;
    *p = h;
    arm_held(g);
}

/* One datagram through the fault layer (if on) in either direction: dropped,
 * corrupted (the seal then refuses it), held back, or passed on twice. */
static void datagram_through_faults(struct gossip_io *g, uint8_t *pkt,
                                    size_t len, bool inbound, const char *peer,
                                    const struct sockaddr_storage *sa,
                                    socklen_t sl)
{
    struct fault_verdict v = {0};
    if (g->fault)
        fault_decide(g->fault, peer, inbound ? FAULT_IN : FAULT_OUT, FAULT_UDP,
                     &v);
    if (v.drop)
        return;
    if (v.corrupt)
        fault_corrupt(g->fault, pkt, len);
    uint32_t delay = v.delay_ms + (v.reorder ? 5 + randombytes_uniform(46) : 0);
    for (int copy = 0; copy < (v.dup ? 2 : 1); copy++) {
        if (delay)
            hold_datagram(g, pkt, len, delay, inbound, sa, sl, peer);
        else if (inbound)
            take_datagram(g, pkt, len, peer);
        else
            put_datagram(g, pkt, len, sa, sl);
    }
}

static void send_datagram(struct gossip_io *g, const struct peer *to,
                          const struct gossip_msg *msg)
{
    struct sockaddr_storage sa;
    socklen_t sl;
    uint8_t *body, pkt[UDP_BUF];
    size_t len, n;
    if (resolve(to->addr, SOCK_DGRAM, &sa, &sl) ||
        gossip_encode(msg, GOSSIP_UDP_MAX, &body, &len, &n) != 0)
        return;
    seal_packet(&g->sealer, clock_wall_ms(), body, len, pkt);
    free(body);
    datagram_through_faults(g, pkt, len + SEAL_OVERHEAD, false, to->addr, &sa,
                            sl);
}

static void on_udp(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct gossip_io *g = w->data;
    for (int burst = 0; burst < 64; burst++) {
        uint8_t pkt[UDP_BUF + 1];
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        ssize_t r = recvfrom(g->udp_fd, pkt, sizeof(pkt), 0,
                             (struct sockaddr *)&sa, &sl);
        if (r < 0)
            return;
        char host[48] = "", port[8] = "", src[GOSSIP_ADDR_MAX];
        getnameinfo((struct sockaddr *)&sa, sl, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(src, sizeof(src), "%s:%s", host, port);
        datagram_through_faults(g, pkt, (size_t)r, true, src, NULL, 0);
    }
}

/* ---- sending ---- */

void gossip_io_send(struct gossip_io *g, const struct peer *to,
                    const struct gossip_msg *msg)
{
    if (is_stream_type(msg->type))
        send_stream(g, to, msg);
    else
        send_datagram(g, to, msg);
}

/* ---- life cycle ---- */

int gossip_io_new(struct gossip_io **out, struct ev_loop *loop,
                  const struct node_config *cfg,
                  const uint8_t node_priv[CRYPTO_KEY_BYTES],
                  const uint8_t cluster_secret[CRYPTO_KEY_BYTES],
                  const uint8_t *old_cluster_secret, gossip_deliver_fn deliver,
                  void *deliver_arg)
{
    struct gossip_io *g = calloc(1, sizeof(*g));
    if (!g)
        return KV_ERR_NOMEM;
    g->loop = loop;
    g->cfg = cfg;
    g->udp_fd = -1;
    g->deliver = deliver;
    g->deliver_arg = deliver_arg;
    memcpy(g->node_priv, node_priv, CRYPTO_KEY_BYTES);
    memcpy(g->cluster_secret, cluster_secret, CRYPTO_KEY_BYTES);
    seal_init(&g->sealer, cluster_secret);
    if (old_cluster_secret)
        seal_add_old_key(&g->sealer, old_cluster_secret);
    struct sockaddr_storage sa;
    socklen_t sl;
    int rc = resolve(cfg->listen, SOCK_DGRAM, &sa, &sl);
    if (rc) {
        log_error("gossip: --listen %s is not a numeric HOST:PORT that other "
                  "nodes can reach",
                  cfg->listen);
        gossip_io_free(g);
        return rc;
    }
    g->udp_fd =
        socket(sa.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (g->udp_fd < 0 || bind(g->udp_fd, (struct sockaddr *)&sa, sl) != 0) {
        log_error("gossip: cannot bind UDP %s: %s", cfg->listen,
                  strerror(errno));
        gossip_io_free(g);
        return KV_ERR_IO;
    }
    ev_io_init(&g->udp_w, on_udp, g->udp_fd, EV_READ);
    ev_init(&g->held_w, on_held);
    g->udp_w.data = g->held_w.data = g;
    *out = g;
    return 0;
}

void gossip_io_start(struct gossip_io *g)
{
    ev_io_start(g->loop, &g->udp_w);
}

void gossip_io_on_peer_message(struct gossip_io *g,
                               const uint8_t remote_static[CRYPTO_KEY_BYTES],
                               const uint8_t *msg, size_t len)
{
    struct gossip_msg m;
    if (gossip_decode(msg, len, &m) != 0) {
        g->counters.undecodable++;
        return;
    }
    uint8_t id[CRYPTO_NODE_ID_BYTES];
    crypto_node_id(id, remote_static);
    if (!is_stream_type(m.type) || memcmp(id, m.from, sizeof(id)) != 0) {
        g->counters.peer_rejected++;
        log_warn("gossip: refused state from a peer whose id does not match "
                 "its key");
    } else {
        /* Where the sender says it lives: its own record in the state. */
        const char *src = "";
        for (size_t i = 0; i < m.n_members; i++)
            if (memcmp(m.members[i].id, id, sizeof(id)) == 0)
                src = m.members[i].addr;
        if (!fault_blocked(g->fault, src))
            g->deliver(g->deliver_arg, src, &m);
    }
    gossip_msg_free(&m);
}

void gossip_io_set_fault(struct gossip_io *g, struct fault *f)
{
    g->fault = f && fault_enabled(f) ? f : NULL;
}

void gossip_io_peer_refused(struct gossip_io *g)
{
    g->counters.peer_rejected++;
}

const struct gossip_counters *gossip_io_counters(struct gossip_io *g)
{
    g->counters.udp = g->sealer.counters;
    return &g->counters;
}

void gossip_io_free(struct gossip_io *g)
{
    if (!g)
        return;
    while (g->outs)
        out_free(g->outs, NULL);
    while (g->held) {
        struct held_dgram *h = g->held;
        g->held = h->next;
        free(h);
    }
    ev_timer_stop(g->loop, &g->held_w);
    ev_io_stop(g->loop, &g->udp_w);
    if (g->udp_fd >= 0)
        close(g->udp_fd);
    seal_wipe(&g->sealer);
    sodium_memzero(g->node_priv, sizeof(g->node_priv));
    sodium_memzero(g->cluster_secret, sizeof(g->cluster_secret));
    free(g);
}
