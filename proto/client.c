/* kvc: the blocking client library. One TCP connection, the client side of
 * the secure channel with the client secret and a fresh static key per
 * connection (DESIGN §8), and requests that may be pipelined: kvc_send any
 * number, then kvc_recv the answers by id. */
#include "proto.h"

#include "../common/common.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct kvc {
    int fd;
    struct chan *chan;
    uint64_t next_id;
    uint64_t hlc; /* the session's highest HLC */
    struct msg_welcome welcome;
    struct msg_limits limits;
    uint8_t *rbuf; /* bytes read but not yet fed to the channel */
    size_t rbuf_off, rbuf_len;
    struct msg last; /* the last answer decoded; freed at the next one */
};

#define RBUF_SIZE 65536

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, timeout_ms);
        if (n > 0)
            return 0;
        if (n == 0)
            return KV_ERR_TIMEOUT;
        if (errno != EINTR)
            return KV_ERR_IO;
    }
}

static int connect_tcp(const char *hostport, int timeout_ms, int *out)
{
    char host[256], port[16];
    if (net_split_hostport(hostport, host, sizeof(host), port, sizeof(port)) ||
        !host[0])
        return KV_ERR_INVAL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return KV_ERR_INVAL;
    int rc = KV_ERR_UNAVAILABLE;
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family,
                        ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ||
            (errno == EINPROGRESS &&
             (rc = wait_fd(fd, POLLOUT, timeout_ms)) == 0)) {
            int err = 0;
            socklen_t el = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (err == 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                *out = fd;
                freeaddrinfo(res);
                return 0;
            }
            errno = err; /* so callers can say why */
            rc = KV_ERR_UNAVAILABLE;
        } else if (rc != KV_ERR_TIMEOUT) {
            rc = KV_ERR_UNAVAILABLE;
        }
        int saved = errno;
        close(fd);
        errno = saved;
    }
    freeaddrinfo(res);
    return rc;
}

/* Writes everything the channel has queued, waiting while the socket is
 * full. */
static int flush(struct kvc *c, int timeout_ms)
{
    const uint8_t *p;
    size_t n;
    for (;;) {
        int rc = net_flush(c->chan, c->fd);
        if (rc)
            return rc;
        chan_output(c->chan, &p, &n);
        if (n == 0)
            return 0;
        if ((rc = wait_fd(c->fd, POLLOUT, timeout_ms)))
            return rc;
    }
}

/* Reads until the channel yields a message (or the handshake completes when
 * want_msg is false). */
static int pump(struct kvc *c, bool want_msg, const uint8_t **msg, size_t *len,
                int timeout_ms)
{
    uint64_t deadline = clock_mono_ms() + (uint64_t)timeout_ms;
    for (;;) {
        while (c->rbuf_off < c->rbuf_len) {
            size_t used;
            int rc = chan_input(c->chan, c->rbuf + c->rbuf_off,
                                c->rbuf_len - c->rbuf_off, &used);
            c->rbuf_off += used;
            if (rc)
                return rc;
            if ((rc = flush(c, timeout_ms)))
                return rc;
            if (want_msg && chan_take(c->chan, msg, len))
                return 0;
        }
        if (!want_msg && chan_established(c->chan))
            return 0;
        uint64_t now = clock_mono_ms();
        if (now >= deadline)
            return KV_ERR_TIMEOUT;
        int rc = wait_fd(c->fd, POLLIN, (int)(deadline - now));
        if (rc)
            return rc;
        ssize_t r = recv(c->fd, c->rbuf, RBUF_SIZE, 0);
        if (r == 0)
            return KV_ERR_CLOSED;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return errno == ECONNRESET ? KV_ERR_CLOSED : KV_ERR_IO;
        }
        c->rbuf_off = 0;
        c->rbuf_len = (size_t)r;
    }
}

void proto_identity_psk(uint8_t psk[CRYPTO_KEY_BYTES])
{
    static const char label[] = "essaim/1 identity: a public PSK; the static "
                                "key is what is checked";
    crypto_generichash(psk, CRYPTO_KEY_BYTES, (const uint8_t *)label,
                       sizeof(label) - 1, NULL, 0);
}

/* Connects and runs the handshake of one kind, static key priv (NULL: a
 * fresh one), then waits for the welcome. */
