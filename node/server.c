/* kvnode's event loop (DESIGN §1, §3, §9): the libev adapter of the node
 * core. One libev loop runs all network I/O and the core on one thread;
 * durable writes go to the storage writer thread and come back through an
 * ev_async. This file implements the core's env over sockets, libev timers,
 * storage/ and accel/, and calls only core_* for protocol work.
 *
 * Clients and nodes share the port. Node-to-node replica traffic (repl.c)
 * uses links: one Noise channel with the cluster secret per peer, dialled
 * on first use (the peer must prove the key its member id names) or
 * accepted from the peer, reused by every request in both directions, many
 * in flight. Gossip's one-shot push-pull connections are not links.
 *
 * A connection moves through: accepted -> handshake (deadline:
 * handshake_timeout_ms) -> established (welcome sent; dropped after
 * idle_timeout_ms without a byte while nothing is pending) -> closed. A
 * closed connection is kept as a shell while anything refers to it (a write
 * still in storage, or a callback further up the stack), so a completion or
 * a caller never touches freed memory. */
#include "node.h"

#include "../common/common.h"
#include "fault.h"
#include "../accel/accel.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK 65536
/* Stop reading from a client whose answers pile up unread. */
#define MAX_OUTPUT_BYTES (16u << 20)
#define SWEEP_INTERVAL 0.1 /* s: how often request deadlines are checked */

enum { KIND_CLIENT, KIND_PEER }; /* the kinds of connection on the port */

struct server;

/* A message to a peer waiting for the link's handshake to finish, or held
 * back by the fault layer until due_ms. */
struct outq {
    struct outq *next;
    uint64_t due_ms;
    struct fault_verdict verdict;
    size_t len;
    uint8_t buf[];
};

struct conn {
    struct server *srv;
    int fd;
    ev_io rio, wio;
    ev_timer timer;
    struct chan *chan;
    bool welcomed;  /* established: a client got its welcome */
    bool peer;      /* established as a node-to-node channel */
    bool closed;    /* fd gone; kept only while refs > 0 */
    bool outbound;  /* a link this node dialled */
    bool connected; /* outbound: the TCP connect finished */
    bool link;      /* carries replica messages */
    bool asked;     /* this node sent requests on it */
    uint8_t node_id[CRYPTO_NODE_ID_BYTES]; /* a peer's, once known */
    uint8_t expect_key[CRYPTO_KEY_BYTES];  /* outbound: the member's key */
    struct outq *q, *q_tail;               /* to a peer, not yet sent */
    ev_timer q_w;                          /* the fault layer's delays */
    char fault_peer[GOSSIP_ADDR_MAX]; /* a peer's listen address, if known */
    uint8_t *held;                    /* fault layer: a reordered message */
    size_t held_len;
    unsigned refs; /* pending writes, plus a callback that is using it */
    uint64_t last_rx_ms;
    char peer_addr[64];
    struct conn *prev, *next;
};

struct server {
    struct ev_loop *loop;
    const struct node_config *cfg;
    struct service svc;
    int listen_fd;
    ev_io accept_w;
    ev_async store_async;
    ev_signal sigterm_w, sigint_w;
    ev_timer sweep_w;
    struct conn *conns;
    struct core *core;       /* also svc.core */
    ev_timer gossip_timer_w; /* membership's one timer */
    struct timer *gossip_timer;
    ev_timer down_w;                       /* reports failed links */
    uint8_t (*down)[CRYPTO_NODE_ID_BYTES]; /* links failed, not reported */
    size_t n_down, cap_down;
    bool stopping;
    uint8_t node_priv[CRYPTO_KEY_BYTES];
    uint8_t client_secret[CRYPTO_KEY_BYTES];
    uint8_t cluster_secret[CRYPTO_KEY_BYTES];
    uint8_t *rbuf;
    struct fault *fault; /* on only with --fault-injection */
    struct accel *accel;
};

static void conn_close(struct conn *c, const char *why);

/* A closed connection is freed once nothing refers to it: neither a write
 * still in storage nor a callback further up the stack. */
static void conn_unref(struct conn *c)
{
    if (--c->refs == 0 && c->closed)
        free(c);
}

/* Writes what the channel holds; arms the write watcher if the socket is full
 * and pauses reading while a client lets answers pile up. */
