/* kvnode's event loop (DESIGN §1, §3, §9): the libev adapter of the node
 * core. One libev loop runs all network I/O and the core on one thread;
 * durable writes go to the storage writer thread and come back through an
 * ev_async. This file listens, serves clients, implements the core's env
 * over the transport (transport.c: connections, peer links, datagrams),
 * storage/ and accel/, handles signals, and calls only core_* for protocol
 * work.
 *
 * Clients and nodes share the port: the first handshake message says which
 * kind a connection is; a client gets a welcome, a node's connection goes
 * to the transport as a link. */
#include "node.h"

#include "../accel/accel.h"
#include "../common/common.h"
#include "access.h"
#include "fault.h"
#include "conn.h"
#include "remember.h"
#include "transport.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define SWEEP_INTERVAL (CORE_TICK_MS / 1000.0) /* s: core_tick */

/* What one client may make the node hold (security review H1; the README's
 * "Memory" section adds them up). A request the coordinator takes (get,
 * put, del, where) reserves what it may hold until answered: a get the
 * largest answer, a put twice its message (the coordinator's copy and the
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

/* ---- clients ---- */

static const struct conn_ops client_ops;

static bool coordinated(int type)
{
    return type == MSG_GET || type == MSG_PUT || type == MSG_DEL ||
           type == MSG_WHERE;
}

static uint64_t reservation(const struct server *srv, int type, size_t len)
{
    switch (type) {
    case MSG_GET:
        return (uint64_t)srv->cfg->max_value + srv->cfg->max_key +
               PROTO_MSG_OVERHEAD;
    case MSG_PUT:
        return 2 * (uint64_t)len;
    default:
        return (uint64_t)len + 4096;
    }
}

/* Whether a client's next message may go to the coordinator now. A
 * connection with nothing in flight and nothing queued may always send
 * one (so a quiet client is served whatever others hold); past that, its
 * own limits and the node's budget hold it back until answers free them.
 * Writes also wait while the storage queue is long or a peer reads more
 * slowly than this node sends to it. */
static bool client_admit(struct conn *c, const uint8_t *req, size_t len)
{
    struct server *srv = conn_owner(c);
    struct client *cl = c->user;
    int type = msg_peek_type(req, len);
    if (!cl || !coordinated(type))
        return true; /* answered at once, or refused */
    uint64_t need = reservation(srv, type, len);
    bool alone = cl->n == 0 && conn_output_bytes(c) == 0;
    if (!alone &&
        (cl->n >= CLIENT_MAX_IN_FLIGHT || cl->reserved + need > CLIENT_BUDGET))
        return false; /* its own answers resume it */
    bool write = type == MSG_PUT || type == MSG_DEL;
    if ((!alone &&
         srv->svc.counters.client_reserved + need > NODE_CLIENT_BUDGET) ||
        (write && (storage_queued_bytes(srv->svc.st) > STORAGE_QUEUE_BOUND ||
                   transport_slow(srv->transport)))) {
        if (!cl->waits) {
            cl->waits = true;
            srv->n_waiting++;
        }
        return false;
    }
    return true;
}

/* Something was freed: clients held back for the node's budget, the
 * storage queue or a slow peer try again (their own limits resume them
 * one by one). */
static void resume_waiting(struct server *srv)
{
    if (!srv->n_waiting)
        return;
    for (struct conn *c = conn_first(); c; c = c->next) {
        struct client *cl = c->user;
        if (c->ops == &client_ops && cl && cl->waits) {
            cl->waits = false;
            srv->n_waiting--;
            conn_resume(c);
        }
    }
}

static void flight_add(struct server *srv, struct conn *c, uint64_t id,
                       uint64_t bytes)
{
    struct client *cl = c->user;
    if (cl->n == CLIENT_MAX_IN_FLIGHT) /* only the one alone may pass */
        return;
    cl->f[cl->n++] = (struct flight){id, bytes};
    cl->reserved += bytes;
    srv->svc.counters.client_reserved += bytes;
}

static void flight_done(struct server *srv, struct conn *c, uint64_t id)
{
    struct client *cl = c->user;
    if (!cl)
        return;
    for (uint32_t i = 0; i < cl->n; i++)
        if (cl->f[i].id == id) {
            cl->reserved -= cl->f[i].bytes;
            srv->svc.counters.client_reserved -= cl->f[i].bytes;
            cl->f[i] = cl->f[--cl->n];
            conn_resume(c);
            resume_waiting(srv);
            return;
        }
}

static const char *request_name(int type)
{
    switch (type) {
    case MSG_GET:
        return "get";
    case MSG_PUT:
        return "put";
    case MSG_DEL:
        return "del";
    case MSG_WHERE:
        return "where";
    case MSG_STATUS:
        return "status";
    case MSG_MEMBERS:
        return "members";
    case MSG_RING:
        return "ring";
    case MSG_REPAIR:
        return "repair";
    case MSG_FAULT:
        return "fault";
    case MSG_TOPO:
        return "decommission or removenode";
    default:
        return "this request";
    }
}

/* Audit: refusals, a line a second at most, each naming the client. */
static void audit_refusal(struct server *srv, const char *what)
{
    srv->audit_since_log++;
    uint64_t now = (uint64_t)(ev_now(srv->loop) * 1000);
    if (srv->audit_log_ms && now - srv->audit_log_ms < 1000)
        return;
    log_warn("audit: refused %s (%llu refusal(s) since the last line)", what,
             (unsigned long long)srv->audit_since_log);
    srv->audit_since_log = 0;
    srv->audit_log_ms = now;
}

