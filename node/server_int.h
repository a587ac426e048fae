/* The server's state, shared by server.c (the loop, accepting, the core's
 * env) and clients.c (what clients may do and hold, and the access list).
 * Private to node/. */
#ifndef ESSAIM_NODE_SERVER_INT_H
#define ESSAIM_NODE_SERVER_INT_H

#include "node.h"

#include "../accel/accel.h"
#include "access.h"
#include "conn.h"
#include "remember.h"

#include <ev.h>

/* What one client may make the node hold (security review H1; the README's
 * "Limits under load, and memory" adds them up). A request the coordinator
 * takes (get, put, del, where) reserves what it may hold until answered: a get
 * the largest answer, a put twice its message (the coordinator's copy and the
 * local write), a del or where its message and a page. */
#define CLIENT_MAX_IN_FLIGHT 128        /* requests per connection */
#define CLIENT_BUDGET (8u << 20)        /* reserved per connection */
#define CLIENT_OUT_BOUND (4u << 20)     /* answers queued: stop reading */
#define NODE_CLIENT_BUDGET (256u << 20) /* reserved, all connections */
#define STORAGE_QUEUE_BOUND (32u << 20) /* client writes wait beyond it */
/* Handshakes (security review H2): at most a quarter of the connections
 * (and 64 at least) wait for theirs at once; past that, or at the
 * connection limit, the one that waited longest is closed, so an
 * authenticating client always gets in. Under pressure (half of those
 * slots taken) one address holds at most 32 of them, and a new handshake
 * gets a quarter of the usual time. */
#define HANDSHAKE_SHARE 4
#define HANDSHAKE_MIN_SLOTS 64
#define HANDSHAKES_PER_SOURCE 32

enum { KIND_CLIENT, KIND_PEER }; /* the kinds of connection on the port */

struct server {
    struct ev_loop *loop;
    const struct node_config *cfg;
    struct service svc;
    int listen_fd;
    int lock_fd; /* DATA/LOCK, held for the process's life */
    ev_io accept_w;
    ev_async store_async;
    ev_signal sigterm_w, sigint_w;
    ev_timer sweep_w;
    struct core *core; /* also svc.core */
    struct transport *transport;
    ev_timer gossip_timer_w; /* membership's one timer */
    struct timer *gossip_timer;
    bool stopping;
    bool phase_found;    /* DATA/ring-phase named this node's phase */
    int exit_code;       /* what server_run returns after a clean stop */
    uint8_t saved_phase; /* as last written there (0xff: never) */
    struct secrets *sec; /* sodium_malloc: locked, out of core dumps */
    bool have_old;
    struct fault *fault; /* on only with --fault-injection */
    struct accel *accel;
    struct remembered remembered; /* DATA/members, as last written */
    size_t n_waiting;             /* clients held for the node's budget */
    /* --access: the clients with keys of their own, and their roles */
    struct access_list access;
    bool have_access;
    uint64_t access_version;   /* the HLC of the change that made the list */
    uint64_t access_spread_ms; /* when it was last offered to a member */
    uint8_t identity_psk[CRYPTO_KEY_BYTES];
    ev_signal sighup_w;
    uint64_t audit_since_log, audit_log_ms;     /* refusals */
    uint64_t refused_since_log, refused_log_ms; /* connections */
};

/* The node's secrets, in memory that is locked, kept out of core dumps
 * and guarded (sodium_malloc; security review L3). */
struct secrets {
    uint8_t node_priv[CRYPTO_KEY_BYTES];
    uint8_t client[CRYPTO_KEY_BYTES];
    uint8_t cluster[CRYPTO_KEY_BYTES];
    /* --old-cluster-key: accepted from peers, never sent */
    uint8_t old_cluster[CRYPTO_KEY_BYTES];
};

/* A client's requests in flight, by the id it gave each (one answer comes
 * back per request, so duplicates still add up). */
struct flight {
    uint64_t id, bytes;
};

struct client {
    uint8_t role; /* enum access_role: admin for the shared secret */
    char name[ACCESS_NAME_MAX];
    uint8_t key[CRYPTO_KEY_BYTES]; /* with --access: the key it proved */
    uint32_t n;
    bool waits; /* held back by the node's budget or storage, not its own */
    uint64_t reserved;
    struct flight f[CLIENT_MAX_IN_FLIGHT];
};

/* clients.c, for server.c */

/* The ops of every accepted connection until it proves a node. */
extern const struct conn_ops server_client_ops;

/* An answer (MSG_RESULT or MSG_WHERE_RESULT) to request id went out: what
 * the request reserved is free. */
void clients_answered(struct server *srv, struct conn *c, uint64_t id);

/* Clients held back for the node's budget, the storage queue or a slow
 * peer try again. */
void clients_resume_waiting(struct server *srv);

/* --access at start: the file, or DATA/access when newer.
 * @retval 0, or an error (logged). */
int clients_access_start(struct server *srv);

/* Every sweep: the access list to one member now and then. */
void clients_offer_access(struct server *srv, uint64_t now_ms);

/* A member's access list (transport_set_access_handler). */
void clients_on_access_set(void *arg, const uint8_t from[CRYPTO_NODE_ID_BYTES],
                           const struct msg *m);

/* SIGHUP. */
void clients_on_sighup(struct ev_loop *loop, ev_signal *w, int revents);

#endif