static void conn_flush(struct conn *c)
{
    const uint8_t *p;
    size_t n;
    if (net_flush(c->chan, c->fd) != 0) {
        conn_close(c, "write failed");
        return;
    }
    chan_output(c->chan, &p, &n);
    if (n > 0)
        ev_io_start(c->srv->loop, &c->wio);
    else
        ev_io_stop(c->srv->loop, &c->wio);
    if (n > MAX_OUTPUT_BYTES)
        ev_io_stop(c->srv->loop, &c->rio);
    else if (!c->closed)
        ev_io_start(c->srv->loop, &c->rio);
}

/* Queues an encoded message (and frees it). */
static void conn_send(struct conn *c, uint8_t *buf, size_t len)
{
    if (c->closed) {
        free(buf);
        return;
    }
    int rc = chan_send(c->chan, buf, len);
    free(buf);
    if (rc) {
        log_warn("%s: cannot send: %s", c->peer_addr, kv_strerror(rc));
        conn_close(c, "send failed");
        return;
    }
    conn_flush(c);
}

static void on_request(struct conn *c, const uint8_t *req, size_t len)
{
    struct server *srv = c->srv;
    struct service_action act;
    int rc = service_handle(&srv->svc, c, req, len,
                            (uint64_t)(ev_now(srv->loop) * 1000), &act);
    if (rc) {
        log_error("%s: request failed: %s", c->peer_addr, kv_strerror(rc));
        conn_close(c, "out of memory");
        return;
    }
    if (act.answer)
        conn_send(c, act.answer, act.answer_len);
}

/* A message on a node-to-node channel: push-pull state for gossip's
 * transport, the rest for the core. */
static void on_peer_message(struct conn *c, const uint8_t *buf, size_t len)
{
    struct server *srv = c->srv;
    int type = msg_peek_type(buf, len);
    if (type < MSG_REPLICA_READ) {
        if (!c->outbound)
            gossip_io_on_peer_message(srv->svc.gossip,
                                      chan_remote_static(c->chan), buf, len);
        return;
    }
    c->link = true;
    if (core_on_peer_message(srv->core, c->node_id, buf, len) != 0)
        conn_close(c, "malformed replica message");
}

static uint64_t loop_ms(struct server *srv)
{
    return (uint64_t)(ev_now(srv->loop) * 1000);
}

/* Sends what is queued for a peer and due, in order, through the fault
 * layer; waits for the handshake first. */
static void flush_queue(struct conn *c)
{
    struct server *srv = c->srv;
    uint64_t now = loop_ms(srv);
    while (c->q && !c->closed && c->welcomed) {
        struct outq *q = c->q;
        if (q->due_ms > now) {
            ev_timer_stop(srv->loop, &c->q_w);
            ev_timer_set(&c->q_w, (double)(q->due_ms - now) / 1000.0, 0);
            ev_timer_start(srv->loop, &c->q_w);
            break;
        }
        c->q = q->next;
        int rc = fault_enabled(srv->fault)
                     ? fault_chan_send(srv->fault, c->chan, &q->verdict, q->buf,
                                       q->len, &c->held, &c->held_len)
                     : chan_send(c->chan, q->buf, q->len);
        free(q);
        if (rc) {
            conn_close(c, "send failed");
            return;
        }
    }
    if (!c->q)
        c->q_tail = NULL;
    if (!c->closed)
        conn_flush(c);
}

static void on_queue_due(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    flush_queue(w->data);
}

/* A message to a peer (consumes buf): at once when the link is up and no
 * fault holds it, else behind what is queued. */
static void peer_send(struct conn *c, uint8_t *buf, size_t len)
{
    struct server *srv = c->srv;
    struct fault_verdict v = {0};
    if (c->closed) {
        free(buf);
        return;
    }
    if (fault_enabled(srv->fault)) {
        fault_decide(srv->fault, c->fault_peer, FAULT_OUT, FAULT_TCP, &v);
        if (v.drop && fault_blocked(srv->fault, c->fault_peer)) {
            free(buf);
            conn_close(c, "partitioned from this peer (fault injection)");
            return;
        }
    } else if (c->welcomed && !c->q) {
        conn_send(c, buf, len);
        return;
    }
    struct outq *q = malloc(sizeof(*q) + len);
    if (q) {
        q->next = NULL;
        q->due_ms = loop_ms(srv) + v.delay_ms;
        q->verdict = v;
        q->len = len;
        memcpy(q->buf, buf, len);
        if (c->q_tail)
            c->q_tail->next = q;
        else
            c->q = q;
        c->q_tail = q;
    }
    free(buf);
    if (c->welcomed)
        flush_queue(c);
}

