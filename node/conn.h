/* conn: kvnode's connections over libev (DESIGN §9). Private to node/.
 *
 * Every TCP stream of the node is a struct conn: a Noise channel on a
 * non-blocking socket that moves through started -> handshake (deadline
 * handshake_ms) -> established (dropped after idle_ms without a byte while
 * nothing refers to it) -> closed. What happens on it belongs to its owner
 * through struct conn_ops: the server's for clients, the transport's for
 * nodes (an accepted connection goes to the transport once its handshake
 * proves a node). A closed connection is kept as a shell while anything
 * refers to it (a reference count), so a completion or a caller never
 * touches freed memory. */
#ifndef ESSAIM_NODE_CONN_H
#define ESSAIM_NODE_CONN_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../proto/proto.h"

struct conn;

struct conn_ops {
    /* The handshake finished. */
    void (*established)(struct conn *c);
    /* One whole message arrived. */
    void (*message)(struct conn *c, const uint8_t *buf, size_t len);
    /* Whether message may take that message now. NULL: always. false
     * holds it, and stops reading, until conn_resume. */
    bool (*admit)(struct conn *c, const uint8_t *buf, size_t len);
    /* Bytes were refused (rc): a failed handshake, or a frame that failed
     * authentication; the connection closes right after. */
    void (*refused)(struct conn *c, int rc);
    /* The connection is closing: drop every reference to it. NULL: none. */
    void (*closed)(struct conn *c);
};

/* Takes an accepted socket with its responder channel, counted in
 * *open_count until it closes. @retval NULL out of memory (fd closed). */
struct conn *conn_accept(struct ev_loop *loop, int fd, const char *addr,
                         struct chan *chan, uint32_t handshake_ms,
                         uint32_t idle_ms, const struct conn_ops *ops,
                         void *owner, uint64_t *open_count);

/* Encrypts and writes a message; closes c on failure, does nothing once
 * closed. */
void conn_send(struct conn *c, const uint8_t *buf, size_t len);

/* Closes (logging why, when not NULL) and frees once unreferenced. */
void conn_close(struct conn *c, const char *why);

/* The owner's admit may now take the message it held back: it is offered
 * again on the loop's next pass. */
void conn_resume(struct conn *c);

/* Bytes queued and not yet written to the socket. */
size_t conn_output_bytes(const struct conn *c);

/* What c holds on the heap: itself, its channel, bytes read not taken. */
size_t conn_memory(const struct conn *c);

/* The accepted connection that has waited longest for its handshake, from
 * host (NULL: any), and how many wait. */
struct conn *conn_oldest_handshake(const char *host);
size_t conn_handshakes(const char *host);

/* Every connection, newest first (follow ->next). */
struct conn *conn_first(void);

/* Keeps c's memory (a closed shell) until the matching conn_unref. */
void conn_ref(struct conn *c);
void conn_unref(struct conn *c);

bool conn_closed(const struct conn *c);
const char *conn_addr(const struct conn *c);
struct chan *conn_chan(struct conn *c);
void *conn_owner(const struct conn *c);

/* Writes what every connection holds (answers go out before exit), then
 * closes them all. */
void conn_flush_all(void);
void conn_close_all(void);

/* The fields are the transport's to read (conn.c and transport.c). */
struct conn {
    struct ev_loop *loop;
    const struct conn_ops *ops;
    void *owner; /* the ops' own state for this connection */
    int fd;
    ev_io rio, wio;
    ev_timer timer;
    struct chan *chan;
    bool established; /* the handshake finished */
    bool closed;      /* fd gone; kept only while refs > 0 */
    bool outbound;    /* this node dialled it */
    bool connected;   /* outbound: the TCP connect finished */
    bool held;        /* admit held back the channel's message */
    unsigned refs;    /* callbacks that are using it */
    uint32_t idle_ms;
    /* Set by the owner (0: no limit): output beyond out_bound stops
     * reading; output that moves not at all for stall_ms, or a message
     * unfinished after partial_ms, closes the connection. */
    size_t out_bound;
    uint32_t stall_ms, partial_ms;
    uint64_t last_rx_ms, last_tx_ms, partial_since_ms;
    uint8_t *stash; /* read, not yet taken: [stash_off, stash_len) */
    size_t stash_off, stash_len;
    uint64_t *open_count; /* decremented at close, when set */
    void *user;           /* the owner's, per connection */
    char addr[64];        /* host:port of the other end */
    char host[64];        /* host alone */
    struct conn *prev, *next;
    bool in_hs; /* accepted, handshake not finished: on that list */
    struct conn *hs_prev, *hs_next;
};

/* Dials a numeric host:port without blocking; the handshake starts once the
 * TCP connect finishes. @retval NULL it could not even be started (chan
 * freed). */
struct conn *conn_dial(struct ev_loop *loop, const char *addr,
                       struct chan *chan, uint32_t handshake_ms,
                       uint32_t idle_ms, const struct conn_ops *ops,
                       void *owner);

/* Writes what the channel holds; arms the write watcher if the socket is
 * full and pauses reading while the other end lets output pile up beyond
 * out_bound. */
void conn_flush(struct conn *c);

/* The loop's time in ms. */
uint64_t conn_loop_ms(struct ev_loop *loop);

#endif