/* Sends an error in place of an answer (id: the request's) and, when close
 * is set, closes the connection after it. */
static void client_error(struct server *srv, struct conn *c, uint64_t id,
                         int code, const char *text, bool close)
{
    uint8_t *buf;
    size_t n;
    if (service_error(&srv->svc, id, code, text, &buf, &n) == 0) {
        conn_send(c, buf, n);
        free(buf);
    }
    if (close)
        conn_close(c, text);
}

/* Who a new client is: with --access, the key its handshake proved must be
 * listed (its name and role come from there); with the shared secret it is
 * "client", with every right. @retval false refused (closed). */
static bool client_identify(struct server *srv, struct conn *c,
                            struct client *cl)
{
    if (!srv->have_access) {
        cl->role = ROLE_ADMIN;
        snprintf(cl->name, sizeof(cl->name), "client");
        return true;
    }
    const uint8_t *key = chan_remote_static(conn_chan(c));
    const struct access_entry *e = access_find(&srv->access, key);
    if (!e) {
        srv->svc.counters.refused_key++;
        char what[200], b64[64];
        sodium_bin2base64(b64, sizeof(b64), key, CRYPTO_KEY_BYTES,
                          sodium_base64_VARIANT_ORIGINAL);
        snprintf(what, sizeof(what), "key %s from %s: not in the access file",
                 b64, conn_addr(c));
        audit_refusal(srv, what);
        client_error(srv, c, 0, KV_ERR_AUTH,
                     "this key is not allowed on this cluster", true);
        return false;
    }
    memcpy(cl->key, e->key, sizeof(cl->key));
    snprintf(cl->name, sizeof(cl->name), "%s", e->name);
    cl->role = e->role;
    return true;
}

/* Whether the client's role allows a request of this type; a refusal is
 * answered (exit 4 in kvcli, naming the role needed), counted and
 * audited. Admin requests are logged with the client's name. */
static bool client_may(struct server *srv, struct conn *c, int type,
                       const uint8_t *req, size_t len)
{
    struct client *cl = c->user;
    if (!cl || type < 0)
        return true; /* a malformed request: the service answers it */
    int need = access_role_needed(type);
    if (need > cl->role) {
        uint64_t id = 0;
        msg_peek_id(req, len, &id);
        srv->svc.counters.refused_role++;
        char text[200];
        snprintf(text, sizeof(text), "%s needs the %s role; key %s has %s",
                 request_name(type), access_role_name(need), cl->name,
                 access_role_name(cl->role));
        audit_refusal(srv, text);
        client_error(srv, c, id, KV_ERR_AUTH, text, false);
        return false;
    }
    srv->svc.counters.role_requests[cl->role]++;
    if (need == ROLE_ADMIN)
        log_info("audit: %s (%s) runs %s", cl->name, conn_addr(c),
                 request_name(type));
    return true;
}

/* ---- the access list, cluster-wide ----
 *
 * The list has a version: the HLC of the change that made it (kvcli access,
 * or a SIGHUP that read the file again), or, for the --access file at
 * start, its modification time. Each node keeps the newest in DATA/access.
 * A change is sent to every live member at once, and every few seconds a
 * node offers its list to one member at random: a node that has an older
 * one takes it, one that has a newer one sends it back. So a node that was
 * down, or started with an older file, catches up. */

#define ACCESS_SPREAD_MS 2000

static void access_path(const struct server *srv, char *out, size_t cap)
{
    snprintf(out, cap, "%s/access", srv->cfg->data_dir);
}

/* DATA/access: "# essaim access list, version V" and the list. */
static void save_access(struct server *srv)
{
    char path[sizeof(srv->cfg->data_dir) + 16], tmp[sizeof(path) + 8];
    access_path(srv, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    size_t len;
    char *text = access_render(&srv->access, &len);
    FILE *f = text ? fopen(tmp, "w") : NULL;
    bool ok = f &&
              fprintf(f, "# essaim access list, version %llu\n",
                      (unsigned long long)srv->access_version) > 0 &&
              fwrite(text, 1, len, f) == len;
    ok = f && fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    if (f)
        ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0)
        log_error("cannot write %s: %s", path, strerror(errno));
    free(text);
}

/* The list DATA/access holds and its version; false when there is none
 * that parses. */
static bool load_saved_access(struct server *srv, struct access_list *l,
                              uint64_t *version)
{
    char path[sizeof(srv->cfg->data_dir) + 16], err[320];
    access_path(srv, path, sizeof(path));
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    bool ok = f && fscanf(f, "# essaim access list, version %llu", &v) == 1;
    if (f)
        fclose(f);
    if (!ok)
        return false;
    if (access_load(path, l, err, sizeof(err)) != 0) {
        log_warn("access: %s; ignoring it", err);
        return false;
    }
    *version = v;
    return true;
}

/* Takes list l as the node's (version v): clients whose key left it are
 * closed, the others take their new name and role; DATA/access keeps it. */
static void apply_access(struct server *srv, struct access_list *l, uint64_t v,
                         const char *why)
{
    access_free(&srv->access);
    srv->access = *l;
    srv->access_version = v;
    size_t closed = 0;
    for (struct conn *c = conn_first(), *next; c; c = next) {
        next = c->next;
        struct client *cl = c->user;
        if (c->ops != &client_ops || !cl || c->closed)
            continue;
        const struct access_entry *e = access_find(&srv->access, cl->key);
        if (!e) {
            log_info("audit: %s (%s) closed: its key left the access list",
                     cl->name, conn_addr(c));
            conn_close(c, "its key was removed from the access list");
            closed++;
            continue;
        }
        snprintf(cl->name, sizeof(cl->name), "%s", e->name);
        cl->role = e->role;
    }
    save_access(srv);
    log_info("access: %s: %zu client(s), version %llu; %zu connection(s) "
             "closed",
             why, srv->access.n, (unsigned long long)v, closed);
}