/* The listen address of the member with this id, for the fault layer. */
static void set_fault_peer(struct conn *c)
{
    const struct member_view *v =
        membership_find(core_membership(c->srv->core), c->node_id);
    snprintf(c->fault_peer, sizeof(c->fault_peer), "%s", v ? v->info.addr : "");
}

static void on_established(struct conn *c)
{
    uint8_t *buf;
    size_t n;
    c->welcomed = true;
    c->peer = c->outbound || chan_kind(c->chan) == KIND_PEER;
    log_debug("%s: %s authenticated", c->peer_addr,
              c->peer ? "node" : "client");
    /* From now on the timer watches for idleness, not the handshake. */
    c->timer.repeat = c->srv->cfg->idle_timeout_ms / 1000.0;
    ev_timer_again(c->srv->loop, &c->timer);
    if (c->outbound) {
        if (sodium_memcmp(chan_remote_static(c->chan), c->expect_key,
                          CRYPTO_KEY_BYTES) != 0) {
            gossip_io_peer_refused(c->srv->svc.gossip);
            conn_close(c, "the node there does not hold the member's key");
            return;
        }
        flush_queue(c);
        return;
    }
    if (c->peer) {
        crypto_node_id(c->node_id, chan_remote_static(c->chan));
        if (fault_enabled(c->srv->fault))
            set_fault_peer(c);
        if (fault_blocked(c->srv->fault, c->fault_peer))
            conn_close(c, "partitioned from this peer (fault injection)");
        return; /* nodes get no welcome */
    }
    if (service_welcome(&c->srv->svc, &buf, &n) == 0)
        conn_send(c, buf, n);
    else
        conn_close(c, "out of memory");
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    struct server *srv = c->srv;
    ssize_t r = recv(c->fd, srv->rbuf, READ_CHUNK, 0);
    if (r == 0) {
        conn_close(c, NULL);
        return;
    }
    if (r < 0) {
        if (errno != EAGAIN && errno != EINTR)
            conn_close(c, "read failed");
        return;
    }
    c->last_rx_ms = (uint64_t)(ev_now(loop) * 1000);
    if (c->peer && fault_blocked(srv->fault, c->fault_peer)) {
        conn_close(c, "partitioned from this peer (fault injection)");
        return;
    }
    c->refs++; /* answering may close c; keep it until we are done */
    size_t off = 0;
    while (off < (size_t)r && !c->closed) {
        size_t used;
        int rc = chan_input(c->chan, srv->rbuf + off, (size_t)r - off, &used);
        off += used;
        if (rc) {
            if (!c->welcomed && chan_kind(c->chan) == KIND_PEER)
                gossip_io_peer_refused(srv->svc.gossip);
            if (c->welcomed && c->peer) {
                srv->svc.counters.frames_rejected++;
                log_warn("%s: node-to-node frame refused (%s); closing the "
                         "channel",
                         c->peer_addr, kv_strerror(rc));
            }
            char why[96];
            snprintf(why, sizeof(why), "%s %s",
                     c->welcomed ? "bad frame:" : "handshake refused:",
                     kv_strerror(rc));
            conn_close(c, why);
            break;
        }
        if (!c->welcomed && chan_established(c->chan))
            on_established(c);
        const uint8_t *msg;
        size_t len;
        if (!c->closed && chan_take(c->chan, &msg, &len)) {
            if (c->peer)
                on_peer_message(c, msg, len);
            else
                on_request(c, msg, len);
        }
    }
    if (!c->closed)
        conn_flush(c);
    conn_unref(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    if (c->outbound && !c->connected) {
        int err = net_connect_error(c->fd);
        if (err) {
            conn_close(c, strerror(err));
            return;
        }
        c->connected = true;
    }
    conn_flush(c);
}

/* The per-connection timer: handshake deadline, then idle timeout. */
static void on_conn_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    const struct node_config *cfg = c->srv->cfg;
    if (!c->welcomed) {
        conn_close(c, "handshake timed out");
        return;
    }
    uint64_t now = (uint64_t)(ev_now(loop) * 1000);
    uint64_t idle_until = c->last_rx_ms + cfg->idle_timeout_ms;
    if (now >= idle_until && c->refs == 0) {
        conn_close(c, "idle timeout");
        return;
    }
    w->repeat = now >= idle_until ? 1.0 : (double)(idle_until - now) / 1000.0;
    ev_timer_again(loop, w);
}

