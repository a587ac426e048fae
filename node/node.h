/* node: the kvnode daemon. This header is private to node/ and its tests.
 *
 *   config.c   options from the command line and an INI file (--config)
 *   service.c  what a request means: checks, HLC stamping, storage calls,
 *              the answer (no sockets, no libev)
 *   core.c     one node, sans I/O: owns and wires the modules below (core.h)
 *   server.c   the libev loop: listener, connections, timers, signals,
 *              peer links; implements the core's env
 *   hlc.c      the hybrid logical clock
 *   repl.c     replication: coordinator, replica, hints, read repair,
 *              sans I/O (repl.h)
 *   ring.c     the consistent-hashing ring (ring.h)
 *   membership.c  SWIM with Lifeguard, sans I/O (membership.h)
 *   transport.c   connections, peer links and gossip datagrams over libev
 *                 (transport.h)
 *   fault.c    fault injection's decisions, sans I/O (fault.h); on only
 *              with --fault-injection */
#ifndef ESSAIM_NODE_H
#define ESSAIM_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "../proto/proto.h"
#include "../storage/storage.h"
#include "core.h"
#include "ring.h"

struct accel;

struct node_config {
    char data_dir[512];
    char listen[GOSSIP_ADDR_MAX];    /* where TCP and UDP are bound */
    char advertise[GOSSIP_ADDR_MAX]; /* where peers reach this node: gossip
                                        carries it (default: listen) */
    char cluster_key[512];
    char client_key[512];
    char join[1024];
    char replace[64]; /* --replace: the id (hex) of a dead member */
    char region[GOSSIP_NAME_MAX];
    char zone[GOSSIP_NAME_MAX];
    char accel[16];
    char replicas[GOSSIP_REPLICAS_MAX]; /* --replicas as given */
    struct ring_placement placement;    /* parsed from it */
    uint64_t map_size;                  /* bytes of the LMDB map */
    unsigned max_connections;           /* client connections at once */
    unsigned max_key;                   /* bytes, at most PROTO_MAX_KEY */
    unsigned max_value;            /* bytes, at most PROTO_MAX_VALUE_LIMIT */
    unsigned handshake_timeout_ms; /* a handshake must finish within this */
    unsigned idle_timeout_ms;      /* a silent connection is dropped after */
    unsigned stall_timeout_ms;     /* one whose output does not move, after */
    unsigned request_timeout_ms;   /* default deadline of a request */
    unsigned max_clock_offset_ms;  /* DESIGN §4: 500 ms */
    char old_cluster_key[512];     /* accepted during a key rotation */
    char access[512]; /* --access: clients with keys of their own, roles */
    unsigned gossip_period_ms; /* SWIM protocol period (DESIGN §7) */
    unsigned gossip_ack_timeout_ms;
    unsigned push_pull_ms;
    unsigned dead_reap_ms;      /* dead members are forgotten after */
    unsigned join_timeout_ms;   /* see membership_config */
    unsigned max_hints;         /* hints this node holds for others, at most */
    unsigned ae_interval_ms;    /* anti-entropy rounds this often (0: never) */
    unsigned scrub_interval_ms; /* scrubs this often (0: never) */
    unsigned stream_mb_s;       /* ownership-change streams (0: no limit) */
    int log_level;              /* enum log_level */
    bool fault_injection;       /* kvcli fault may inject faults (tests) */
};

/* Fills cfg with the defaults. */
void config_defaults(struct node_config *cfg);

/* --replace as an id. @retval 0, or KV_ERR_INVAL when it is not one. */
int config_replace_id(const struct node_config *cfg,
                      uint8_t id[CRYPTO_NODE_ID_BYTES]);

/* Applies the command line (and the --config file it names, which the command
 * line overrides). On a usage error, writes one line to err (errlen bytes).
 * @retval 0 Success. @retval 1 --help was given (usage printed).
 * @retval KV_ERR_INVAL a usage error. */
int config_parse(struct node_config *cfg, int argc, char **argv, char *err,
                 size_t errlen);

/* Prints kvnode's usage to stdout. */
void config_usage(void);

/* Counters kept by the service and shown by kvcli status. */
struct node_counters {
    uint64_t puts, gets, dels, errors;
    uint64_t connections_refused; /* refused or closed before their
                                     handshake to make room (server.c) */
    uint64_t client_reserved;     /* bytes clients' requests in flight
                                     may hold (server.c) */
    /* Requests by the role of the client that sent them, and refusals
     * (server.c; with --access). */
    uint64_t role_requests[4];
    uint64_t refused_role, refused_key;
};

/* Hint counts as of the last status, kept while no write has been
 * committed since (a status costs no scan of the hints then). */
struct hint_cache {
    bool valid;
    uint64_t batches;
    struct storage_hint_count counts[64];
    size_t n;
    uint64_t total;
};

/* The request service: a node's identity, clock and storage. */
struct service {
    const struct node_config *cfg;
    struct storage *st;
    struct core *core; /* the node: clock, membership, repl, ae */
    uint8_t node_id[CRYPTO_NODE_ID_BYTES];
    struct node_counters counters;
    uint64_t malformed, malformed_log_ms; /* since the last log line */
    struct hint_cache hint_cache;
    uint64_t start_ms;
    uint64_t connections;        /* kept current by the server */
    struct transport *transport; /* its counters; NULL in unit tests */
    struct fault *fault;         /* kvcli fault; NULL in unit tests */
};

/* What service_handle decided: an encoded answer to send now (the caller
 * frees it), or NULL when the request went to the core, which answers
 * through its environment. */
struct service_action {
    uint8_t *answer;
    size_t answer_len;
};

/* Handles one decoded-or-not request (raw bytes from the channel) of a
 * client (an opaque handle the coordinator answers to).
 * @retval 0 Success (see *act). @retval KV_ERR_NOMEM. */
int service_handle(struct service *svc, void *client, const uint8_t *req,
                   size_t len, uint64_t now_ms, struct service_action *act);

/* The wall clock this node's HLC reads: the system's, shifted by kvcli
 * fault clock when fault injection is on. */
uint64_t service_wall_ms(const struct service *svc);

/* Encodes the welcome a node sends right after the handshake. */
int service_welcome(struct service *svc, uint8_t **out, size_t *out_len);

/* Encodes an error answer to request id. */
int service_error(struct service *svc, uint64_t id, int code, const char *text,
                  uint8_t **out, size_t *out_len);

/* Runs kvnode with a parsed configuration until SIGTERM or SIGINT.
 * @retval 0 Clean exit. @retval a kv_err that stopped it at start;
 * KV_ERR_INVAL when what it was told cannot be done (kvnode exits 2). */
int server_run(const struct node_config *cfg);

#endif
