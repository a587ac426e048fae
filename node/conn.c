/* kvnode's connections over libev (conn.h): reading, framing through the
 * Noise channel, writing with backpressure, the handshake deadline and the
 * idle timeout, for clients and nodes alike. */
#include "conn.h"

#include "../common/common.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK 65536
/* Stop reading from a connection whose output piles up unread. */
#define MAX_OUTPUT_BYTES (16u << 20)

static struct conn *all_conns;
static uint8_t rbuf[READ_CHUNK];

uint64_t conn_loop_ms(struct ev_loop *loop)
{
    return (uint64_t)(ev_now(loop) * 1000);
}

static void conn_ref(struct conn *c)
{
    c->refs++;
}

static void conn_unref(struct conn *c)
{
    if (--c->refs == 0 && c->closed)
        free(c);
}

bool conn_closed(const struct conn *c)
{
    return c->closed;
}

const char *conn_addr(const struct conn *c)
{
    return c->addr;
}

struct chan *conn_chan(struct conn *c)
{
    return c->chan;
}

void *conn_owner(const struct conn *c)
{
    return c->owner;
}

void conn_flush(struct conn *c)
{
    const uint8_t *p;
    size_t n;
    if (c->closed || (c->outbound && !c->connected))
        return;
    if (net_flush(c->chan, c->fd) != 0) {
        conn_close(c, "write failed");
        return;
    }
    chan_output(c->chan, &p, &n);
    if (n > 0)
        ev_io_start(c->loop, &c->wio);
    else
        ev_io_stop(c->loop, &c->wio);
    if (n > MAX_OUTPUT_BYTES)
        ev_io_stop(c->loop, &c->rio);
    else
        ev_io_start(c->loop, &c->rio);
}

void conn_send(struct conn *c, const uint8_t *buf, size_t len)
{
    if (c->closed)
        return;
    int rc = chan_send(c->chan, buf, len);
    if (rc) {
        log_warn("%s: cannot send: %s", c->addr, kv_strerror(rc));
        conn_close(c, "send failed");
        return;
    }
    conn_flush(c);
}

void conn_close(struct conn *c, const char *why)
{
    if (c->closed)
        return;
    c->closed = true;
    if (c->ops->closed)
        c->ops->closed(c);
    if (why)
        log_info("%s: connection closed: %s", c->addr, why);
    else
        log_debug("%s: connection closed by the other end", c->addr);
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_stop(c->loop, &c->timer);
    close(c->fd);
    chan_free(c->chan);
    c->chan = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        all_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->open_count)
        (*c->open_count)--;
    if (c->refs == 0)
        free(c);
}

static void on_established(struct conn *c)
{
    c->established = true;
    /* From now on the timer watches for idleness, not the handshake. */
    c->timer.repeat = c->idle_ms / 1000.0;
    ev_timer_again(c->loop, &c->timer);
    c->ops->established(c);
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), 0);
    if (r == 0) {
        conn_close(c, NULL);
        return;
    }
    if (r < 0) {
        if (errno != EAGAIN && errno != EINTR)
            conn_close(c, "read failed");
        return;
    }
    c->last_rx_ms = conn_loop_ms(loop);
    conn_ref(c); /* answering may close c; keep it until we are done */
    size_t off = 0;
    while (off < (size_t)r && !c->closed) {
        size_t used;
        int rc = chan_input(c->chan, rbuf + off, (size_t)r - off, &used);
        off += used;
        if (rc) {
            c->ops->refused(c, rc);
            char why[96];
            snprintf(why, sizeof(why), "%s %s",
                     c->established ? "bad frame:" : "handshake refused:",
                     kv_strerror(rc));
            conn_close(c, why);
            break;
        }
        if (!c->established && chan_established(c->chan))
            on_established(c);
        const uint8_t *msg;
        size_t len;
        if (!c->closed && chan_take(c->chan, &msg, &len))
            c->ops->message(c, msg, len);
    }
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
    if (!c->established) {
        conn_close(c, "handshake timed out");
        return;
    }
    uint64_t now = conn_loop_ms(loop);
    uint64_t idle_until = c->last_rx_ms + c->idle_ms;
    if (now >= idle_until && c->refs == 0) {
        conn_close(c, "idle timeout");
        return;
    }
    w->repeat = now >= idle_until ? 1.0 : (double)(idle_until - now) / 1000.0;
    ev_timer_again(loop, w);
}

static struct conn *conn_start(struct ev_loop *loop, int fd, const char *addr,
                               struct chan *chan, bool outbound,
                               uint32_t handshake_ms, uint32_t idle_ms,
                               const struct conn_ops *ops, void *owner)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        chan_free(chan);
        close(fd);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->loop = loop;
    c->fd = fd;
    c->chan = chan;
    c->outbound = outbound;
    c->ops = ops;
    c->owner = owner;
    c->idle_ms = idle_ms;
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    c->last_rx_ms = conn_loop_ms(loop);
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    ev_init(&c->timer, on_conn_timer);
    c->rio.data = c->wio.data = c->timer.data = c;
    c->timer.repeat = handshake_ms / 1000.0;
    ev_timer_again(loop, &c->timer);
    c->next = all_conns;
    if (all_conns)
        all_conns->prev = c;
    all_conns = c;
    ev_io_start(loop, &c->rio);
    if (outbound)
        ev_io_start(loop, &c->wio); /* fires once connected */
    return c;
}

struct conn *conn_accept(struct ev_loop *loop, int fd, const char *addr,
                         struct chan *chan, uint32_t handshake_ms,
                         uint32_t idle_ms, const struct conn_ops *ops,
                         void *owner, uint64_t *open_count)
{
    struct conn *c = conn_start(loop, fd, addr, chan, false, handshake_ms,
                                idle_ms, ops, owner);
    if (c && open_count) {
        c->open_count = open_count;
        (*open_count)++;
    }
    return c;
}

struct conn *conn_dial(struct ev_loop *loop, const char *addr,
                       struct chan *chan, uint32_t handshake_ms,
                       uint32_t idle_ms, const struct conn_ops *ops,
                       void *owner)
{
    char host[GOSSIP_ADDR_MAX], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV},
                    *res;
    if (net_split_hostport(addr, host, sizeof(host), port, sizeof(port)) ||
        getaddrinfo(host, port, &hints, &res) != 0) {
        chan_free(chan);
        return NULL;
    }
    int fd =
        socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) != 0 &&
                   errno != EINPROGRESS)) {
        log_info("dial %s: %s", addr, strerror(errno));
        freeaddrinfo(res);
        chan_free(chan);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    freeaddrinfo(res);
    return conn_start(loop, fd, addr, chan, true, handshake_ms, idle_ms, ops,
                      owner);
}

void conn_flush_all(void)
{
    for (struct conn *c = all_conns, *next; c; c = next) {
        next = c->next;
        conn_flush(c);
    }
}

void conn_close_all(void)
{
    while (all_conns)
        conn_close(all_conns, NULL);
}