/* Requests sent on a failed link fail too, but not from inside whatever
 * repl call is running now: they are reported from the loop. */
static void report_down(struct server *srv,
                        const uint8_t id[CRYPTO_NODE_ID_BYTES])
{
    if (srv->n_down == srv->cap_down) {
        size_t cap = srv->cap_down ? 2 * srv->cap_down : 8;
        void *p = realloc(srv->down, cap * sizeof(*srv->down));
        if (!p)
            return; /* the deadline will end those requests */
        srv->down = p;
        srv->cap_down = cap;
    }
    memcpy(srv->down[srv->n_down++], id, CRYPTO_NODE_ID_BYTES);
    ev_timer_start(srv->loop, &srv->down_w);
}

static void on_down(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    /* repl may report more while this runs; take them all. */
    for (size_t i = 0; i < srv->n_down; i++) {
        uint8_t id[CRYPTO_NODE_ID_BYTES];
        memcpy(id, srv->down[i], sizeof(id));
        core_on_peer_down(srv->core, id);
    }
    srv->n_down = 0;
}

static void conn_close(struct conn *c, const char *why)
{
    if (c->closed)
        return;
    struct server *srv = c->srv;
    if (c->asked)
        report_down(srv, c->node_id);
    if (!c->peer && !c->outbound && srv->core)
        core_client_gone(srv->core, c);
    while (c->q) {
        struct outq *q = c->q;
        c->q = q->next;
        free(q);
    }
    free(c->held);
    c->held = NULL;
    ev_timer_stop(srv->loop, &c->q_w);
    if (why)
        log_info("%s: connection closed: %s", c->peer_addr, why);
    else
        log_debug("%s: connection closed by peer", c->peer_addr);
    ev_io_stop(srv->loop, &c->rio);
    ev_io_stop(srv->loop, &c->wio);
    ev_timer_stop(srv->loop, &c->timer);
    close(c->fd);
    chan_free(c->chan);
    c->chan = NULL;
    c->closed = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (!c->outbound)
        srv->svc.connections--;
    if (c->refs == 0)
        free(c);
}

/* Sets up a connection's watchers and puts it on the list. */
static void conn_start(struct server *srv, struct conn *c, int fd,
                       const char *addr)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->srv = srv;
    c->fd = fd;
    snprintf(c->peer_addr, sizeof(c->peer_addr), "%s", addr);
    c->last_rx_ms = (uint64_t)(ev_now(srv->loop) * 1000);
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    ev_init(&c->timer, on_conn_timer);
    ev_init(&c->q_w, on_queue_due);
    c->rio.data = c->wio.data = c->timer.data = c->q_w.data = c;
    c->timer.repeat = srv->cfg->handshake_timeout_ms / 1000.0;
    ev_timer_again(srv->loop, &c->timer);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct server *srv = w->data;
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        int fd = accept4(srv->listen_fd, (struct sockaddr *)&sa, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn("accept: %s", strerror(errno));
            return;
        }
        char host[48] = "?", port[8] = "?";
        getnameinfo((struct sockaddr *)&sa, sl, host, sizeof(host), port,
                    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
        if (srv->svc.connections >= srv->cfg->max_connections) {
            log_warn("refused connection from %s:%s: %llu connections open",
                     host, port, (unsigned long long)srv->svc.connections);
            close(fd);
            continue;
        }
        struct conn *c = calloc(1, sizeof(*c));
        size_t max_msg =
            srv->cfg->max_value + srv->cfg->max_key + PROTO_MSG_OVERHEAD;
        /* Clients and nodes share the port; the first handshake message
         * says which kind a connection is (chan_new_responder). */
        const struct chan_kind kinds[] = {
            [KIND_CLIENT] = {PROTO_PROLOGUE_CLIENT, srv->client_secret},
            [KIND_PEER] = {PROTO_PROLOGUE_PEER, srv->cluster_secret}};
        if (!c ||
            chan_new_responder(&c->chan, kinds, 2, srv->node_priv, max_msg)) {
            log_error("refused connection from %s:%s: out of memory", host,
                      port);
            free(c);
            close(fd);
            continue;
        }
        char addr[64];
        snprintf(addr, sizeof(addr), "%s:%s", host, port);
        conn_start(srv, c, fd, addr);
        ev_io_start(loop, &c->rio);
        srv->svc.connections++;
        log_debug("%s: connection accepted", c->peer_addr);
    }
}

