/* kvnode's event loop (DESIGN §1, §9): one libev loop runs all network I/O
 * and request handling on one thread; durable writes go to the storage
 * writer thread and come back through an ev_async.
 *
 * A connection moves through: accepted -> handshake (deadline:
 * handshake_timeout_ms) -> established (welcome sent; dropped after
 * idle_timeout_ms without a byte while nothing is pending) -> closed. A
 * closed connection is kept as a shell while anything refers to it (a write
 * still in storage, or a callback further up the stack), so a completion or
 * a caller never touches freed memory. */
#include "node.h"

#include "../common/common.h"

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

struct conn {
    struct server *srv;
    int fd;
    ev_io rio, wio;
    ev_timer timer;
    struct chan *chan;
    bool welcomed; /* established: a client got its welcome */
    bool peer;     /* established as a node-to-node channel */
    bool closed;   /* fd gone; kept only while refs > 0 */
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
    struct pending_write *writes; /* submitted, not completed */
    bool stopping;
    uint8_t node_priv[CRYPTO_KEY_BYTES];
    uint8_t client_secret[CRYPTO_KEY_BYTES];
    uint8_t cluster_secret[CRYPTO_KEY_BYTES];
    uint8_t *rbuf;
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
    int rc =
        service_handle(&srv->svc, req, len, ev_now(srv->loop) * 1000, &act);
    if (rc) {
        log_error("%s: request failed: %s", c->peer_addr, kv_strerror(rc));
        conn_close(c, "out of memory");
        return;
    }
    if (act.answer) {
        conn_send(c, act.answer, act.answer_len);
        return;
    }
    struct pending_write *pw = act.write;
    if (srv->stopping) {
        uint8_t *buf;
        size_t n;
        if (service_error(&srv->svc, pw->req_id, KV_ERR_UNAVAILABLE,
                          "node is shutting down", &buf, &n) == 0)
            conn_send(c, buf, n);
        free(pw);
        return;
    }
    pw->conn = c;
    c->refs++;
    pw->next = srv->writes;
    if (srv->writes)
        srv->writes->prev = pw;
    srv->writes = pw;
    storage_submit(srv->svc.st, &pw->w);
}