/* Sends the list to one member (to: its id), or to every live one. */
static void spread_access(struct server *srv, const uint8_t *to)
{
    size_t len;
    char *text = access_render(&srv->access, &len);
    if (!text)
        return;
    struct msg m = {.type = MSG_ACCESS_SET, .hlc = core_hlc(srv->core)->last};
    m.u.access_result.version = srv->access_version;
    m.u.access_result.text = text;
    m.u.access_result.text_len = len;
    struct membership *ms = core_membership(srv->core);
    for (size_t i = 1; !to && i < membership_size(ms); i++) {
        const struct wire_member *w = &membership_get(ms, i)->info;
        if (w->status == MEMBER_ALIVE || w->status == MEMBER_SUSPECT)
            transport_send(srv->transport, w->id, &m);
    }
    if (to)
        transport_send(srv->transport, to, &m);
    free(text);
}

/* A member's list: newer ones are taken, older ones answered with ours. */
static void on_access_set(void *arg, const uint8_t from[CRYPTO_NODE_ID_BYTES],
                          const struct msg *m)
{
    struct server *srv = arg;
    const struct msg_access_result *a = &m->u.access_result;
    if (!srv->have_access)
        return;
    if (a->version < srv->access_version) {
        spread_access(srv, from);
        return;
    }
    if (a->version == srv->access_version)
        return;
    /* A version stamped further ahead than any honest clock would stay the
     * newest for good (as records are refused, DESIGN §4). */
    if (hlc_too_far_ahead(a->version, service_wall_ms(&srv->svc),
                          srv->cfg->max_clock_offset_ms)) {
        log_warn("access: refused a list stamped ahead of this node's clock");
        return;
    }
    struct access_list l;
    char err[320], what[64], hex[13];
    hex_encode(hex, from, 6);
    snprintf(what, sizeof(what), "the access list from %s", hex);
    if (access_parse(a->text, a->text_len, what, &l, err, sizeof(err)) != 0) {
        log_warn("access: %s; keeping this node's", err);
        return;
    }
    apply_access(srv, &l, a->version, what);
}

/* Every ACCESS_SPREAD_MS: the list to one live member at random. */
static void offer_access(struct server *srv, uint64_t now_ms)
{
    if (!srv->have_access || now_ms - srv->access_spread_ms < ACCESS_SPREAD_MS)
        return;
    srv->access_spread_ms = now_ms;
    struct membership *ms = core_membership(srv->core);
    size_t n = membership_size(ms);
    if (n < 2)
        return;
    uint64_t r;
    randombytes_buf(&r, sizeof(r));
    for (size_t k = 0; k < n - 1; k++) {
        const struct wire_member *w =
            &membership_get(ms, 1 + (r + k) % (n - 1))->info;
        if (w->status == MEMBER_ALIVE) {
            spread_access(srv, w->id);
            return;
        }
    }
}

/* SIGHUP: the access file again, as a new version for the whole cluster.
 * A file that does not parse leaves the list as it was. */
static void reload_access(struct server *srv)
{
    if (!srv->have_access) {
        log_info("SIGHUP: no --access file to reload");
        return;
    }
    struct access_list l;
    char err[320];
    if (access_load(srv->cfg->access, &l, err, sizeof(err)) != 0) {
        log_error("access: %s; keeping the %zu client(s) of the list as it "
                  "was",
                  err, srv->access.n);
        return;
    }
    uint64_t v = hlc_now(core_hlc(srv->core), service_wall_ms(&srv->svc));
    apply_access(srv, &l, v, "reloaded the access file");
    spread_access(srv, NULL);
}

/* kvcli access list|add|remove (admin): changes the list here, as a new
 * version that goes to every member; answers with the list. */
static void handle_access(struct server *srv, struct conn *c,
                          const uint8_t *req, size_t len)
{
    struct msg q;
    struct msg_limits lim = {srv->cfg->max_key, srv->cfg->max_value};
    uint64_t id = 0;
    msg_peek_id(req, len, &id);
    if (msg_decode(req, len, &lim, &q) != 0) {
        client_error(srv, c, id, KV_ERR_PROTO, "malformed access request",
                     false);
        return;
    }
    char arg[1025], why[200];
    snprintf(arg, sizeof(arg), "%.*s", (int)q.u.access.arg_len, q.u.access.arg);
    uint8_t op = q.u.access.op;
    msg_free(&q);
    if (!srv->have_access) {
        client_error(srv, c, id, KV_ERR_INVAL,
                     "this node takes no clients with keys of their own "
                     "(start it with --access FILE)",
                     false);
        return;
    }
    struct access_list l = {0};
    int rc = 0;
    if (op != ACCESS_LIST) {
        l.e = malloc((srv->access.n + 1) * sizeof(*l.e));
        if (!l.e) {
            client_error(srv, c, id, KV_ERR_NOMEM, "out of memory", false);
            return;
        }
        memcpy(l.e, srv->access.e, srv->access.n * sizeof(*l.e));
        l.n = srv->access.n;
    }
    if (op == ACCESS_ADD) {
        struct access_entry e;
        if ((rc = access_parse_entry(arg, &e, why, sizeof(why))) == 0)
            rc = access_set(&l, &e);
    } else if (op == ACCESS_REMOVE && access_remove(&l, arg) == 0) {
        snprintf(why, sizeof(why), "no client %.60s in the access list", arg);
        rc = KV_ERR_NOT_FOUND;
    }
    if (rc) {
        access_free(&l);
        client_error(srv, c, id, rc, rc == KV_ERR_NOMEM ? "out of memory" : why,
                     false);
        return;
    }
    if (op != ACCESS_LIST) {
        uint64_t v = hlc_now(core_hlc(srv->core), service_wall_ms(&srv->svc));
        apply_access(srv, &l, v,
                     op == ACCESS_ADD ? "kvcli access add"
                                      : "kvcli access "
                                        "remove");
        spread_access(srv, NULL);
    }
    if (conn_closed(c))
        return; /* the admin removed its own key */
    size_t tlen;
    char *text = access_render(&srv->access, &tlen);
    struct msg r = {
        .type = MSG_ACCESS_RESULT, .id = id, .hlc = core_hlc(srv->core)->last};
    r.u.access_result.text = text ? text : "";
    r.u.access_result.text_len = text ? tlen : 0;
    r.u.access_result.version = srv->access_version;
    uint8_t *buf;
    size_t n;
    if (msg_encode(&r, &buf, &n) == 0) {
        conn_send(c, buf, n);
        free(buf);
    }
    free(text);
}

