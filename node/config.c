/* kvnode's options. One table serves both the command line (DESIGN §12) and
 * the INI file named by --config, whose keys are the long option names
 * ("listen = 127.0.0.1:7400"); the command line wins over the file. */
#include "node.h"

#include "../common/common.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <ini.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void config_defaults(struct node_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->region, sizeof(cfg->region), "default");
    snprintf(cfg->zone, sizeof(cfg->zone), "default");
    snprintf(cfg->accel, sizeof(cfg->accel), "auto");
    snprintf(cfg->replicas, sizeof(cfg->replicas), "3");
    ring_placement_set_n(&cfg->placement, 3);
    cfg->map_size = 1ull << 30;
    cfg->max_connections = 1024;
    cfg->max_key = PROTO_MAX_KEY;
    cfg->max_value = PROTO_DEFAULT_MAX_VALUE;
    cfg->handshake_timeout_ms = 5000;
    cfg->idle_timeout_ms = 300000;
    cfg->stall_timeout_ms = 60000;
    cfg->request_timeout_ms = 5000;
    cfg->max_clock_offset_ms = HLC_MAX_OFFSET_MS;
    cfg->gossip_period_ms = 1000;
    cfg->gossip_ack_timeout_ms = 500;
    cfg->push_pull_ms = 30000;
    cfg->dead_reap_ms = 86400000;
    cfg->join_timeout_ms = 30000;
    cfg->max_hints = 1000000;
    cfg->ae_interval_ms = 60000;
    cfg->stream_mb_s = 50;
    cfg->scrub_interval_ms = 86400000;
    cfg->log_level = LOG_INFO;
}

enum opt_kind { OPT_STR, OPT_UINT, OPT_MIB, OPT_LEVEL, OPT_FLAG };

struct opt {
    const char *name;
    enum opt_kind kind;
    size_t offset; /* into struct node_config */
    size_t size;   /* of a string field */
    uint64_t min, max;
    const char *help;
};

#define STR(f, h)                                                              \
    OPT_STR, offsetof(struct node_config, f),                                  \
        sizeof(((struct node_config *)0)->f), 0, 0, h
#define UINT(f, lo, hi, h)                                                     \
    OPT_UINT, offsetof(struct node_config, f), 0, lo, hi, h

