/* kvcli: essaim's command-line client (DESIGN §12).
 *
 * Exit codes: 0 done, 1 not found, 2 usage, 3 unavailable, 4 authentication
 * refused, 5 other error. Every error is one line on stderr. */
#include "../common/common.h"
#include "../crypto/crypto.h"
#include "../proto/proto.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvcli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvcli [--node HOST:PORT] [--identity FILE | --key FILE] "
            "[--node-key KEY]\n             "
            "[--consistency one|quorum|all|local_one|local_quorum|"
            "each_quorum]\n"
            "             [--timeout MS] [--json] COMMAND\n\n"
            "commands:\n"
            "  keygen FILE        write a new 32-byte secret, mode 0600\n"
            "  keygen --identity FILE  write a key of this client's own, "
            "mode 0600,\n"
            "                     and print its public key for the access "
            "file\n"
            "  put KEY [VALUE]    value from the argument, or from stdin when "
            "absent or \"-\"\n"
            "  get KEY            the value's exact bytes on stdout\n"
            "  del KEY\n"
            "  status             the node's identity, storage and counters\n"
            "  access list | add KEY NAME ROLE | remove KEY|NAME\n"
            "                     the cluster's access list (admin; nodes "
            "started with --access)\n"
            "  members            every member: id, address, region, zone, "
            "status,\n"
            "                     incarnation, last round trip\n"
            "  ring               every node's tokens and share of the key "
            "space\n"
            "  where KEY          the key's replicas and the version each "
            "holds\n"
            "  repair [--range N] [--scrub]\n"
            "  decommission [--force]   the node leaves: its ranges stream "
            "to their next owners\n"
            "  removenode NODE_ID       a dead member's ranges go to new "
            "owners\n"
            "                     an anti-entropy round with every replica "
            "now (all %u\n"
            "                     ranges, or range N); --scrub first "
            "re-hashes every stored\n"
            "                     value and replaces corrupt ones from a "
            "replica\n"
            "  fault show         the node's fault injection: rules, blocks, "
            "clock, counters\n"
            "  fault set PEER [--drop PCT] [--dup PCT] [--reorder PCT] "
            "[--corrupt PCT]\n"
            "            [--delay MS] [--jitter MS] [--dir in|out|both] "
            "[--transport udp|tcp|both]\n"
            "                     traffic with PEER (HOST:PORT, or * for "
            "all); all 0 removes it;\n"
            "                     defaults: --dir out --transport both (tcp "
            "faults act on the sender)\n"
            "  fault block [PEER...]  cut this node off from those peers "
            "(none: heal)\n"
            "  fault clock MS     shift the node's HLC wall clock by MS "
            "(may be negative)\n"
            "  fault clear        remove every rule, block and offset\n"
            "                     (fault needs kvnode --fault-injection)\n\n"
            "--node defaults to $KV_NODE, else %s; --identity to "
            "$KV_IDENTITY (a key of\n"
            "this client's own, from kvcli keygen --identity, for nodes "
            "started with\n"
            "--access); --key to $KV_KEY (the shared client secret).\n"
            "The key each node proves is pinned at first contact in "
            "$KV_KNOWN_NODES, else\n"
            "~/.config/essaim/known_nodes (with the keys of the members it "
            "lists), and checked\n"
            "at every later one; --node-key KEY checks against KEY "
            "instead.\n"
            "exit codes: 0 done, 1 not found, 2 usage, 3 unavailable, "
            "4 authentication refused, 5 other error\n",
            AE_RANGES, PROTO_DEFAULT_NODE);
}

int cli_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kvcli: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

int cli_exit_code_for(int err)
{
    switch (err) {
    case 0:
        return EXIT_DONE;
    case KV_ERR_NOT_FOUND:
        return EXIT_NOT_FOUND;
    case KV_ERR_UNAVAILABLE:
    case KV_ERR_TIMEOUT:
        return EXIT_UNAVAILABLE;
    case KV_ERR_AUTH:
        return EXIT_AUTH;
    default:
        return EXIT_OTHER;
    }
}