static void on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    reload_access(w->data);
}

static void client_established(struct conn *c)
{
    struct server *srv = conn_owner(c);
    uint8_t *buf;
    size_t n;
    if (chan_kind(conn_chan(c)) == KIND_PEER) {
        log_debug("%s: node authenticated", conn_addr(c));
        transport_adopt(srv->transport, c); /* nodes get no welcome */
        return;
    }
    log_debug("%s: client authenticated", conn_addr(c));
    struct client *cl = calloc(1, sizeof(*cl));
    if (!(c->user = cl)) {
        conn_close(c, "out of memory");
        return;
    }
    if (!client_identify(srv, c, cl))
        return;
    if (service_welcome(&srv->svc, &buf, &n) == 0) {
        conn_send(c, buf, n);
        free(buf);
    } else {
        conn_close(c, "out of memory");
    }
}

static void client_message(struct conn *c, const uint8_t *req, size_t len)
{
    struct server *srv = conn_owner(c);
    struct service_action act;
    int type = msg_peek_type(req, len);
    if (!client_may(srv, c, type, req, len))
        return;
    if (type == MSG_ACCESS) {
        handle_access(srv, c, req, len);
        return;
    }
    uint64_t id = 0;
    /* Counted before the coordinator sees it: it may answer at once. */
    bool counted = coordinated(type) && msg_peek_id(req, len, &id);
    if (counted)
        flight_add(srv, c, id, reservation(srv, type, len));
    conn_ref(c);
    int rc = service_handle(&srv->svc, c, req, len,
                            (uint64_t)(ev_now(srv->loop) * 1000), &act);
    if (counted && (rc || act.answer)) /* answered here, not by the core */
        flight_done(srv, c, id);
    conn_unref(c);
    if (rc) {
        log_error("%s: request failed: %s", conn_addr(c), kv_strerror(rc));
        conn_close(c, "out of memory");
        return;
    }
    if (act.answer) {
        conn_send(c, act.answer, act.answer_len);
        free(act.answer);
    }
}

static void client_refused(struct conn *c, int rc)
{
    (void)rc;
    struct server *srv = conn_owner(c);
    if (chan_kind(conn_chan(c)) == KIND_PEER)
        transport_peer_refused(srv->transport); /* a wrong cluster secret */
}

static void client_closed(struct conn *c)
{
    struct server *srv = conn_owner(c);
    core_client_gone(srv->core, c);
    struct client *cl = c->user;
    if (cl) {
        srv->svc.counters.client_reserved -= cl->reserved;
        if (cl->waits)
            srv->n_waiting--;
        free(cl);
        c->user = NULL;
        resume_waiting(srv);
    }
}

static const struct conn_ops client_ops = {
    .established = client_established,
    .message = client_message,
    .admit = client_admit,
    .refused = client_refused,
    .closed = client_closed,
};

static size_t handshake_slots(const struct node_config *cfg)
{
    size_t slots = cfg->max_connections / HANDSHAKE_SHARE;
    return slots > HANDSHAKE_MIN_SLOTS ? slots : HANDSHAKE_MIN_SLOTS;
}

/* One line a second at most about refused connections, however many. */
static void note_refused(struct server *srv, const char *host, const char *why)
{
    srv->svc.counters.connections_refused++;
    srv->refused_since_log++;
    uint64_t now = (uint64_t)(ev_now(srv->loop) * 1000);
    if (now - srv->refused_log_ms < 1000)
        return;
    log_warn("refused or closed %llu connection(s) in the last %llu ms, the "
             "latest from %s: %s",
             (unsigned long long)srv->refused_since_log,
             (unsigned long long)(srv->refused_log_ms
                                      ? now - srv->refused_log_ms
                                      : 0),
             host, why);
    srv->refused_since_log = 0;
    srv->refused_log_ms = now;
}

/* Makes room for a new connection from host (see HANDSHAKE_SHARE).
 * @retval false there is none: every slot holds an authenticated one. */