static int open_session(struct kvc **out, const char *hostport,
                        const char *prologue, const uint8_t *psk,
                        const uint8_t *static_priv, int timeout_ms)
{
    struct kvc *c = calloc(1, sizeof(*c));
    if (!c)
        return KV_ERR_NOMEM;
    c->fd = -1;
    c->next_id = 1;
    c->limits.max_key = PROTO_MAX_KEY;
    c->limits.max_value = PROTO_MAX_VALUE_LIMIT;
    c->rbuf = malloc(RBUF_SIZE);
    uint8_t priv[CRYPTO_KEY_BYTES];
    if (static_priv)
        memcpy(priv, static_priv, sizeof(priv));
    else
        randombytes_buf(priv, sizeof(priv));
    int rc = c->rbuf ? 0 : KV_ERR_NOMEM;
    if (rc == 0)
        rc = connect_tcp(hostport, timeout_ms, &c->fd);
    if (rc == 0)
        rc = chan_new(&c->chan, NOISE_INITIATOR, prologue, psk, priv,
                      PROTO_MAX_VALUE_LIMIT + PROTO_MSG_OVERHEAD);
    sodium_memzero(priv, sizeof(priv));
    if (rc == 0)
        rc = flush(c, timeout_ms);
    if (rc == 0)
        rc = pump(c, false, NULL, NULL, timeout_ms);
    /* With XXpsk3 the node learns whether the secret is right only from our
     * third message; it answers a good one with its welcome and a bad one by
     * closing. So a close before the welcome is a refused secret. */
    struct msg m;
    const uint8_t *p;
    size_t n;
    if (rc == 0) {
        rc = pump(c, true, &p, &n, timeout_ms);
        if (rc == KV_ERR_CLOSED || rc == KV_ERR_IO)
            rc = KV_ERR_AUTH;
    }
    if (rc == 0)
        rc = msg_decode(p, n, &c->limits, &m);
    /* A node that does not take this key says so in place of a welcome. */
    if (rc == 0 && m.type == MSG_RESULT && m.u.result.code != 0)
        rc = m.u.result.code == KV_ERR_AUTH ? KV_ERR_AUTH : KV_ERR_PROTO;
    else if (rc == 0 && m.type != MSG_WELCOME)
        rc = KV_ERR_PROTO;
    if (rc) {
        kvc_close(c);
        return rc;
    }
    c->welcome = m.u.welcome;
    c->hlc = m.hlc;
    *out = c;
    return 0;
}

int kvc_connect(struct kvc **out, const char *hostport,
                const uint8_t secret[CRYPTO_KEY_BYTES], int timeout_ms)
{
    return open_session(out, hostport, PROTO_PROLOGUE_CLIENT, secret, NULL,
                        timeout_ms);
}

int kvc_connect_identity(struct kvc **out, const char *hostport,
                         const uint8_t identity[CRYPTO_KEY_BYTES],
                         int timeout_ms)
{
    uint8_t psk[CRYPTO_KEY_BYTES];
    proto_identity_psk(psk);
    return open_session(out, hostport, PROTO_PROLOGUE_IDENTITY, psk, identity,
                        timeout_ms);
}

const uint8_t *kvc_node_key(const struct kvc *c)
{
    return chan_remote_static(c->chan);
}

void kvc_close(struct kvc *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    msg_free(&c->last);
    chan_free(c->chan);
    free(c->rbuf);
    free(c);
}

const struct msg_welcome *kvc_welcome(const struct kvc *c)
{
    return &c->welcome;
}

int kvc_send(struct kvc *c, struct msg *m)
{
    m->id = c->next_id++;
    m->hlc = c->hlc;
    uint8_t *buf;
    size_t len;
    int rc = msg_encode(m, &buf, &len);
    if (rc)
        return rc;
    rc = chan_send(c->chan, buf, len);
    free(buf);
    return rc ? rc : flush(c, 30000);
}

int kvc_recv(struct kvc *c, struct msg *m, int timeout_ms)
{
    const uint8_t *p;
    size_t n;
    msg_free(&c->last);
    int rc = pump(c, true, &p, &n, timeout_ms);
    if (rc == 0)
        rc = msg_decode(p, n, &c->limits, &c->last);
    if (rc)
        return rc;
    /* The library owns what it decoded (a members list is allocated), so
     * callers never free an answer; *m is valid until the next kvc_recv. */
    *m = c->last;
    if (m->hlc > c->hlc)
        c->hlc = m->hlc;
    return 0;
}

int kvc_call(struct kvc *c, struct msg *m, int timeout_ms)
{
    int rc = kvc_send(c, m);
    if (rc)
        return rc;
    uint64_t id = m->id;
    rc = kvc_recv(c, m, timeout_ms);
    if (rc == 0 && m->id != id)
        rc = KV_ERR_PROTO;
    return rc;
}

uint64_t kvc_session_hlc(const struct kvc *c)
{
    return c->hlc;
}