static const struct opt opts[] = {
    {"data",
     STR(data_dir, "DIR     data directory (created with its node key)")},
    {"listen", STR(listen, "HOST:PORT  TCP and UDP address to bind")},
    {"advertise",
     STR(advertise, "HOST:PORT  the address peers reach this node at, which "
                    "gossip carries (default: --listen; required when "
                    "--listen is a wildcard)")},
    {"cluster-key", STR(cluster_key, "FILE  cluster secret (kvcli keygen)")},
    {"client-key", STR(client_key, "FILE  client secret (kvcli keygen)")},
    {"join", STR(join, "HOST:PORT[,...]  members to join")},
    {"replace",
     STR(replace, "NODE_ID  take a dead member's place: join, stream, "
                  "then remove it")},
    {"region", STR(region, "NAME  this node's region")},
    {"zone", STR(zone, "NAME    this node's zone")},
    {"replicas",
     STR(replicas, "N|REGION:N[,...]  replicas per key: N, new regions "
                   "first (default 3), or N in each named region")},
    {"accel", STR(accel, "auto|cpu|opencl  bulk hashing backend")},
    {"map-size-mb", OPT_MIB, offsetof(struct node_config, map_size), 0, 1,
     1ull << 24, "MIB  size of the LMDB map (default 1024)"},
    {"max-connections",
     UINT(max_connections, 1, 1000000, "N  client connections (default 1024)")},
    {"max-key-size",
     UINT(max_key, 1, PROTO_MAX_KEY, "BYTES  largest key (default 1024)")},
    {"max-value-size",
     UINT(max_value, 0, PROTO_MAX_VALUE_LIMIT,
          "BYTES  largest value (default 1 MiB, max 64 MiB)")},
    {"handshake-timeout-ms",
     UINT(handshake_timeout_ms, 1, 600000,
          "MS  drop a stalled handshake (default 5000)")},
    {"idle-timeout-ms", UINT(idle_timeout_ms, 1, 86400000,
                             "MS  drop a silent connection (default 300000)")},
    {"stall-timeout-ms",
     UINT(stall_timeout_ms, 1000, 86400000,
          "MS  drop a client that reads none of its answers, or takes longer "
          "to send one request (default 60000; links: at most 10000)")},
    {"request-timeout-ms", UINT(request_timeout_ms, 1, 600000,
                                "MS  default request deadline (default 5000)")},
    {"access",
     STR(access, "FILE  clients with keys of their own: KEY NAME ROLE per "
                 "line (read, write, admin); reloaded on SIGHUP")},
    {"old-cluster-key",
     STR(old_cluster_key, "FILE  another cluster secret: accepted, never "
                          "sent (rotation)")},
    {"gossip-period-ms", UINT(gossip_period_ms, 10, 60000,
                              "MS  SWIM protocol period (default 1000)")},
    {"gossip-ack-timeout-ms",
     UINT(gossip_ack_timeout_ms, 5, 60000, "MS  probe ack timeout (500)")},
    {"push-pull-ms",
     UINT(push_pull_ms, 100, 3600000, "MS  full-state exchange (30000)")},
    {"dead-reap-ms", UINT(dead_reap_ms, 1000, 2000000000,
                          "MS  forget members that left after (86400000)")},
    {"join-timeout-ms",
     UINT(join_timeout_ms, 100, 3600000,
          "MS  then join through seeds all joining too (30000)")},
    {"max-hints", UINT(max_hints, 0, 2000000000,
                       "N  hints held for nodes that are down (1000000)")},
    {"ae-interval-ms",
     UINT(ae_interval_ms, 0, 2000000000,
          "MS  anti-entropy round with every replica (60000; 0: never)")},
    {"stream-mb-s",
     UINT(stream_mb_s, 0, 100000,
          "MB  stream ranges at most this fast, per change (50; 0: no limit)")},
    {"scrub-interval-ms",
     UINT(scrub_interval_ms, 0, 2000000000,
          "MS  re-hash every stored value (86400000; 0: never)")},
    {"max-clock-offset-ms",
     UINT(max_clock_offset_ms, 1, 3600000,
          "MS  refuse peers and sessions further ahead (500)")},
    {"fault-injection", OPT_FLAG, offsetof(struct node_config, fault_injection),
     0, 0, 0, "accept kvcli fault (tests only; never in production)"},
    {"log-level", OPT_LEVEL, offsetof(struct node_config, log_level), 0, 0, 0,
     "debug|info|warn|error  (default info)"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static int set_opt(struct node_config *cfg, const struct opt *o,
                   const char *val, char *err, size_t errlen)
{
    char *base = (char *)cfg;
    char *end;
    unsigned long long v;
    switch (o->kind) {
    case OPT_STR:
        if (strlen(val) >= o->size) {
            snprintf(err, errlen, "--%s: value too long", o->name);
            return KV_ERR_INVAL;
        }
        memcpy(base + o->offset, val, strlen(val) + 1);
        return 0;
    case OPT_UINT:
    case OPT_MIB:
        v = strtoull(val, &end, 10);
        if (!*val || *end || val[0] == '-' || v < o->min || v > o->max) {
            snprintf(err, errlen, "--%s: expected a number from %llu to %llu",
                     o->name, (unsigned long long)o->min,
                     (unsigned long long)o->max);
            return KV_ERR_INVAL;
        }
        if (o->kind == OPT_MIB)
            *(uint64_t *)(base + o->offset) = (uint64_t)v << 20;
        else
            *(unsigned *)(base + o->offset) = (unsigned)v;
        return 0;
    case OPT_FLAG: {
        /* On the command line the flag alone; in a file, a boolean. */
        static const char *const yes[] = {"", "true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
            if (strcmp(val, yes[i]) == 0) {
                *(bool *)(base + o->offset) = true;
                return 0;
            }
        for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
            if (strcmp(val, no[i]) == 0) {
                *(bool *)(base + o->offset) = false;
                return 0;
            }
        snprintf(err, errlen, "--%s: expected true or false", o->name);
        return KV_ERR_INVAL;
    }
    case OPT_LEVEL: {
        static const char *const levels[] = {"debug", "info", "warn", "error"};
        for (int i = 0; i < 4; i++)
            if (strcmp(val, levels[i]) == 0) {
                *(int *)(base + o->offset) = i;
                return 0;
            }
        snprintf(err, errlen, "--%s: expected debug, info, warn or error",
                 o->name);
        return KV_ERR_INVAL;
    }
    }
    return KV_ERR_INVAL;
}

static const struct opt *find_opt(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

struct ini_ctx {
    struct node_config *cfg;
    char *err;
    size_t errlen;
    int rc;
};

static int on_ini_setting(void *user, const char *section, const char *name,
                          const char *value)
{
    struct ini_ctx *ctx = user;
    (void)section; /* sections are allowed for readability and ignored */
    const struct opt *o = find_opt(name);
    if (!o) {
        snprintf(ctx->err, ctx->errlen, "config: unknown setting '%s'", name);
        ctx->rc = KV_ERR_INVAL;
        return 0;
    }
    if (set_opt(ctx->cfg, o, value, ctx->err, ctx->errlen) != 0) {
        ctx->rc = KV_ERR_INVAL;
        return 0;
    }
    return 1;
}

void config_usage(void)
{
    printf(
        "usage: kvnode --data DIR --listen HOST:PORT [--advertise HOST:PORT] "
        "--cluster-key FILE --client-key FILE\n"
        "              [--join HOST:PORT[,HOST:PORT...]] [--region NAME] "
        "[--zone NAME]\n"
        "              [--replicas N|REGION:N,...] [--accel auto|cpu|opencl] "
        "[--config FILE]\n\n"
        "essaim's node: stores keys durably and serves kvcli over an "
        "encrypted channel.\n"
        "SIGTERM or SIGINT stops it cleanly (exit 0).\n\noptions:\n");
    for (size_t i = 0; i < NOPTS; i++)
        printf("  --%-22s %s\n", opts[i].name, opts[i].help);
    printf("  --%-22s %s\n", "config",
           "FILE  INI file of the settings above "
           "(name = value)");
    printf("  --%-22s %s\n", "help", "this text");
}

int config_replace_id(const struct node_config *cfg,
                      uint8_t id[CRYPTO_NODE_ID_BYTES])
{
    size_t n = 0;
    const char *end = NULL;
    if (strlen(cfg->replace) != 2 * CRYPTO_NODE_ID_BYTES ||
        sodium_hex2bin(id, CRYPTO_NODE_ID_BYTES, cfg->replace,
                       strlen(cfg->replace), NULL, &n, &end) != 0 ||
        n != CRYPTO_NODE_ID_BYTES || *end)
        return KV_ERR_INVAL;
    return 0;
}

/* A numeric IPv4 or IPv6 HOST:PORT; a wildcard host (0.0.0.0, ::) only
 * when allowed. */
static bool is_numeric_hostport(const char *hostport, bool wildcard_ok)
{
    char host[GOSSIP_ADDR_MAX], port[16];
    if (net_split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
        return false;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *res;
    if (!host[0] || getaddrinfo(host, port, &hints, &res) != 0)
        return false;
    bool any = false;
    if (res->ai_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)res->ai_addr;
        any = a->sin_addr.s_addr == htonl(INADDR_ANY);
    } else if (res->ai_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)res->ai_addr;
        any = IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr);
    }
    freeaddrinfo(res);
    return wildcard_ok || !any;
}

static int check_required(const struct node_config *cfg, char *err,
                          size_t errlen)
{
    const struct {
        const char *v, *name;
    } req[] = {{cfg->data_dir, "data"},
               {cfg->listen, "listen"},
               {cfg->cluster_key, "cluster-key"},
               {cfg->client_key, "client-key"}};
    for (size_t i = 0; i < sizeof(req) / sizeof(req[0]); i++)
        if (!req[i].v[0]) {
            snprintf(err, errlen, "--%s is required", req[i].name);
            return KV_ERR_INVAL;
        }
    if (strcmp(cfg->accel, "auto") && strcmp(cfg->accel, "cpu") &&
        strcmp(cfg->accel, "opencl")) {
        snprintf(err, errlen, "--accel: expected auto, cpu or opencl");
        return KV_ERR_INVAL;
    }
    if (!strrchr(cfg->listen, ':')) {
        snprintf(err, errlen, "--listen: expected HOST:PORT");
        return KV_ERR_INVAL;
    }
    if (cfg->advertise[0] && !is_numeric_hostport(cfg->advertise, false)) {
        snprintf(err, errlen,
                 "--advertise %s: expected a numeric IP:PORT that other "
                 "nodes can reach (not a wildcard)",
                 cfg->advertise);
        return KV_ERR_INVAL;
    }
    if (!cfg->advertise[0] && !is_numeric_hostport(cfg->listen, false)) {
        snprintf(err, errlen,
                 "--listen %s is not an address other nodes can reach (a "
                 "wildcard, or not a numeric IP:PORT): give --advertise "
                 "IP:PORT, the address peers and gossip use",
                 cfg->listen);
        return KV_ERR_INVAL;
    }
    uint8_t id[CRYPTO_NODE_ID_BYTES];
    if (cfg->replace[0] && config_replace_id(cfg, id) != 0) {
        snprintf(err, errlen,
                 "--replace: expected a member's id, %zu hex digits as "
                 "kvcli members shows it",
                 2 * sizeof(id));
        return KV_ERR_INVAL;
    }
    return 0;
}

int config_parse(struct node_config *cfg, int argc, char **argv, char *err,
                 size_t errlen)
{
    struct option lopts[NOPTS + 3];
    for (size_t i = 0; i < NOPTS; i++)
        lopts[i] = (struct option){opts[i].name,
                                   opts[i].kind == OPT_FLAG ? no_argument
                                                            : required_argument,
                                   NULL, (int)(256 + i)};
    lopts[NOPTS] = (struct option){"config", required_argument, NULL, 'c'};
    lopts[NOPTS + 1] = (struct option){"help", no_argument, NULL, 'h'};
    lopts[NOPTS + 2] = (struct option){0};

    /* Pass 1: --config and --help; pass 2: every other option, so the
     * command line overrides the file whatever the order. */
    for (int pass = 1; pass <= 2; pass++) {
        optind = 1;
        opterr = 0;
        int c;
        while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
            if (c == '?' || c == ':') {
                snprintf(err, errlen, "unknown or incomplete option '%s'",
                         argv[optind - 1]);
                return KV_ERR_INVAL;
            }
            if (pass == 1 && c == 'h') {
                config_usage();
                return 1;
            }
            if (pass == 1 && c == 'c') {
                struct ini_ctx ctx = {cfg, err, errlen, 0};
                int r = ini_parse(optarg, on_ini_setting, &ctx);
                if (r < 0) {
                    snprintf(err, errlen, "--config: cannot read %s", optarg);
                    return KV_ERR_INVAL;
                }
                if (ctx.rc)
                    return ctx.rc;
                if (r > 0) {
                    snprintf(err, errlen,
                             "--config: %s: syntax error on line %d", optarg,
                             r);
                    return KV_ERR_INVAL;
                }
            }
            if (pass == 2 && c >= 256 &&
                set_opt(cfg, &opts[c - 256], optarg ? optarg : "", err, errlen))
                return KV_ERR_INVAL;
        }
        if (optind < argc) {
            snprintf(err, errlen, "unexpected argument '%s'", argv[optind]);
            return KV_ERR_INVAL;
        }
    }
    if (ring_placement_parse(&cfg->placement, cfg->replicas, err, errlen))
        return KV_ERR_INVAL;
    int rc = check_required(cfg, err, errlen);
    if (rc == 0 && !cfg->advertise[0])
        memcpy(cfg->advertise, cfg->listen, sizeof(cfg->advertise));
    return rc;
}
