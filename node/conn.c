/* kvnode's connections over libev (conn.h): reading, framing through the
 * Noise channel, writing with backpressure, the handshake deadline and the
 * idle timeout, for clients and nodes alike.
 *
 * Backpressure (security review H1): each whole message is offered to the
 * owner's admit first; one it holds back, and the bytes read after it,
 * wait in the connection (at most one read's worth) while the socket is
 * not read. So does everything once more than out_bound bytes wait to be
 * written. A read takes at most READ_CHUNK bytes, and libev serves every
 * ready connection once per pass, so connections are read round-robin. */
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
/* Housekeeping: once a second, every connection's buffers, output and
 * unfinished message are looked at. */
#define HOUSEKEEPING_S 1.0
/* Buffers of a connection that moved nothing for this long are given
 * back (chan_trim). */
#define TRIM_AFTER_MS 2000

static struct conn *all_conns, *all_tail; /* newest first */
/* Accepted connections whose handshake has not finished, oldest first. */
static struct conn *hs_head, *hs_tail;
static size_t n_hs;

static void hs_remove(struct conn *c)
{
    if (!c->in_hs)
        return;
    c->in_hs = false;
    n_hs--;
    if (c->hs_prev)
        c->hs_prev->hs_next = c->hs_next;
    else
        hs_head = c->hs_next;
    if (c->hs_next)
        c->hs_next->hs_prev = c->hs_prev;
    else
        hs_tail = c->hs_prev;
    c->hs_prev = c->hs_next = NULL;
}
static uint8_t rbuf[READ_CHUNK];
static ev_timer housekeeping_w;
static bool housekeeping_on;

uint64_t conn_loop_ms(struct ev_loop *loop)
{
    return (uint64_t)(ev_now(loop) * 1000);
}

struct conn *conn_first(void)
{
    return all_conns;
}

void conn_ref(struct conn *c)
{
    c->refs++;
}

void conn_unref(struct conn *c)
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

size_t conn_output_bytes(const struct conn *c)
{
    const uint8_t *p;
    size_t n = 0;
    if (c->chan)
        chan_output(c->chan, &p, &n);
    return n;
}

static bool output_full(const struct conn *c)
{
    return c->out_bound && conn_output_bytes(c) > c->out_bound;
}

/* Reads while nothing waits: no message held back, output under its
 * bound. Bytes already read and not yet taken are taken first, in a pass
 * of their own (the watcher is fed; libev serves it with the others). */
static void update_reading(struct conn *c)
{
    if (c->closed)
        return;
    if (c->held || output_full(c)) {
        ev_io_stop(c->loop, &c->rio);
        return;
    }
    ev_io_start(c->loop, &c->rio);
    if (c->stash_len > c->stash_off)
        ev_feed_event(c->loop, &c->rio, EV_READ);
}

void conn_flush(struct conn *c)
{
    const uint8_t *p;
    size_t n, before;
    if (c->closed || (c->outbound && !c->connected))
        return;
    chan_output(c->chan, &p, &before);
    if (net_flush(c->chan, c->fd) != 0) {
        conn_close(c, "write failed");
        return;
    }
    chan_output(c->chan, &p, &n);
    if (n < before || n == 0)
        c->last_tx_ms = conn_loop_ms(c->loop);
    if (n > 0)
        ev_io_start(c->loop, &c->wio);
    else
        ev_io_stop(c->loop, &c->wio);
    update_reading(c);
}

void conn_resume(struct conn *c)
{
    if (!c->closed && c->held)
        ev_feed_event(c->loop, &c->rio, EV_READ);
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
    hs_remove(c);
    chan_free(c->chan);
    c->chan = NULL;
    free(c->stash);
    c->stash = NULL;
    c->stash_len = c->stash_off = 0;
    c->held = false;
    if (c->prev)
        c->prev->next = c->next;
    else
        all_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        all_tail = c->prev;
    if (c->open_count)
        (*c->open_count)--;
    if (c->refs == 0)
        free(c);
}

static void on_established(struct conn *c)
{
    c->established = true;
    hs_remove(c);
    /* From now on the timer watches for idleness, not the handshake. */
    c->timer.repeat = c->idle_ms / 1000.0;
    ev_timer_again(c->loop, &c->timer);
    c->ops->established(c);
}

/* The message the channel holds goes to the owner, unless its admit holds
 * it back. @retval false held back (c->held). */
static bool deliver(struct conn *c)
{
    const uint8_t *msg;
    size_t len;
    if (c->closed || !chan_take(c->chan, &msg, &len))
        return true;
    if (c->ops->admit && !c->ops->admit(c, msg, len)) {
        c->held = true;
        return false;
    }
    c->held = false;
    c->ops->message(c, msg, len);
    return true;
}