static bool make_room(struct server *srv, const char *host)
{
    size_t slots = handshake_slots(srv->cfg), waiting = conn_handshakes(NULL);
    struct conn *old = NULL;
    const char *why = NULL;
    if (waiting >= slots / 2 &&
        conn_handshakes(host) >= HANDSHAKES_PER_SOURCE) {
        old = conn_oldest_handshake(host);
        why = "too many handshakes from one address";
    } else if (waiting >= slots ||
               srv->svc.connections >= srv->cfg->max_connections) {
        old = conn_oldest_handshake(NULL);
        why = "handshake slots full";
    }
    if (old) {
        note_refused(srv, old->host, why);
        conn_close(old, NULL);
    }
    return srv->svc.connections < srv->cfg->max_connections;
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
        if (!make_room(srv, host)) {
            note_refused(srv, host,
                         "every connection slot is taken by an "
                         "authenticated connection");
            close(fd);
            continue;
        }
        size_t max_msg =
            srv->cfg->max_value + srv->cfg->max_key + PROTO_MSG_OVERHEAD;
        /* Clients and nodes share the port; the first handshake message
         * says which kind a connection is (chan_new_responder). */
        /* With --access, clients prove keys of their own; else the shared
         * client secret. */
        const struct chan_kind kinds[] = {
            [KIND_CLIENT] = srv->have_access
                                ? (struct chan_kind){PROTO_PROLOGUE_IDENTITY,
                                                     srv->identity_psk, NULL, 0}
                                : (struct chan_kind){PROTO_PROLOGUE_CLIENT,
                                                     srv->sec->client, NULL, 0},
            [KIND_PEER] = {PROTO_PROLOGUE_PEER, srv->sec->cluster,
                           srv->have_old ? srv->sec->old_cluster : NULL,
                           transport_peer_max_msg(srv->cfg)}};
        struct chan *ch;
        char addr[64];
        snprintf(addr, sizeof(addr), "%s:%s", host, port);
        uint32_t hs_ms = srv->cfg->handshake_timeout_ms;
        if (conn_handshakes(NULL) >= handshake_slots(srv->cfg) / 2)
            hs_ms /= 4; /* under pressure */
        struct conn *c;
        if (chan_new_responder(&ch, kinds, 2, srv->sec->node_priv, max_msg) !=
                0 ||
            !(c = conn_accept(loop, fd, addr, ch, hs_ms,
                              srv->cfg->idle_timeout_ms, &client_ops, srv,
                              &srv->svc.connections))) {
            log_error("refused connection from %s: out of memory", addr);
            continue;
        }
        c->out_bound = CLIENT_OUT_BOUND;
        c->stall_ms = srv->cfg->stall_timeout_ms;
        /* A message begun must arrive whole as soon: any byte would
         * otherwise keep a half-sent one for ever (security review M5). */
        c->partial_ms = srv->cfg->stall_timeout_ms;
        log_debug("%s: connection accepted", addr);
    }
}

static void env_reply(void *ctx, void *client, const struct msg *m)
{
    struct server *srv = ctx;
    uint8_t *buf;
    size_t len;
    if (m->type == MSG_RESULT && m->u.result.code != 0 &&
        m->u.result.code != KV_ERR_NOT_FOUND)
        srv->svc.counters.errors++;
    conn_ref(client); /* sending may close it */
    if (msg_encode(m, &buf, &len) == 0) {
        conn_send(client, buf, len);
        free(buf);
    }
    /* The answer to a get, put, del or where: what it reserved is free. */
    if (m->type == MSG_RESULT || m->type == MSG_WHERE_RESULT)
        flight_done(srv, client, m->id);
    conn_unref(client);
}

static size_t env_send(void *ctx, const uint8_t to[CRYPTO_NODE_ID_BYTES],
                       const struct msg *m)
{
    struct server *srv = ctx;
    return transport_send(srv->transport, to, m);
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
    transport_gossip(srv->transport, to, m);
}

static int env_hash(void *ctx, const uint8_t *data, const uint64_t *off,
                    size_t n, size_t outlen, uint8_t *out)
{
    struct server *srv = ctx;
    return accel_hash(srv->accel, data, off, n, outlen, out);
}

static void maybe_finish_stop(struct server *srv)
{
    if (srv->stopping && core_drained(srv->core)) {
        /* Callbacks already due in this loop iteration still run: what
         * they bring is dropped, so nothing new reaches storage. */
        core_close(srv->core);
        ev_break(srv->loop, EVBREAK_ALL);
    }
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
    resume_waiting(srv); /* the queue is shorter */
    maybe_finish_stop(srv);
}

/* The core's tick: the view, deadlines, hint replay, anti-entropy. */
/* Keeps DATA/members current: every member this node knows but those that
 * left, once it has joined, so that a restart rejoins through them. Every
 * tick: a node stopped right after it joined must remember the cluster it
 * joined, and the list (members' addresses, sorted) costs little. */
static void remember_members(struct server *srv)
{
    if (!core_joined(srv->core) || srv->stopping)
        return;
    struct membership *ms = core_membership(srv->core);
    struct remembered now = {0};
    for (size_t i = 1; i < membership_size(ms); i++) {
        const struct wire_member *w = &membership_get(ms, i)->info;
        if (w->status != MEMBER_LEFT && remember_add(&now, w->addr) != 0) {
            remember_free(&now);
            return;
        }
    }
    if (remember_normalise(&now, &srv->remembered) &&
        remember_save(srv->cfg->data_dir, &now) == 0) {
        remember_free(&srv->remembered);
        srv->remembered = now;
        return;
    }
    remember_free(&now);
}

/* DATA/ring-phase: this node's ring phase (DESIGN §7b), so that a restart
 * keeps its ranges even when the whole cluster restarts at once. Written
 * through a synced temporary file renamed over it, when it changes. */