/* ---- links: node-to-node channels for replica traffic ---- */

static struct conn *find_link(struct server *srv,
                              const uint8_t id[CRYPTO_NODE_ID_BYTES])
{
    for (struct conn *c = srv->conns; c; c = c->next)
        if (c->link && !c->closed &&
            memcmp(c->node_id, id, CRYPTO_NODE_ID_BYTES) == 0)
            return c;
    return NULL;
}

/* Dials the member with this id; the handshake must prove its key. */
static struct conn *link_open(struct server *srv,
                              const uint8_t id[CRYPTO_NODE_ID_BYTES])
{
    const struct member_view *v =
        membership_find(core_membership(srv->core), id);
    char host[GOSSIP_ADDR_MAX], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV},
                    *res;
    if (!v || fault_blocked(srv->fault, v->info.addr) ||
        net_split_hostport(v->info.addr, host, sizeof(host), port,
                           sizeof(port)) ||
        getaddrinfo(host, port, &hints, &res) != 0)
        return NULL;
    int fd =
        socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct conn *c = fd >= 0 ? calloc(1, sizeof(*c)) : NULL;
    size_t max_msg =
        srv->cfg->max_value + srv->cfg->max_key + PROTO_MSG_OVERHEAD;
    if (!c ||
        (connect(fd, res->ai_addr, res->ai_addrlen) != 0 &&
         errno != EINPROGRESS) ||
        chan_new(&c->chan, NOISE_INITIATOR, PROTO_PROLOGUE_PEER,
                 srv->cluster_secret, srv->node_priv, max_msg) != 0) {
        log_info("link to %s: %s", v->info.addr, strerror(errno));
        freeaddrinfo(res);
        if (c)
            chan_free(c->chan);
        free(c);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    freeaddrinfo(res);
    c->outbound = c->link = true;
    memcpy(c->node_id, id, CRYPTO_NODE_ID_BYTES);
    snprintf(c->fault_peer, sizeof(c->fault_peer), "%s", v->info.addr);
    memcpy(c->expect_key, v->info.pubkey, CRYPTO_KEY_BYTES);
    conn_start(srv, c, fd, v->info.addr);
    ev_io_start(srv->loop, &c->rio);
    ev_io_start(srv->loop, &c->wio); /* fires once connected */
    return c;
}

/* repl's send: over the link to that node, dialled if need be. */
static bool is_answer(const struct msg *m)
{
    return m->type == MSG_REPLICA_ANSWER || m->type == MSG_AE_ANSWER;
}

/* Sends a message to another node; returns the bytes queued. */
static size_t send_peer(struct server *srv,
                        const uint8_t to[CRYPTO_NODE_ID_BYTES],
                        const struct msg *m)
{
    uint8_t *buf;
    size_t len;
    if (msg_encode(m, &buf, &len) != 0)
        return 0; /* out of memory: the request's deadline ends it */
    struct conn *c = find_link(srv, to);
    if (!c)
        c = link_open(srv, to);
    if (!c) {
        free(buf);
        if (!is_answer(m))
            report_down(srv, to);
        return 0;
    }
    if (!is_answer(m))
        c->asked = true;
    peer_send(c, buf, len);
    return len;
}

static size_t env_send(void *ctx, const uint8_t to[CRYPTO_NODE_ID_BYTES],
                       const struct msg *m)
{
    return send_peer(ctx, to, m);
}

static void env_reply(void *ctx, void *client, const struct msg *m)
{
    struct server *srv = ctx;
    struct conn *c = client;
    uint8_t *buf;
    size_t len;
    if (m->type == MSG_RESULT && m->u.result.code != 0 &&
        m->u.result.code != KV_ERR_NOT_FOUND)
        srv->svc.counters.errors++;
    if (msg_encode(m, &buf, &len) == 0)
        conn_send(c, buf, len);
}

static uint64_t env_now(void *ctx)
{
    (void)ctx;
    return clock_mono_ms();
}

static uint64_t env_wall(void *ctx)
{
    struct server *srv = ctx;
    return service_wall_ms(&srv->svc);
}

static uint64_t env_random(void *ctx)
{
    (void)ctx;
    uint64_t r;
    randombytes_buf(&r, sizeof(r));
    return r;
}

static void on_gossip_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    if (srv->gossip_timer)
        srv->gossip_timer->fire(srv->gossip_timer->arg);
}