/* Feeds data to the channel, message by message, until it runs out or
 * something waits (a message held back, output over its bound).
 * @retval the bytes consumed. */
static size_t take_input(struct conn *c, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len && !c->closed && !c->held && !output_full(c)) {
        size_t used;
        int rc = chan_input(c->chan, data + off, len - off, &used);
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
        deliver(c);
    }
    return off;
}

/* Keeps the bytes not taken yet (at most one read's worth). */
static void stash(struct conn *c, const uint8_t *data, size_t len)
{
    if (c->closed || len == 0)
        return;
    if (!c->stash && !(c->stash = malloc(READ_CHUNK))) {
        conn_close(c, "out of memory");
        return;
    }
    memcpy(c->stash, data, len);
    c->stash_off = 0;
    c->stash_len = len;
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    conn_ref(c); /* answering may close c; keep it until we are done */
    if (c->held)
        deliver(c); /* the owner said it may now take it */
    if (!c->held && c->stash_len > c->stash_off) {
        c->stash_off +=
            take_input(c, c->stash + c->stash_off, c->stash_len - c->stash_off);
        if (c->stash_off == c->stash_len)
            c->stash_off = c->stash_len = 0;
    } else if (!c->held && !c->closed && !output_full(c)) {
        ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), 0);
        if (r == 0) {
            conn_close(c, NULL);
        } else if (r < 0) {
            if (errno != EAGAIN && errno != EINTR)
                conn_close(c, "read failed");
        } else {
            c->last_rx_ms = conn_loop_ms(loop);
            size_t used = take_input(c, rbuf, (size_t)r);
            stash(c, rbuf + used, (size_t)r - used);
        }
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

/* Once a second: a connection that stopped reading what it is sent, or
 * that takes too long to finish a message, is closed; one that moved
 * nothing for a while gives its buffers back. */
static void on_housekeeping(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    uint64_t now = conn_loop_ms(loop);
    for (struct conn *c = all_conns, *next; c; c = next) {
        next = c->next;
        size_t out = conn_output_bytes(c);
        if (out == 0 || (c->outbound && !c->connected))
            c->last_tx_ms = now;
        if (c->stall_ms && now - c->last_tx_ms >= c->stall_ms) {
            char why[96];
            snprintf(why, sizeof(why), "not reading: %zu bytes unsent for %u s",
                     out, c->stall_ms / 1000);
            conn_close(c, why);
            continue;
        }
        if (!chan_partial(c->chan) || c->held)
            c->partial_since_ms = 0;
        else if (!c->partial_since_ms)
            c->partial_since_ms = now;
        else if (c->partial_ms && now - c->partial_since_ms >= c->partial_ms) {
            char why[96];
            snprintf(why, sizeof(why), "a message unfinished after %u s",
                     c->partial_ms / 1000);
            conn_close(c, why);
            continue;
        }
        if (!c->held && c->stash_len == 0 && out == 0 &&
            now - c->last_rx_ms >= TRIM_AFTER_MS) {
            chan_trim(c->chan);
            free(c->stash);
            c->stash = NULL;
        }
    }
}

size_t conn_memory(const struct conn *c)
{
    return sizeof(*c) + (c->stash ? READ_CHUNK : 0) +
           (c->chan ? chan_memory(c->chan) : 0);
}

struct conn *conn_oldest_handshake(const char *host)
{
    for (struct conn *c = hs_head; c; c = c->hs_next)
        if (!host || strcmp(c->host, host) == 0)
            return c;
    return NULL;
}

size_t conn_handshakes(const char *host)
{
    if (!host)
        return n_hs;
    size_t n = 0;
    for (struct conn *c = hs_head; c; c = c->hs_next)
        n += strcmp(c->host, host) == 0;
    return n;
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
    snprintf(c->host, sizeof(c->host), "%s", addr);
    char *colon = strrchr(c->host, ':');
    if (colon)
        *colon = '\0';
    c->last_rx_ms = c->last_tx_ms = conn_loop_ms(loop);
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    ev_init(&c->timer, on_conn_timer);
    c->rio.data = c->wio.data = c->timer.data = c;
    c->timer.repeat = handshake_ms / 1000.0;
    ev_timer_again(loop, &c->timer);
    c->next = all_conns;
    if (all_conns)
        all_conns->prev = c;
    else
        all_tail = c;
    all_conns = c;
    if (!housekeeping_on) {
        ev_timer_init(&housekeeping_w, on_housekeeping, HOUSEKEEPING_S,
                      HOUSEKEEPING_S);
        ev_timer_start(loop, &housekeeping_w);
        housekeeping_on = true;
    }
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
    if (c) {
        c->in_hs = true;
        n_hs++;
        c->hs_prev = hs_tail;
        if (hs_tail)
            hs_tail->hs_next = c;
        else
            hs_head = c;
        hs_tail = c;
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