static void save_phase(struct server *srv)
{
    uint8_t phase = membership_get(core_membership(srv->core), 0)->info.ring;
    if (phase == srv->saved_phase)
        return;
    char path[sizeof(srv->cfg->data_dir) + 32], tmp[sizeof(path) + 8];
    snprintf(path, sizeof(path), "%s/ring-phase", srv->cfg->data_dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    bool ok = f && fprintf(f, "%s\n", ring_phase_name(phase)) > 0;
    ok = f && fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    if (f)
        ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) == 0) {
        srv->saved_phase = phase;
        return;
    }
    log_error("cannot write %s: %s", path, strerror(errno));
}

/* The phase DATA/ring-phase holds; RING_WAITING when there is none (a new
 * node) or the node had left (it joins again). */
static uint8_t load_phase(const struct node_config *cfg, bool *found)
{
    char path[sizeof(cfg->data_dir) + 32], word[32] = "";
    snprintf(path, sizeof(path), "%s/ring-phase", cfg->data_dir);
    FILE *f = fopen(path, "r");
    *found = f != NULL;
    if (!f)
        return RING_WAITING;
    if (!fgets(word, sizeof(word), f))
        word[0] = '\0';
    fclose(f);
    word[strcspn(word, "\n")] = '\0';
    for (int p = 0; p <= RING_PHASE_MAX; p++)
        if (strcmp(word, ring_phase_name(p)) == 0)
            return p == RING_LEFT ? RING_WAITING : (uint8_t)p;
    log_warn("%s: unknown phase \"%s\"; this node asks the cluster", path,
             word);
    *found = false;
    return RING_WAITING;
}

/* A member that comes back (a restart: alive again under a higher
 * incarnation) is dialled at once: while it was down, dials to it failed
 * and backed off, and it keeps its ranges, so writes go to it again now. */
static void on_member(void *arg, const struct wire_member *w, uint8_t old)
{
    struct server *srv = arg;
    if (w->status == MEMBER_ALIVE && old != MEMBER_ALIVE &&
        old != MEMBER_SUSPECT)
        transport_member_back(srv->transport, w->addr);
}

static void begin_stop(struct server *srv, const char *why)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    ev_io_stop(srv->loop, &srv->accept_w);
    core_stop(srv->core); /* DESIGN 7: the stop is announced */
    log_info("%s: stopping (no new requests; finishing %s)", why,
             core_drained(srv->core) ? "nothing pending"
                                     : "requests in flight");
    maybe_finish_stop(srv);
}

static void on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    core_tick(srv->core);
    resume_waiting(srv); /* links may have drained */
    offer_access(srv, (uint64_t)(ev_now(srv->loop) * 1000));
    remember_members(srv);
    save_phase(srv);
    if (core_gone(srv->core))
        begin_stop(srv, "decommissioned");
    const char *failed = core_failed(srv->core);
    if (failed && !srv->stopping) {
        log_error("%s", failed);
        srv->exit_code = KV_ERR_INVAL;
        begin_stop(srv, "cannot go on");
    }
    maybe_finish_stop(srv);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *srv = w->data;
    char why[32];
    snprintf(why, sizeof(why), "signal %d", w->signum);
    begin_stop(srv, why);
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
        log_error("%s %s is readable by group or others, or owned by another "
                  "user; chmod 600 it and own it",
                  what, path);
    else if (rc)
        log_error("cannot read %s %s: %s", what, path,
                  rc == KV_ERR_IO ? strerror(errno) : kv_strerror(rc));
    return rc;
}

/* One kvnode per data directory: a second would share the node's identity
 * and its LMDB environment. An exclusive flock on DATA/LOCK (as etcd and
 * PostgreSQL lock theirs), which holds the holder's pid; the kernel drops
 * it with the process, however that ends. */
static int lock_data_dir(struct server *srv)
{
    const char *dir = srv->cfg->data_dir;
    char path[sizeof(srv->cfg->data_dir) + 8];
    snprintf(path, sizeof(path), "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("cannot open %s: %s", path, strerror(errno));
        return KV_ERR_IO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[24] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        log_error("data directory %s is in use by another kvnode (pid %s): "
                  "one node per data directory",
                  dir, pid[0] ? pid : "unknown");
        close(fd);
        return KV_ERR_BUSY;
    }
    char pid[24];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        log_warn("cannot write this node's pid into %s: %s", path,
                 strerror(errno));
    srv->lock_fd = fd;
    return 0;
}

/* Each connection is a descriptor: the soft limit goes up to the hard
 * one, and a hard one too low for --max-connections is said at start. */
static void raise_fd_limit(const struct node_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)cfg->max_connections + 256; /* links, files */
    if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < want)
        log_warn("open files are limited to %llu, fewer than the %llu that "
                 "--max-connections %u needs; raise the limit (ulimit -n, "
                 "LimitNOFILE=) or lower --max-connections",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)want,
                 cfg->max_connections);
}