static void env_timer(void *ctx, struct timer *t, uint64_t after_ms)
{
    struct server *srv = ctx;
    srv->gossip_timer = t; /* membership owns exactly one timer */
    ev_timer_stop(srv->loop, &srv->gossip_timer_w);
    ev_timer_set(&srv->gossip_timer_w, (double)after_ms / 1000.0, 0);
    ev_timer_start(srv->loop, &srv->gossip_timer_w);
}

static void env_gossip(void *ctx, const struct peer *to,
                       const struct gossip_msg *m)
{
    struct server *srv = ctx;
    gossip_io_send(srv->svc.gossip, to, m);
}

static void deliver_gossip(void *arg, const char *src,
                           const struct gossip_msg *m)
{
    struct server *srv = arg;
    core_on_gossip(srv->core, src, m);
}

static int env_hash(void *ctx, const uint8_t *data, const uint64_t *off,
                    size_t n, size_t outlen, uint8_t *out)
{
    struct server *srv = ctx;
    return accel_hash(srv->accel, data, off, n, outlen, out);
}

static void maybe_finish_stop(struct server *srv)
{
    if (srv->stopping && core_drained(srv->core))
        ev_break(srv->loop, EVBREAK_ALL);
}

/* Storage completions, on the loop thread. */
static void on_storage_done(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    struct storage_write *list = storage_completed(srv->svc.st), *next;
    for (struct storage_write *sw = list; sw; sw = next) {
        next = sw->next;
        core_on_stored(srv->core, sw);
    }
    maybe_finish_stop(srv);
}

/* The core's tick: the view, deadlines, hint replay, anti-entropy. */
static void on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    core_tick(srv->core);
    maybe_finish_stop(srv);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct server *srv = w->data;
    if (srv->stopping)
        return;
    log_info("signal %d: stopping (no new requests; finishing %s)", w->signum,
             repl_busy(core_repl(srv->core)) ? "requests in flight"
                                             : "nothing pending");
    srv->stopping = true;
    ev_io_stop(loop, &srv->accept_w);
    core_stop(srv->core); /* DESIGN 7: the leave is announced */
    maybe_finish_stop(srv);
}

static void notify_from_writer(void *arg)
{
    struct server *srv = arg;
    ev_async_send(srv->loop, &srv->store_async);
}