/* Reads all of stdin, refusing more than max bytes. */
static int read_stdin(uint8_t **out, size_t *len, size_t max)
{
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return KV_ERR_NOMEM;
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                free(buf);
                return KV_ERR_TOO_LARGE;
            }
            uint8_t *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return KV_ERR_NOMEM;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            free(buf);
            return KV_ERR_IO;
        }
        n += (size_t)r;
    }
    if (n > max) {
        free(buf);
        return KV_ERR_TOO_LARGE;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Writes s as a JSON string. */
void cli_json_str(const uint8_t *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = s[i];
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static bool is_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80         ? 0
                   : (c >> 5) == 6  ? 1
                   : (c >> 4) == 14 ? 2
                   : (c >> 3) == 30 ? 3
                                    : 9;
        if (k == 9 || i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

/* Reports a failed answer: one line, and the exit code. */
int cli_report(const char *what, const struct msg_result *r)
{
    if (r->code == KV_ERR_NOT_FOUND)
        return cli_fail(EXIT_NOT_FOUND, "%s: not found", what);
    if (r->text_len)
        return cli_fail(cli_exit_code_for(r->code), "%s: %.*s", what,
                        (int)r->text_len, r->text);
    return cli_fail(cli_exit_code_for(r->code), "%s: %s", what,
                    kv_strerror(r->code));
}

/* kvcli keygen FILE: a shared secret. kvcli keygen --identity FILE: a
 * key of this client's own, whose public half goes to stdout (for the
 * nodes' access file). */
static int cmd_keygen(const struct cli *cli, int argc, char **argv)
{
    (void)cli;
    bool identity = argc == 3 && strcmp(argv[1], "--identity") == 0;
    if (argc != 2 && !identity)
        return cli_fail(EXIT_USAGE,
                        "usage: kvcli keygen FILE | keygen --identity FILE");
    const char *path = argv[argc - 1];
    int rc = crypto_keyfile_generate(path);
    if (rc)
        return cli_fail(EXIT_OTHER, "keygen: cannot create %s: %s", path,
                        errno == EEXIST ? "it already exists"
                                        : strerror(errno));
    if (!identity)
        return EXIT_DONE;
    uint8_t priv[CRYPTO_KEY_BYTES], pub[CRYPTO_KEY_BYTES];
    char b64[sodium_base64_ENCODED_LEN(CRYPTO_KEY_BYTES,
                                       sodium_base64_VARIANT_ORIGINAL)];
    if (crypto_keyfile_read(path, priv) != 0)
        return cli_fail(EXIT_OTHER, "keygen: cannot read back %s", path);
    crypto_scalarmult_base(pub, priv);
    sodium_memzero(priv, sizeof(priv));
    sodium_bin2base64(b64, sizeof(b64), pub, sizeof(pub),
                      sodium_base64_VARIANT_ORIGINAL);
    printf("%s\n", b64);
    return EXIT_DONE;
}

/* ---- known nodes (like ssh's known_hosts) ----
 *
 * kvcli remembers the static key each node proved, by the address it was
 * reached at, in $KV_KNOWN_NODES or else ~/.config/essaim/known_nodes (one
 * "HOST:PORT KEY" line each, mode 0600). The first contact records the
 * node's key and the keys of every member it lists; a later contact whose
 * key differs is refused. So a client, or anyone who holds the client
 * secret, on the path cannot pose as a node (security review M6). */

static const char *known_nodes_path(char *buf, size_t cap)
{
    const char *env = getenv("KV_KNOWN_NODES");
    if (env)
        return env[0] ? env : NULL;
    const char *home = getenv("HOME");
    if (!home || !home[0])
        return NULL;
    snprintf(buf, cap, "%s/.config/essaim/known_nodes", home);
    return buf;
}

/* The key pinned for addr. @retval false none. */
static bool known_key(const char *path, const char *addr,
                      uint8_t key[CRYPTO_KEY_BYTES])
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[256], a[GOSSIP_ADDR_MAX], k[64];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f)) {
        size_t n = 0;
        if (sscanf(line, "%63s %63s", a, k) == 2 && strcmp(a, addr) == 0 &&
            sodium_base642bin(key, CRYPTO_KEY_BYTES, k, strlen(k), NULL, &n,
                              NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
            n == CRYPTO_KEY_BYTES)
            found = true;
    }
    fclose(f);
    return found;
}

static void key_text(char out[64], const uint8_t key[CRYPTO_KEY_BYTES])
{
    sodium_bin2base64(out, 64, key, CRYPTO_KEY_BYTES,
                      sodium_base64_VARIANT_ORIGINAL);
}

/* Appends "addr key" to the file, making its directory (0700) if need be. */
static void pin(const char *path, const char *addr,
                const uint8_t key[CRYPTO_KEY_BYTES])
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%s", path);
    for (char *p = strchr(dir + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        mkdir(dir, 0700);
        *p = '/';
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return; /* pinning is best effort where the file cannot be made */
    char k[64], line[GOSSIP_ADDR_MAX + 80];
    key_text(k, key);
    int n = snprintf(line, sizeof(line), "%s %s\n", addr, k);
    if (write(fd, line, (size_t)n) != n)
        fprintf(stderr, "kvcli: cannot write %s: %s\n", path, strerror(errno));
    close(fd);
}

/* First contact: the members this node lists are pinned too, so that a
 * later contact with any of them is checked against what this one said. */
static void pin_members(struct kvc *c, const char *path, int timeout_ms)
{
    struct msg m = {.type = MSG_MEMBERS};
    if (kvc_call(c, &m, timeout_ms) != 0 || m.type != MSG_MEMBERS_RESULT)
        return;
    uint8_t old[CRYPTO_KEY_BYTES];
    for (size_t i = 0; i < m.u.members.n; i++) {
        const struct wire_member *w = &m.u.members.rows[i].info;
        if (w->addr[0] && !known_key(path, w->addr, old))
            pin(path, w->addr, w->pubkey);
    }
}

/* Checks the key the node proved: against --node-key when given, else
 * against the known nodes file (pinning it at first contact).
 * @retval an exit code. */
static int check_node_key(const struct cli *cli, struct kvc *c)
{
    const uint8_t *key = kvc_node_key(c);
    char got[64], want[64], buf[600];
    key_text(got, key);
    uint8_t pinned[CRYPTO_KEY_BYTES];
    if (cli->node_key) {
        size_t n = 0;
        if (sodium_base642bin(pinned, sizeof(pinned), cli->node_key,
                              strlen(cli->node_key), NULL, &n, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            n != sizeof(pinned))
            return cli_fail(EXIT_USAGE,
                            "--node-key: expected a node key in base64 (as "
                            "kvcli members shows it)");
        if (sodium_memcmp(pinned, key, sizeof(pinned)) != 0)
            return cli_fail(EXIT_AUTH,
                            "%s proved node key %s, not %s (--node-key): it "
                            "is not the node you named",
                            cli->node, got, cli->node_key);
        return EXIT_DONE;
    }
    const char *path = known_nodes_path(buf, sizeof(buf));
    if (!path)
        return EXIT_DONE;
    if (known_key(path, cli->node, pinned)) {
        if (sodium_memcmp(pinned, key, sizeof(pinned)) == 0)
            return EXIT_DONE;
        key_text(want, pinned);
        return cli_fail(EXIT_AUTH,
                        "%s proved node key %s, but %s pins %s for it: if "
                        "that node was given a new key on purpose, delete "
                        "its line there; otherwise something poses as it",
                        cli->node, got, path, want);
    }
    pin(path, cli->node, key);
    pin_members(c, path, cli->timeout_ms);
    return EXIT_DONE;
}

int cli_connect_node(const struct cli *cli, struct kvc **c)
{
    const char *path = cli->identity_path ? cli->identity_path : cli->key_path;
    uint8_t secret[CRYPTO_KEY_BYTES];
    int rc = crypto_keyfile_read(path, secret);
    if (rc == KV_ERR_PERM)
        return cli_fail(EXIT_OTHER,
                        "key file %s is readable by group or others, or "
                        "owned by another user; chmod 600 it and own it",
                        path);
    if (rc)
        return cli_fail(EXIT_OTHER, "cannot read key file %s: %s", path,
                        rc == KV_ERR_IO ? strerror(errno) : kv_strerror(rc));
    rc = cli->identity_path
             ? kvc_connect_identity(c, cli->node, secret, cli->timeout_ms)
             : kvc_connect(c, cli->node, secret, cli->timeout_ms);
    sodium_memzero(secret, sizeof(secret));
    switch (rc) {
    case 0:
        if ((rc = check_node_key(cli, *c)) != EXIT_DONE) {
            kvc_close(*c);
            *c = NULL;
        }
        return rc;
    case KV_ERR_AUTH:
        if (cli->identity_path)
            return cli_fail(EXIT_AUTH,
                            "%s refused identity %s: this key is not allowed "
                            "on this cluster (its public key must be in the "
                            "node's access file, kvnode --access)",
                            cli->node, path);
        return cli_fail(EXIT_AUTH,
                        "%s refused the client key %s (authentication "
                        "failed)",
                        cli->node, path);
    case KV_ERR_UNAVAILABLE:
        return cli_fail(EXIT_UNAVAILABLE, "cannot connect to %s: %s", cli->node,
                        strerror(errno));
    case KV_ERR_TIMEOUT:
        return cli_fail(EXIT_UNAVAILABLE, "%s did not answer within %d ms",
                        cli->node, cli->timeout_ms);
    case KV_ERR_CLOSED:
        return cli_fail(EXIT_OTHER,
                        "%s closed the connection before the handshake "
                        "(at its connection limit, not an essaim node, or a "
                        "node that takes only clients with keys of their "
                        "own: kvcli --identity)",
                        cli->node);
    case KV_ERR_INVAL:
        return cli_fail(EXIT_USAGE,
                        "bad node address '%s' (expected HOST:PORT)",
                        cli->node);
    default:
        return cli_fail(EXIT_OTHER, "connecting to %s: %s", cli->node,
                        kv_strerror(rc));
    }
}

/* One round trip; maps transport failures to exit codes. */
int cli_call(const struct cli *cli, struct kvc *c, struct msg *m,
             const char *what)
{
    int rc = kvc_call(c, m, cli->timeout_ms + 1000);
    if (rc == KV_ERR_TIMEOUT)
        return cli_fail(
            EXIT_UNAVAILABLE, "%s: no answer from %s within %d ms%s", what,
            cli->node, cli->timeout_ms,
            m->type == MSG_GET ? "" : "; the write may have been applied");
    if (rc == KV_ERR_CLOSED)
        return cli_fail(
            EXIT_UNAVAILABLE, "%s: %s closed the connection%s", what, cli->node,
            m->type == MSG_GET ? "" : "; the write may have been applied");
    if (rc)
        return cli_fail(EXIT_OTHER, "%s: %s", what, kv_strerror(rc));
    return EXIT_DONE;
}

static int cmd_kv(const struct cli *cli, int argc, char **argv)
{
    const char *cmd = argv[0];
    bool put = strcmp(cmd, "put") == 0, get = strcmp(cmd, "get") == 0;
    if (argc < 2 || argc > (put ? 3 : 2))
        return cli_fail(EXIT_USAGE, "usage: kvcli %s KEY%s", cmd,
                        put ? " [VALUE]" : "");
    const char *key = argv[1];
    size_t klen = strlen(key);
    if (klen == 0 || klen > PROTO_MAX_KEY)
        return cli_fail(EXIT_USAGE, "%s: a key is 1 to %d bytes", cmd,
                        PROTO_MAX_KEY);
    uint8_t *stdin_value = NULL;
    const uint8_t *value = NULL;
    size_t vlen = 0;
    if (put && (argc == 2 || strcmp(argv[2], "-") == 0)) {
        int rc = read_stdin(&stdin_value, &vlen, PROTO_MAX_VALUE_LIMIT);
        if (rc)
            return cli_fail(rc == KV_ERR_TOO_LARGE ? EXIT_USAGE : EXIT_OTHER,
                            "put: reading the value from stdin: %s%s",
                            kv_strerror(rc),
                            rc == KV_ERR_TOO_LARGE ? " (64 MiB at most)" : "");
        value = stdin_value;
    } else if (put) {
        value = (const uint8_t *)argv[2];
        vlen = strlen(argv[2]);
    }
    struct kvc *c = NULL;
    int code = cli_connect_node(cli, &c);
    if (code) {
        free(stdin_value);
        return code;
    }
    /* The node's own limits, from its welcome: refused here, by name. */
    const struct msg_welcome *wl = kvc_welcome(c);
    bool long_key = klen > wl->max_key;
    if (long_key || (put && vlen > wl->max_value)) {
        code = cli_fail(EXIT_USAGE,
                        "%s: %s of %zu bytes is over the node's limit of %u "
                        "bytes",
                        cmd, long_key ? "key" : "value", long_key ? klen : vlen,
                        (unsigned)(long_key ? wl->max_key : wl->max_value));
        kvc_close(c);
        free(stdin_value);
        return code;
    }
    struct msg m = {.type = put ? MSG_PUT : get ? MSG_GET : MSG_DEL};
    m.u.req.key = (const uint8_t *)key;
    m.u.req.key_len = klen;
    m.u.req.value = value;
    m.u.req.value_len = vlen;
    m.u.req.consistency = (uint8_t)cli->consistency;
    m.u.req.timeout_ms = (uint32_t)cli->timeout_ms;
    code = cli_call(cli, c, &m, cmd);
    free(stdin_value);
    if (code == EXIT_DONE) {
        const struct msg_result *r = &m.u.result;
        if (m.type != MSG_RESULT)
            code = cli_fail(EXIT_OTHER, "%s: unexpected answer", cmd);
        else if (r->code)
            code = cli_report(cmd, r);
        else if (get && cli->json) {
            printf("{\"key\":");
            cli_json_str((const uint8_t *)key, klen);
            if (is_utf8(r->value, r->value_len)) {
                printf(",\"value\":");
                cli_json_str(r->value, r->value_len);
            } else {
                size_t b64 = sodium_base64_ENCODED_LEN(
                    r->value_len, sodium_base64_VARIANT_ORIGINAL);
                char *s = malloc(b64);
                if (s) {
                    sodium_bin2base64(s, b64, r->value, r->value_len,
                                      sodium_base64_VARIANT_ORIGINAL);
                    printf(",\"value_base64\":\"%s\"", s);
                    free(s);
                }
            }
            printf(",\"version\":%llu}\n", (unsigned long long)r->version);
        } else if (get) {
            if (r->value_len &&
                fwrite(r->value, 1, r->value_len, stdout) != r->value_len)
                code = cli_fail(EXIT_OTHER, "get: writing stdout: %s",
                                strerror(errno));
        } else if (cli->json) {
            printf("{\"ok\":true,\"version\":%llu}\n",
                   (unsigned long long)r->version);
        }
    }
    kvc_close(c);
    return code;
}

/* Connects, sends a request without fields and waits for an answer of type
 * want; an error answer is reported. On EXIT_DONE *m holds the answer; *c
 * is open whatever the outcome, for the caller to close (NULL if the
 * connection failed). */
int cli_simple_request(const struct cli *cli, uint8_t type, uint8_t want,
                       const char *what, struct kvc **c, struct msg *m)
{
    *c = NULL;
    int code = cli_connect_node(cli, c);
    if (code)
        return code;
    *m = (struct msg){.type = type};
    code = cli_call(cli, *c, m, what);
    if (code == EXIT_DONE && m->type == MSG_RESULT)
        return cli_report(what, &m->u.result);
    if (code == EXIT_DONE && m->type != want)
        return cli_fail(EXIT_OTHER, "%s: unexpected answer", what);
    return code;
}

/* The commands, as wireguard-tools' wg lists its subcommands: one function
 * each, given the command's own arguments (argv[0] is its name). */
static const struct {
    const char *name;
    int (*run)(const struct cli *cli, int argc, char **argv);
    bool offline; /* needs neither a node nor the client key */
} commands[] = {
    {"keygen", cmd_keygen, true},
    {"put", cmd_kv, false},
    {"get", cmd_kv, false},
    {"del", cmd_kv, false},
    {"status", cmd_status, false},
    {"members", cmd_members, false},
    {"access", cmd_access, false},
    {"ring", cmd_ring, false},
    {"where", cmd_where, false},
    {"repair", cmd_repair, false},
    {"fault", cmd_fault, false},
    {"decommission", cmd_decommission, false},
    {"removenode", cmd_removenode, false},
};

int main(int argc, char **argv)
{
    struct cli cli = {.consistency = CONS_QUORUM,
                      .timeout_ms = DEFAULT_TIMEOUT_MS};
    static const struct option lopts[] = {
        {"node", required_argument, NULL, 'n'},
        {"key", required_argument, NULL, 'k'},
        {"identity", required_argument, NULL, 'i'},
        {"node-key", required_argument, NULL, 'K'},
        {"consistency", required_argument, NULL, 'c'},
        {"timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int opt;
    char *end;
    opterr = 0;
    /* "+": options stop at the command, so values may start with '-'. */
    while ((opt = getopt_long(argc, argv, "+", lopts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            cli.node = optarg;
            break;
        case 'k':
            cli.key_path = optarg;
            break;
        case 'i':
            cli.identity_path = optarg;
            break;
        case 'K':
            cli.node_key = optarg;
            break;
        case 'j':
            cli.json = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_DONE;
        case 'c':
            if (!(cli.consistency = consistency_parse(optarg)))
                return cli_fail(EXIT_USAGE,
                                "--consistency: unknown level '%s'; "
                                "expected one of " CONS_NAMES,
                                optarg);
            break;
        case 't':
            cli.timeout_ms = (int)strtol(optarg, &end, 10);
            if (!*optarg || *end || cli.timeout_ms <= 0 ||
                cli.timeout_ms > 3600000)
                return cli_fail(EXIT_USAGE, "--timeout: expected milliseconds "
                                            "from 1 to 3600000");
            break;
        default:
            return cli_fail(EXIT_USAGE,
                            "unknown or incomplete option '%s' (see "
                            "kvcli --help)",
                            argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (crypto_init() != 0)
        return cli_fail(EXIT_OTHER, "libsodium failed to start");
    char **cargv = argv + optind;
    int cargc = argc - optind;
    const char *cmd = cargv[0];
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(cmd, commands[i].name) != 0)
            continue;
        if (commands[i].offline)
            return commands[i].run(&cli, cargc, cargv);
        if (!cli.node)
            cli.node =
                getenv("KV_NODE") ? getenv("KV_NODE") : PROTO_DEFAULT_NODE;
        if (!cli.identity_path && !cli.key_path)
            cli.identity_path = getenv("KV_IDENTITY");
        if (!cli.key_path)
            cli.key_path = getenv("KV_KEY");
        if (!cli.key_path && !cli.identity_path)
            return cli_fail(EXIT_USAGE,
                            "no client key: pass --identity FILE or --key "
                            "FILE, or set KV_IDENTITY or KV_KEY");
        return commands[i].run(&cli, cargc, cargv);
    }
    return cli_fail(EXIT_USAGE, "unknown command '%s' (see kvcli --help)", cmd);
}