static int server_start(struct server *srv)
{
    const struct node_config *cfg = srv->cfg;
    raise_fd_limit(cfg);
    if (mkdir(cfg->data_dir, 0700) != 0 && errno != EEXIST) {
        log_error("cannot create data directory %s: %s", cfg->data_dir,
                  strerror(errno));
        return KV_ERR_IO;
    }
    int lrc = lock_data_dir(srv);
    if (lrc)
        return lrc;
    char path[600];
    snprintf(path, sizeof(path), "%s/node.key", cfg->data_dir);
    uint8_t pub[CRYPTO_KEY_BYTES];
    bool created;
    int rc = crypto_node_key_load(path, srv->sec->node_priv, pub, &created);
    if (rc) {
        log_error("node key %s: %s", path,
                  rc == KV_ERR_PERM
                      ? "readable by group or others, or owned by another "
                        "user; chmod 600 it and own it"
                      : kv_strerror(rc));
        return rc;
    }
    crypto_node_id(srv->svc.node_id, pub);
    char idhex[2 * CRYPTO_NODE_ID_BYTES + 1];
    hex_encode(idhex, srv->svc.node_id, CRYPTO_NODE_ID_BYTES);
    log_info("node %s (%s key in %s)", idhex, created ? "new" : "existing",
             path);
    if ((rc = load_secret(cfg->cluster_key, "cluster key", srv->sec->cluster)))
        return rc;
    if ((rc = load_secret(cfg->client_key, "client key", srv->sec->client)))
        return rc;
    if (cfg->access[0]) {
        char err[320];
        if ((rc = access_load(cfg->access, &srv->access, err, sizeof(err)))) {
            log_error("%s", err);
            return rc == KV_ERR_IO ? rc : KV_ERR_INVAL;
        }
        srv->have_access = true;
        proto_identity_psk(srv->identity_psk);
        /* The file's version is its modification time, as an HLC; the
         * list this node took from the cluster wins when newer. */
        struct stat fst;
        srv->access_version = stat(cfg->access, &fst) == 0
                                  ? ((uint64_t)fst.st_mtim.tv_sec * 1000 +
                                     (uint64_t)fst.st_mtim.tv_nsec / 1000000)
                                        << 16
                                  : 0;
        struct access_list saved;
        uint64_t sv;
        bool have_saved = load_saved_access(srv, &saved, &sv);
        if (have_saved && sv > srv->access_version) {
            access_free(&srv->access);
            srv->access = saved;
            srv->access_version = sv;
            log_info("access: %s/access (version %llu) is newer than %s: "
                     "using it",
                     cfg->data_dir, (unsigned long long)sv, cfg->access);
        } else if (have_saved) {
            access_free(&saved);
        }
        log_info("access: %zu client(s) from %s; clients prove keys of their "
                 "own (the shared client secret is not taken)",
                 srv->access.n, cfg->access);
    }
    /* With one secret for both, every client could act as a node (security
     * review L4). */
    if (sodium_memcmp(srv->sec->client, srv->sec->cluster, CRYPTO_KEY_BYTES) ==
        0) {
        log_error("--client-key %s holds the cluster secret: every client "
                  "could act as a node; make a client key of its own with "
                  "kvcli keygen",
                  cfg->client_key);
        return KV_ERR_INVAL;
    }
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
        log_info("accel %s: OpenCL device %s (kernel %s); batches of %zu "
                 "items or more go to it, smaller ones to %u CPU thread(s)",
                 ai->mode, ai->device, ai->cached ? "from the cache" : "built",
                 ai->crossover, ai->threads);
    else
        log_info("accel %s: %u CPU thread(s); OpenCL device: %s", ai->mode,
                 ai->threads, ai->device);
    if (ai->opencl && ai->crossover == 0)
        log_info("accel auto: the device was slower than the CPU at every "
                 "batch size measured; bulk hashing stays on the CPU");
    if ((rc = listen_on(cfg->listen, &srv->listen_fd)))
        return rc;
    srv->have_old = cfg->old_cluster_key[0] != '\0';
    if (srv->have_old &&
        (rc = load_secret(cfg->old_cluster_key, "old cluster key",
                          srv->sec->old_cluster)))
        return rc;
    struct wire_member self = {.version = PROTO_VERSION};
    memcpy(self.id, srv->svc.node_id, sizeof(self.id));
    memcpy(self.pubkey, pub, sizeof(self.pubkey));
    snprintf(self.addr, sizeof(self.addr), "%s", cfg->advertise);
    snprintf(self.region, sizeof(self.region), "%s", cfg->region);
    snprintf(self.zone, sizeof(self.zone), "%s", cfg->zone);
    ring_placement_format(&cfg->placement, self.replicas,
                          sizeof(self.replicas));
    self.ring = load_phase(cfg, &srv->phase_found);
    srv->saved_phase = srv->phase_found ? self.ring : 0xff;
    rc = transport_new(
        &srv->transport, srv->loop, cfg, srv->sec->node_priv, srv->sec->cluster,
        srv->have_old ? srv->sec->old_cluster : NULL, srv->fault);
    if (rc)
        return rc;
    srv->svc.transport = srv->transport;
    storage_set_hint_limit(srv->svc.st, cfg->max_hints);
    struct core_config cc;
    core_config_defaults(&cc);
    cc.membership.period_ms = cfg->gossip_period_ms;
    cc.membership.ack_timeout_ms = cfg->gossip_ack_timeout_ms;
    cc.membership.push_pull_ms = cfg->push_pull_ms;
    cc.membership.reap_ms = cfg->dead_reap_ms;
    cc.membership.join_timeout_ms = cfg->join_timeout_ms;
    cc.repl.placement = cfg->placement;
    cc.repl.max_clock_offset_ms = cfg->max_clock_offset_ms;
    cc.repl.request_timeout_ms = cfg->request_timeout_ms;
    cc.ae.interval_ms = cfg->ae_interval_ms;
    cc.ae.scrub_interval_ms = cfg->scrub_interval_ms;
    cc.topo.stream_bytes_s = (uint64_t)cfg->stream_mb_s << 20;
    if (cfg->replace[0]) {
        if (srv->phase_found && self.ring != RING_WAITING)
            log_warn("--replace ignored: this node is already a member (%s)",
                     ring_phase_name(self.ring));
        else
            cc.topo.replace = config_replace_id(cfg, cc.topo.replace_id) == 0;
    }
    /* Batches of records sized on their own, never below the default value
     * limit, whatever --max-value-size says (security review M7): links
     * take them (transport_peer_max_msg). */
    cc.ae.max_message_bytes = cfg->max_value > PROTO_DEFAULT_MAX_VALUE
                                  ? cfg->max_value
                                  : PROTO_DEFAULT_MAX_VALUE;
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
    core_set_observer(srv->core, on_member, srv);
    transport_set_access_handler(srv->transport, on_access_set, srv);
    log_info("region %s, zone %s, replicas %s", cfg->region, cfg->zone,
             cfg->replicas);
    return 0;
}