static int listen_on(const char *hostport, int *out)
{
    char host[128], port[16];
    if (net_split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
        return KV_ERR_INVAL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res;
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (gai != 0) {
        log_error("--listen %s: %s", hostport, gai_strerror(gai));
        return KV_ERR_INVAL;
    }
    int fd = socket(res->ai_family,
                    res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    int rc = fd < 0 ? -1 : 0;
    if (rc == 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (rc == 0)
        rc = bind(fd, res->ai_addr, res->ai_addrlen);
    if (rc == 0)
        rc = listen(fd, 1024);
    freeaddrinfo(res);
    if (rc) {
        log_error("cannot listen on %s: %s", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        return KV_ERR_IO;
    }
    *out = fd;
    return 0;
}

static int load_secret(const char *path, const char *what, uint8_t *key)
{
    int rc = crypto_keyfile_read(path, key);
    if (rc == KV_ERR_PERM)
        log_error("%s %s is readable by group or others; chmod 600 it", what,
                  path);
    else if (rc)
        log_error("cannot read %s %s: %s", what, path,
                  rc == KV_ERR_IO ? strerror(errno) : kv_strerror(rc));
    return rc;
}

static int server_start(struct server *srv)
{
    const struct node_config *cfg = srv->cfg;
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
        log_error("cannot create data directory %s: %s", cfg->data_dir,
                  strerror(errno));
        return KV_ERR_IO;
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/node.key", cfg->data_dir);
    uint8_t pub[CRYPTO_KEY_BYTES];
    bool created;
    int rc = crypto_node_key_load(path, srv->node_priv, pub, &created);
    if (rc) {
        log_error("node key %s: %s", path,
                  rc == KV_ERR_PERM
                      ? "readable by group or others; chmod 600 it"
                      : kv_strerror(rc));
        return rc;
    }
    crypto_node_id(srv->svc.node_id, pub);
    char idhex[2 * CRYPTO_NODE_ID_BYTES + 1];
    hex_encode(idhex, srv->svc.node_id, CRYPTO_NODE_ID_BYTES);
    log_info("node %s (%s key in %s)", idhex, created ? "new" : "existing",
             path);
    if ((rc =
             load_secret(cfg->cluster_key, "cluster key", srv->cluster_secret)))
        return rc;
    if ((rc = load_secret(cfg->client_key, "client key", srv->client_secret)))
        return rc;
    uint64_t seed;
    randombytes_buf(&seed, sizeof(seed));
    srv->svc.fault = srv->fault = fault_new(cfg->fault_injection, seed);
    if (!srv->fault)
        return KV_ERR_NOMEM;
    if (cfg->fault_injection) {
        log_warn("!!! FAULT INJECTION IS ON (--fault-injection): kvcli fault "
                 "may drop, corrupt, delay and partition this node's traffic "
                 "and skew its clock. For tests only; never run a node that "
                 "holds real data this way. (seed %llu)",
                 (unsigned long long)seed);
    }
    if ((rc = storage_open(&srv->svc.st, cfg->data_dir, cfg->map_size,
                           notify_from_writer, srv)))
        return rc;
    /* The device is ready (its kernel built) before the port opens. */
    char cache[sizeof(cfg->data_dir) + 16];
    snprintf(cache, sizeof(cache), "%s/accel-cache", cfg->data_dir);
    struct accel_config ac = {.mode = accel_mode_parse(cfg->accel),
                              .cache_dir = cache};
    if ((rc = accel_open(&srv->accel, &ac)))
        return rc;
    const struct accel_info *ai = accel_info(srv->accel);
    if (ai->opencl)
        log_info("accel %s: OpenCL device %s; batches of %zu items or more "
                 "go to it, smaller ones to %u CPU thread(s)",
                 ai->mode, ai->device, ai->crossover, ai->threads);
    else
        log_info("accel %s: %u CPU thread(s); OpenCL device: %s", ai->mode,
                 ai->threads, ai->device);
    if (ai->opencl && ai->crossover == 0)
        log_info("accel auto: the device was slower than the CPU at every "
                 "batch size measured; bulk hashing stays on the CPU");
    if ((rc = listen_on(cfg->listen, &srv->listen_fd)))
        return rc;
    uint8_t old_secret[CRYPTO_KEY_BYTES];
    bool have_old = cfg->old_cluster_key[0] != '\0';
    if (have_old &&
        (rc = load_secret(cfg->old_cluster_key, "old cluster key", old_secret)))
        return rc;
    struct wire_member self = {.version = PROTO_VERSION};
    memcpy(self.id, srv->svc.node_id, sizeof(self.id));
    memcpy(self.pubkey, pub, sizeof(self.pubkey));
    snprintf(self.addr, sizeof(self.addr), "%s", cfg->listen);
    snprintf(self.region, sizeof(self.region), "%s", cfg->region);
    snprintf(self.zone, sizeof(self.zone), "%s", cfg->zone);
    rc = gossip_io_new(&srv->svc.gossip, srv->loop, cfg, srv->node_priv,
                       srv->cluster_secret, have_old ? old_secret : NULL,
                       deliver_gossip, srv);
    sodium_memzero(old_secret, sizeof(old_secret));
    if (rc)
        return rc;
    gossip_io_set_fault(srv->svc.gossip, srv->fault);
    storage_set_hint_limit(srv->svc.st, cfg->max_hints);
    struct core_config cc;
    core_config_defaults(&cc);
    cc.membership.period_ms = cfg->gossip_period_ms;
    cc.membership.ack_timeout_ms = cfg->gossip_ack_timeout_ms;
    cc.membership.push_pull_ms = cfg->push_pull_ms;
    cc.membership.reap_ms = cfg->dead_reap_ms;
    cc.membership.join_timeout_ms = cfg->join_timeout_ms;
    cc.repl.replicas = cfg->replicas;
    cc.repl.max_clock_offset_ms = cfg->max_clock_offset_ms;
    cc.repl.request_timeout_ms = cfg->request_timeout_ms;
    cc.ae.replicas = cfg->replicas;
    cc.ae.interval_ms = cfg->ae_interval_ms;
    cc.ae.scrub_interval_ms = cfg->scrub_interval_ms;
    cc.ae.max_message_bytes = cfg->max_value;
    cc.max_key = cfg->max_key;
    cc.max_value = cfg->max_value;
    cc.join_warn_ms = cfg->join_timeout_ms;
    struct env env = {.now_ms = env_now,
                      .wall_ms = env_wall,
                      .random = env_random,
                      .timer = env_timer,
                      .gossip = env_gossip,
                      .send = env_send,
                      .reply = env_reply,
                      .hash = env_hash,
                      .store = &storage_lmdb,
                      .store_ctx = srv->svc.st,
                      .ctx = srv};
    srv->svc.core = srv->core = core_new(&cc, &env, &self);
    if (!srv->core)
        return KV_ERR_NOMEM;
    log_info("region %s, zone %s, %u replicas per key", cfg->region, cfg->zone,
             cfg->replicas);
    return 0;
}

/* Joins through --join's addresses (this node's own skipped). */
static void start_core(struct server *srv)
{
    const char *seeds[16];
    size_t n = 0;
    char buf[sizeof(srv->cfg->join)];
    snprintf(buf, sizeof(buf), "%s", srv->cfg->join);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok && n < 16;
         tok = strtok_r(NULL, ",", &save))
        if (*tok && strcmp(tok, srv->cfg->listen) != 0)
            seeds[n++] = tok;
    core_start(srv->core, seeds, n);
    log_info("gossip: %s, period %u ms, joining through %zu seed(s)",
             n ? "joining" : "a cluster of one until others join",
             srv->cfg->gossip_period_ms, n);
}

int server_run(const struct node_config *cfg)
{
    struct server srv = {.cfg = cfg, .listen_fd = -1};
    srv.svc.cfg = cfg;
    srv.rbuf = malloc(READ_CHUNK);
    srv.loop = ev_default_loop(EVFLAG_AUTO);
    if (!srv.rbuf || !srv.loop)
        return KV_ERR_NOMEM;
    signal(SIGPIPE, SIG_IGN);
    /* The async watcher must exist before the writer thread can signal it. */
    ev_async_init(&srv.store_async, on_storage_done);
    srv.store_async.data = &srv;
    ev_async_start(srv.loop, &srv.store_async);
    ev_init(&srv.gossip_timer_w, on_gossip_timer);
    srv.gossip_timer_w.data = &srv;

    int rc = server_start(&srv);
    if (rc == 0) {
        srv.svc.start_ms = (uint64_t)(ev_now(srv.loop) * 1000);
        ev_io_init(&srv.accept_w, on_accept, srv.listen_fd, EV_READ);
        srv.accept_w.data = &srv;
        ev_io_start(srv.loop, &srv.accept_w);
        ev_signal_init(&srv.sigterm_w, on_signal, SIGTERM);
        ev_signal_init(&srv.sigint_w, on_signal, SIGINT);
        srv.sigterm_w.data = srv.sigint_w.data = &srv;
        ev_signal_start(srv.loop, &srv.sigterm_w);
        ev_signal_start(srv.loop, &srv.sigint_w);
        ev_timer_init(&srv.sweep_w, on_sweep, SWEEP_INTERVAL, SWEEP_INTERVAL);
        ev_timer_init(&srv.down_w, on_down, 0, 0);
        srv.down_w.data = &srv;
        srv.sweep_w.data = &srv;
        ev_timer_start(srv.loop, &srv.sweep_w);
        gossip_io_start(srv.svc.gossip);
        start_core(&srv);
        log_info("serving on %s (max %u connections, key <= %u B, value <= "
                 "%u B)",
                 cfg->listen, cfg->max_connections, cfg->max_key,
                 cfg->max_value);
        ev_run(srv.loop, 0);
        /* Answers to completed writes go out before the sockets close. */
        for (struct conn *c = srv.conns, *next; c; c = next) {
            next = c->next;
            conn_flush(c);
        }
    }
    while (srv.conns)
        conn_close(srv.conns, NULL);
    ev_timer_stop(srv.loop, &srv.down_w);
    if (srv.listen_fd >= 0)
        close(srv.listen_fd);
    ev_timer_stop(srv.loop, &srv.gossip_timer_w);
    gossip_io_free(srv.svc.gossip);
    /* The loop only stops once the core has nothing in flight. */
    core_free(srv.core);
    accel_close(srv.accel);
    storage_close(srv.svc.st);
    free(srv.down);
    fault_free(srv.fault);
    sodium_memzero(srv.node_priv, sizeof(srv.node_priv));
    sodium_memzero(srv.client_secret, sizeof(srv.client_secret));
    sodium_memzero(srv.cluster_secret, sizeof(srv.cluster_secret));
    free(srv.rbuf);
    if (rc == 0)
        log_info("stopped cleanly");
    return rc;
}
