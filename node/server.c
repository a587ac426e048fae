/* kvnode's event loop (DESIGN §1, §3, §9): the libev adapter of the node
 * core. One libev loop runs all network I/O and the core on one thread;
 * durable writes go to the storage writer thread and come back through an
 * ev_async. This file listens, implements the core's env over the
 * transport (transport.c: connections, peer links, datagrams), storage/ and
 * accel/, handles signals, and calls only core_* for protocol work; what
 * clients may do and hold is clients.c's (server_int.h).
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

#include "server_int.h"

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
                              srv->cfg->idle_timeout_ms, &server_client_ops,
                              srv, &srv->svc.connections))) {
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
        clients_answered(srv, client, m->id);
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
    clients_resume_waiting(srv); /* the queue is shorter */
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
    char path[sizeof(srv->cfg->data_dir) + 32];
    snprintf(path, sizeof(path), "%s/ring-phase", srv->cfg->data_dir);
    const char *name = ring_phase_name(phase);
    if (remember_write_file(path, name, "\n", 1) == 0)
        srv->saved_phase = phase;
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
    clients_resume_waiting(srv); /* links may have drained */
    clients_offer_access(srv, (uint64_t)(ev_now(srv->loop) * 1000));
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
    if (cfg->access[0] && (rc = clients_access_start(srv)))
        return rc;
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
    transport_set_access_handler(srv->transport, clients_on_access_set, srv);
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
        ev_signal_init(&srv.sighup_w, clients_on_sighup, SIGHUP);
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