/* Joins through --join's addresses and the members DATA/members remembers
 * (this node's own skipped): a node that was ever part of a cluster rejoins
 * it, and starts a cluster of one only when it knows nobody. */
static int start_core(struct server *srv)
{
    struct remembered seeds = {0};
    int rc = remember_load(srv->cfg->data_dir, &srv->remembered);
    if (rc)
        return rc;
    remember_normalise(&srv->remembered, NULL);
    char buf[sizeof(srv->cfg->join)];
    snprintf(buf, sizeof(buf), "%s", srv->cfg->join);
    size_t n_join = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok && rc == 0;
         tok = strtok_r(NULL, ",", &save))
        if (*tok && strcmp(tok, srv->cfg->advertise) != 0 &&
            (rc = remember_add(&seeds, tok)) == 0)
            n_join++;
    for (size_t i = 0; i < srv->remembered.n && rc == 0; i++)
        if (strcmp(srv->remembered.addr[i], srv->cfg->advertise) != 0)
            rc = remember_add(&seeds, srv->remembered.addr[i]);
    const char **addrs = rc ? NULL : calloc(seeds.n + 1, sizeof(*addrs));
    if (!addrs) {
        remember_free(&seeds);
        return rc ? rc : KV_ERR_NOMEM;
    }
    remember_normalise(&seeds, NULL);
    for (size_t i = 0; i < seeds.n; i++)
        addrs[i] = seeds.addr[i];
    /* A node that knows nobody starts a cluster: it owns the ring at once
     * (DESIGN §7b); one that joins waits for its turn and streams. */
    if (seeds.n == 0 && !srv->phase_found)
        membership_set_ring(core_membership(srv->core), srv->svc.node_id,
                            RING_NORMAL);
    core_start(srv->core, addrs, seeds.n);
    if (seeds.n > n_join)
        log_info("gossip: rejoining the cluster this node was part of "
                 "through %zu address(es) (%zu remembered in %s/members, "
                 "%zu from --join); it coordinates nothing until a member "
                 "that has joined answers",
                 seeds.n, srv->remembered.n, srv->cfg->data_dir, n_join);
    else
        log_info("gossip: %s, period %u ms, joining through %zu seed(s)",
                 seeds.n ? "joining" : "a cluster of one until others join",
                 srv->cfg->gossip_period_ms, seeds.n);
    free(addrs);
    remember_free(&seeds);
    return 0;
}

int server_run(const struct node_config *cfg)
{
    struct server srv = {.cfg = cfg, .listen_fd = -1, .lock_fd = -1};
    srv.svc.cfg = cfg;
    srv.loop = ev_default_loop(EVFLAG_AUTO);
    if (!srv.loop)
        return KV_ERR_NOMEM;
    signal(SIGPIPE, SIG_IGN);
    /* The async watcher must exist before the writer thread can signal it. */
    ev_async_init(&srv.store_async, on_storage_done);
    srv.store_async.data = &srv;
    ev_async_start(srv.loop, &srv.store_async);
    ev_init(&srv.gossip_timer_w, on_gossip_timer);
    srv.gossip_timer_w.data = &srv;

    srv.sec = sodium_malloc(sizeof(*srv.sec));
    int rc = srv.sec ? server_start(&srv) : KV_ERR_NOMEM;
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
        ev_signal_init(&srv.sighup_w, on_sighup, SIGHUP);
        srv.sighup_w.data = &srv;
        ev_signal_start(srv.loop, &srv.sighup_w);
        ev_timer_init(&srv.sweep_w, on_sweep, SWEEP_INTERVAL, SWEEP_INTERVAL);
        srv.sweep_w.data = &srv;
        ev_timer_start(srv.loop, &srv.sweep_w);
        transport_start(srv.transport, srv.core);
        rc = start_core(&srv);
    }
    if (rc == 0) {
        log_info("serving on %s, reached at %s (max %u connections, key <= "
                 "%u B, value <= %u B)",
                 cfg->listen, cfg->advertise, cfg->max_connections,
                 cfg->max_key, cfg->max_value);
        ev_run(srv.loop, 0);
        /* Answers to completed writes go out before the sockets close. */
        conn_flush_all();
    }
    if (srv.listen_fd >= 0)
        close(srv.listen_fd);
    ev_timer_stop(srv.loop, &srv.gossip_timer_w);
    transport_free(srv.transport); /* the links */
    conn_close_all();              /* the clients */
    /* The loop only stops once the core has nothing in flight. */
    core_free(srv.core);
    accel_close(srv.accel);
    storage_close(srv.svc.st);
    if (srv.lock_fd >= 0)
        close(srv.lock_fd); /* last: the environment is closed */
    fault_free(srv.fault);
    remember_free(&srv.remembered);
    access_free(&srv.access);
    sodium_free(srv.sec); /* wiped as it is freed */
    if (rc == 0 && srv.exit_code == 0)
        log_info("stopped cleanly");
    return rc ? rc : srv.exit_code;
}