static void on_established(struct conn *c)
{
    uint8_t *buf;
    size_t n;
    c->welcomed = true;
    c->peer = chan_kind(c->chan) == KIND_PEER;
    log_debug("%s: %s authenticated", c->peer_addr,
              c->peer ? "node" : "client");
    /* From now on the timer watches for idleness, not the handshake. */
    c->timer.repeat = c->srv->cfg->idle_timeout_ms / 1000.0;
    ev_timer_again(c->srv->loop, &c->timer);
    if (c->peer)
        return; /* nodes send gossip state; they get no welcome */
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
    c->refs++; /* answering may close c; keep it until we are done */
    size_t off = 0;
    while (off < (size_t)r && !c->closed) {
        size_t used;
        int rc = chan_input(c->chan, srv->rbuf + off, (size_t)r - off, &used);
        off += used;
        if (rc) {
            if (!c->welcomed && chan_kind(c->chan) == KIND_PEER)
                gossip_io_peer_refused(srv->svc.gossip);
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
                gossip_io_on_peer_message(
                    srv->svc.gossip, chan_remote_static(c->chan), msg, len);
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
    conn_flush(w->data);
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

static void conn_close(struct conn *c, const char *why)
{
    if (c->closed)
        return;
    struct server *srv = c->srv;
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
    srv->svc.connections--;
    if (c->refs == 0)
        free(c);
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
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->srv = srv;
        c->fd = fd;
        snprintf(c->peer_addr, sizeof(c->peer_addr), "%s:%s", host, port);
        c->last_rx_ms = (uint64_t)(ev_now(loop) * 1000);
        ev_io_init(&c->rio, on_readable, fd, EV_READ);
        ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
        ev_init(&c->timer, on_conn_timer);
        c->rio.data = c->wio.data = c->timer.data = c;
        c->timer.repeat = srv->cfg->handshake_timeout_ms / 1000.0;
        ev_timer_again(loop, &c->timer);
        ev_io_start(loop, &c->rio);
        c->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = c;
        srv->conns = c;
        srv->svc.connections++;
        log_debug("%s: connection accepted", c->peer_addr);
    }
}

static void unlink_write(struct server *srv, struct pending_write *pw)
{
    if (pw->prev)
        pw->prev->next = pw->next;
    else
        srv->writes = pw->next;
    if (pw->next)
        pw->next->prev = pw->prev;
}

static void maybe_finish_stop(struct server *srv)
{
    if (srv->stopping && !srv->writes)
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
        struct pending_write *pw = sw->ctx;
        struct conn *c = pw->conn;
        unlink_write(srv, pw);
        if (c) {
            uint8_t *buf;
            size_t n;
            if (!pw->answered && !c->closed &&
                service_write_answer(&srv->svc, pw, sw->result, &buf, &n) == 0)
                conn_send(c, buf, n);
            conn_unref(c); /* the write's reference */
        }
        free(pw);
    }
    maybe_finish_stop(srv);
}

/* Answers writes whose deadline passed; the write itself goes on. */
static void on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct server *srv = w->data;
    uint64_t now = (uint64_t)(ev_now(loop) * 1000);
    for (struct pending_write *pw = srv->writes; pw; pw = pw->next) {
        struct conn *c = pw->conn;
        if (pw->answered || now < pw->deadline_ms || !c || c->closed)
            continue;
        uint8_t *buf;
        size_t n;
        pw->answered = true;
        log_warn("%s: write %llu not durable within its deadline", c->peer_addr,
                 (unsigned long long)pw->req_id);
        if (service_write_answer(&srv->svc, pw, KV_ERR_TIMEOUT, &buf, &n) == 0)
            conn_send(c, buf, n);
    }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    struct server *srv = w->data;
    if (srv->stopping)
        return;
    log_info("signal %d: stopping (no new requests; finishing %s)", w->signum,
             srv->writes ? "pending writes" : "nothing pending");
    srv->stopping = true;
    ev_io_stop(loop, &srv->accept_w);
    if (srv->svc.gossip)
        gossip_io_leave(srv->svc.gossip); /* DESIGN 7: leave is announced */
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
    if ((rc = storage_open(&srv->svc.st, cfg->data_dir, cfg->map_size,
                           notify_from_writer, srv)))
        return rc;
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
    rc =
        gossip_io_new(&srv->svc.gossip, srv->loop, cfg, srv->node_priv,
                      srv->cluster_secret, have_old ? old_secret : NULL, &self);
    sodium_memzero(old_secret, sizeof(old_secret));
    if (rc)
        return rc;
    log_info("region %s, zone %s, replicas %u (not replicated yet: this node "
             "keeps the one copy of what its clients write), accel %s (bulk "
             "hashing is not used yet)",
             cfg->region, cfg->zone, cfg->replicas, cfg->accel);
    return 0;
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
        srv.sweep_w.data = &srv;
        ev_timer_start(srv.loop, &srv.sweep_w);
        gossip_io_start(srv.svc.gossip);
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
    if (srv.listen_fd >= 0)
        close(srv.listen_fd);
    gossip_io_free(srv.svc.gossip);
    storage_close(srv.svc.st);
    /* Writes still queued were committed by storage_close; nobody is left to
     * answer, so free them. */
    while (srv.writes) {
        struct pending_write *pw = srv.writes;
        srv.writes = pw->next;
        free(pw);
    }
    sodium_memzero(srv.node_priv, sizeof(srv.node_priv));
    sodium_memzero(srv.client_secret, sizeof(srv.client_secret));
    sodium_memzero(srv.cluster_secret, sizeof(srv.cluster_secret));
    free(srv.rbuf);
    if (rc == 0)
        log_info("stopped cleanly");
    return rc;
}
