/* What clients may do and hold on a node (server_int.h): admission and
 * reservations (security review H1), identities and roles (kvnode
 * --access), and the access list that spreads through the cluster. The
 * connections themselves are conn.c's; the loop and accepting are
 * server.c's. */
#include "server_int.h"

#include "../common/common.h"
#include "transport.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- clients ---- */

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
void clients_resume_waiting(struct server *srv)
{
    if (!srv->n_waiting)
        return;
    for (struct conn *c = conn_first(); c; c = c->next) {
        struct client *cl = c->user;
        if (c->ops == &server_client_ops && cl && cl->waits) {
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

void clients_answered(struct server *srv, struct conn *c, uint64_t id)
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
            clients_resume_waiting(srv);
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
    char path[sizeof(srv->cfg->data_dir) + 16], head[64];
    access_path(srv, path, sizeof(path));
    snprintf(head, sizeof(head), "# essaim access list, version %llu\n",
             (unsigned long long)srv->access_version);
    size_t len;
    char *text = access_render(&srv->access, &len);
    if (text)
        remember_write_file(path, head, text, len);
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
        if (c->ops != &server_client_ops || !cl || c->closed)
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
void clients_on_access_set(void *arg, const uint8_t from[CRYPTO_NODE_ID_BYTES],
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
void clients_offer_access(struct server *srv, uint64_t now_ms)
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

void clients_on_sighup(struct ev_loop *loop, ev_signal *w, int revents)
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
        clients_answered(srv, c, id);
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
        clients_resume_waiting(srv);
    }
}

const struct conn_ops server_client_ops = {
    .established = client_established,
    .message = client_message,
    .admit = client_admit,
    .refused = client_refused,
    .closed = client_closed,
};

int clients_access_start(struct server *srv)
{
    const struct node_config *cfg = srv->cfg;
    int rc;
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
    return 0;
}
