/* kvcli's commands about the cluster rather than keys: status, members,
 * ring, where, repair and fault (kvcli.h). */
#include "kvcli.h"

#include "../common/common.h"
#include "../crypto/crypto.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Anti-entropy counters, and when each range last converged. */
/* When each range last converged: text lines, or a JSON "ranges" array. */
static void print_ranges(const struct cli *cli, const struct msg_status *s)
{
    uint64_t now = (uint64_t)time(NULL) * 1000;
    if (cli->json)
        printf(",\"ranges\":[");
    for (size_t i = 0; i < s->n_ranges; i++) {
        uint64_t first = (uint64_t)i << (64 - AE_RANGE_BITS);
        uint64_t last = first | (UINT64_MAX >> AE_RANGE_BITS);
        uint64_t at = s->range_converged[i];
        uint64_t ago = at && now > at ? (now - at) / 1000 : 0;
        if (cli->json) {
            printf("%s{\"range\":%zu,\"first\":\"%016llx\",\"last\":"
                   "\"%016llx\",\"converged_ms\":%llu}",
                   i ? "," : "", i, (unsigned long long)first,
                   (unsigned long long)last, (unsigned long long)at);
        } else if (at) {
            printf("range %-2zu         %016llx-%016llx converged %llu s ago\n",
                   i, (unsigned long long)first, (unsigned long long)last,
                   (unsigned long long)ago);
        } else {
            printf("range %-2zu         %016llx-%016llx not converged since "
                   "the node started\n",
                   i, (unsigned long long)first, (unsigned long long)last);
        }
    }
    if (cli->json)
        printf("]");
}

static int follow(const struct cli *cli, struct kvc *c, struct msg *m,
                  const char *what,
                  void (*show)(const struct cli *,
                               const struct msg_repair_result *, bool));

static void print_repair(const struct cli *cli,
                         const struct msg_repair_result *r, bool tty)
{
    if (!r->final && cli->json)
        return;
    if (cli->json) {
        printf("{\"code\":%d,\"exchanges\":%u,\"differing\":%llu,"
               "\"pulled\":%llu,\"pushed\":%llu,\"bytes_sent\":%llu,"
               "\"bytes_received\":%llu,\"scrubbed\":%llu,\"corrupt\":%llu,"
               "\"scrub_repaired\":%llu}\n",
               r->code, r->total, (unsigned long long)r->differing,
               (unsigned long long)r->pulled, (unsigned long long)r->pushed,
               (unsigned long long)r->bytes_sent,
               (unsigned long long)r->bytes_received,
               (unsigned long long)r->scrubbed, (unsigned long long)r->corrupt,
               (unsigned long long)r->scrub_repaired);
        return;
    }
    char line[256];
    snprintf(line, sizeof(line),
             "%u/%u exchanges, %llu keys differed, %llu pulled, %llu "
             "pushed, %llu bytes sent, %llu received",
             r->done, r->total, (unsigned long long)r->differing,
             (unsigned long long)r->pulled, (unsigned long long)r->pushed,
             (unsigned long long)r->bytes_sent,
             (unsigned long long)r->bytes_received);
    if (tty && !r->final) {
        int width = 30,
            fill = r->total ? (int)(width * r->done / r->total) : width;
        fprintf(stderr, "\rrepair [%.*s%.*s] %s", fill,
                "##############################", width - fill,
                "..............................", line);
        fflush(stderr);
        return;
    }
    if (!r->final) {
        fprintf(stderr, "repair: %s\n", line);
        return;
    }
    if (tty)
        fputc('\n', stderr);
    printf("repair: %s\n", line);
    if (r->scrubbed || r->corrupt)
        printf("scrub: %llu records checked, %llu corrupt, %llu replaced\n",
               (unsigned long long)r->scrubbed, (unsigned long long)r->corrupt,
               (unsigned long long)r->scrub_repaired);
}

/* kvcli repair [--range N] [--scrub]: one anti-entropy round, now. */
int cmd_repair(const struct cli *cli, int argc, char **argv)
{
    int range = -1;
    bool scrub = false;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--scrub") == 0) {
            scrub = true;
        } else if (strcmp(argv[i], "--range") == 0 && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (!*argv[i] || *end || v < 0 || v >= (long)AE_RANGES)
                return cli_fail(EXIT_USAGE, "repair: --range takes 0 to %u",
                                AE_RANGES - 1);
            range = (int)v;
        } else {
            return cli_fail(EXIT_USAGE,
                            "usage: kvcli repair [--range N] [--scrub]");
        }
    }
    struct kvc *c;
    int code = cli_connect_node(cli, &c);
    if (code)
        return code;
    struct msg m = {.type = MSG_REPAIR};
    m.u.repair.range = range;
    m.u.repair.scrub = scrub;
    return follow(cli, c, &m, "repair", print_repair);
}

/* A decommission's or removal's progress, or its end. */
static void print_topo(const struct cli *cli, const struct msg_repair_result *r,
                       bool tty)
{
    if (!r->final && cli->json)
        return;
    if (cli->json) {
        printf("{\"code\":%d,\"ranges\":%u,\"ranges_done\":%u,"
               "\"bytes_sent\":%llu,\"bytes_received\":%llu,\"text\":",
               r->code, r->total, r->done, (unsigned long long)r->bytes_sent,
               (unsigned long long)r->bytes_received);
        cli_json_str((const uint8_t *)r->text, r->text_len);
        printf("}\n");
        return;
    }
    /* No ranges: another node drives it (a removal), or nothing moved. */
    char line[256] = "";
    if (r->total)
        snprintf(line, sizeof(line),
                 "%u/%u ranges, %llu bytes sent, %llu received", r->done,
                 r->total, (unsigned long long)r->bytes_sent,
                 (unsigned long long)r->bytes_received);
    if (tty && !r->final) {
        int width = 30, fill = r->total ? (int)(width * r->done / r->total) : 0;
        fprintf(stderr, "\r[%.*s%.*s] %.*s", fill,
                "##############################", width - fill,
                "..............................",
                *line ? (int)strlen(line) : (int)r->text_len,
                *line ? line : r->text);
        fflush(stderr);
        return;
    }
    if (!r->final) {
        fprintf(stderr, "%.*s%s%s\n", (int)r->text_len, r->text,
                *line ? ": " : "", line);
        return;
    }
    if (tty)
        fputc('\n', stderr);
    if (r->code == 0)
        printf("%.*s%s%s%s\n", (int)r->text_len, r->text, *line ? " (" : "",
               line, *line ? ")" : "");
}

/* Sends m, then shows each MSG_REPAIR_RESULT until the final one. */
static int
follow(const struct cli *cli, struct kvc *c, struct msg *m, const char *what,
       void (*show)(const struct cli *, const struct msg_repair_result *, bool))
{
    int code, rc = kvc_send(c, m);
    bool tty = isatty(STDERR_FILENO);
    /* A round on a large store takes a while between messages (a scrub
     * first reads every value): wait at least ten minutes for each. */
    int wait_ms = cli->timeout_ms > 600000 ? cli->timeout_ms : 600000;
    while (rc == 0) {
        rc = kvc_recv(c, m, wait_ms);
        if (rc)
            break;
        if (m->type == MSG_RESULT) {
            code = cli_report(what, &m->u.result);
            kvc_close(c);
            return code;
        }
        if (m->type != MSG_REPAIR_RESULT) {
            kvc_close(c);
            return cli_fail(EXIT_OTHER, "%s: unexpected answer", what);
        }
        const struct msg_repair_result *r = &m->u.repair_result;
        show(cli, r, tty);
        if (r->final) {
            code = r->code ? cli_fail(cli_exit_code_for(r->code), "%s: %.*s",
                                      what, (int)r->text_len, r->text)
                           : EXIT_DONE;
            kvc_close(c);
            return code;
        }
    }
    kvc_close(c);
    if (rc == KV_ERR_TIMEOUT)
        return cli_fail(EXIT_UNAVAILABLE, "%s: no word from %s for %d ms", what,
                        cli->node, wait_ms);
    if (rc == KV_ERR_CLOSED)
        return cli_fail(EXIT_UNAVAILABLE, "%s: %s closed the connection", what,
                        cli->node);
    return cli_fail(EXIT_OTHER, "%s: %s", what, kv_strerror(rc));
}

/* kvcli decommission [--force]: the node --node names streams its ranges
 * to their next owners and leaves. */
int cmd_decommission(const struct cli *cli, int argc, char **argv)
{
    struct msg m = {.type = MSG_TOPO};
    m.u.topo.op = TOPO_DECOMMISSION;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--force") != 0)
            return cli_fail(EXIT_USAGE, "usage: kvcli decommission [--force]");
        m.u.topo.force = true;
    }
    struct kvc *c;
    int code = cli_connect_node(cli, &c);
    if (code)
        return code;
    return follow(cli, c, &m, "decommission", print_topo);
}

/* kvcli removenode ID: a dead member's ranges go to their new owners. ID
 * is the member's id in hex, or a prefix of it that only it has. */
int cmd_removenode(const struct cli *cli, int argc, char **argv)
{
    if (argc != 2 || !*argv[1] || strlen(argv[1]) > 2 * CRYPTO_NODE_ID_BYTES)
        return cli_fail(EXIT_USAGE, "usage: kvcli removenode NODE_ID");
    struct kvc *c;
    struct msg m;
    int code = cli_simple_request(cli, MSG_MEMBERS, MSG_MEMBERS_RESULT,
                                  "removenode", &c, &m);
    if (code)
        return code;
    size_t len = strlen(argv[1]), hits = 0;
    struct msg q = {.type = MSG_TOPO};
    q.u.topo.op = TOPO_REMOVENODE;
    for (size_t i = 0; i < m.u.members.n; i++) {
        char id[2 * CRYPTO_NODE_ID_BYTES + 1];
        hex_encode(id, m.u.members.rows[i].info.id, CRYPTO_NODE_ID_BYTES);
        if (strncasecmp(id, argv[1], len) == 0) {
            memcpy(q.u.topo.node, m.u.members.rows[i].info.id,
                   CRYPTO_NODE_ID_BYTES);
            hits++;
        }
    }
    if (hits != 1) {
        kvc_close(c);
        return cli_fail(EXIT_USAGE,
                        hits ? "removenode: %s names more than one member"
                             : "removenode: no member has the id %s",
                        argv[1]);
    }
    return follow(cli, c, &q, "removenode", print_topo);
}

int cmd_status(const struct cli *cli, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return cli_fail(EXIT_USAGE, "usage: kvcli status");
    struct kvc *c;
    struct msg m;
    int code = cli_simple_request(cli, MSG_STATUS, MSG_STATUS_RESULT, "status",
                                  &c, &m);
    if (code == EXIT_DONE) {
        const struct msg_status *s = &m.u.status;
        char id[2 * CRYPTO_NODE_ID_BYTES + 1];
        hex_encode(id, s->node_id, sizeof(s->node_id));
        printf(cli->json ? "{\"node_id\":\"%s\",\"listen\":\"%.*s\""
                         : "node_id          %s\nlisten           %.*s\n",
               id, (int)s->listen_len, s->listen);
        /* Every counter the node sent, in its order. */
        for (size_t i = 0; i < s->n_counters; i++) {
            const struct status_counter *k = &s->counters[i];
            if (cli->json)
                printf(",\"%.*s\":%llu", (int)k->name_len, k->name,
                       (unsigned long long)k->value);
            else
                printf("%-16.*s %llu\n", (int)k->name_len, k->name,
                       (unsigned long long)k->value);
        }
        print_ranges(cli, s);
        if (cli->json)
            printf(",\"hints_for\":{");
        /* Hints held, per node they are for. */
        for (size_t i = 0; i < s->n_hint_rows; i++) {
            char owner[2 * CRYPTO_NODE_ID_BYTES + 1];
            hex_encode(owner, s->hint_rows[i].owner, CRYPTO_NODE_ID_BYTES);
            printf(cli->json ? "%s\"%s\":%llu" : "%shints_for        %s %llu\n",
                   cli->json && i ? "," : "", owner,
                   (unsigned long long)s->hint_rows[i].count);
        }
        if (cli->json)
            printf("}}\n");
    }
    kvc_close(c);
    return code;
}

static const char *status_name(uint8_t st)
{
    static const char *const names[] = {"alive", "suspect", "dead", "left"};
    return st <= MEMBER_LEFT ? names[st] : "unknown";
}

int cmd_members(const struct cli *cli, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return cli_fail(EXIT_USAGE, "usage: kvcli members");
    struct kvc *c;
    struct msg m;
    int code = cli_simple_request(cli, MSG_MEMBERS, MSG_MEMBERS_RESULT,
                                  "members", &c, &m);
    if (code == EXIT_DONE) {
        const struct msg_members *ms = &m.u.members;
        if (cli->json)
            putchar('[');
        else
            printf("%-32s  %-21s  %-10s  %-10s  %-7s  %11s  %6s  %-7s  %-8s  "
                   "%s\n",
                   "ID", "ADDRESS", "REGION", "ZONE", "STATUS", "INCARNATION",
                   "RTT_MS", "RING", "REPLICAS", "NODE_KEY");
        for (size_t i = 0; i < ms->n; i++) {
            const struct wire_member *w = &ms->rows[i].info;
            char id[2 * CRYPTO_NODE_ID_BYTES + 1], key[64];
            hex_encode(id, w->id, sizeof(w->id));
            sodium_bin2base64(key, sizeof(key), w->pubkey, sizeof(w->pubkey),
                              sodium_base64_VARIANT_ORIGINAL);
            if (cli->json) {
                printf("%s{\"id\":\"%s\",\"node_key\":\"%s\",\"address\":",
                       i ? "," : "", id, key);
                cli_json_str((const uint8_t *)w->addr, strlen(w->addr));
                printf(",\"region\":");
                cli_json_str((const uint8_t *)w->region, strlen(w->region));
                printf(",\"zone\":");
                cli_json_str((const uint8_t *)w->zone, strlen(w->zone));
                printf(",\"replicas\":");
                cli_json_str((const uint8_t *)w->replicas, strlen(w->replicas));
                printf(",\"status\":\"%s\",\"ring\":\"%s\","
                       "\"incarnation\":%llu,\"rtt_ms\":%llu,\"self\":%s}",
                       status_name(w->status), ring_phase_name(w->ring),
                       (unsigned long long)w->incarnation,
                       (unsigned long long)ms->rows[i].rtt_ms,
                       i == 0 ? "true" : "false");
            } else {
                printf("%-32s  %-21s  %-10s  %-10s  %-7s  %11llu  %6llu  %-7s  "
                       "%-8s  %s\n",
                       id, w->addr, w->region, w->zone, status_name(w->status),
                       (unsigned long long)w->incarnation,
                       (unsigned long long)ms->rows[i].rtt_ms,
                       ring_phase_name(w->ring), w->replicas, key);
            }
        }
        if (cli->json)
            printf("]\n");
    }
    kvc_close(c);
    return code;
}

/* The id, address, region and zone of a member, as JSON fields (without
 * braces) or as table columns. */
static void print_member(const struct cli *cli, const struct wire_member *w)
{
    char id[2 * CRYPTO_NODE_ID_BYTES + 1];
    hex_encode(id, w->id, sizeof(w->id));
    if (!cli->json) {
        printf("%-32s  %-21s  %-10s  %-10s  %-7s", id, w->addr, w->region,
               w->zone, status_name(w->status));
        return;
    }
    printf("\"id\":\"%s\",\"address\":", id);
    cli_json_str((const uint8_t *)w->addr, strlen(w->addr));
    printf(",\"region\":");
    cli_json_str((const uint8_t *)w->region, strlen(w->region));
    printf(",\"zone\":");
    cli_json_str((const uint8_t *)w->zone, strlen(w->zone));
    printf(",\"status\":\"%s\"", status_name(w->status));
}

int cmd_ring(const struct cli *cli, int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return cli_fail(EXIT_USAGE, "usage: kvcli ring");
    struct kvc *c;
    struct msg m;
    int code =
        cli_simple_request(cli, MSG_RING, MSG_RING_RESULT, "ring", &c, &m);
    if (code == EXIT_DONE) {
        const struct msg_ring *r = &m.u.ring;
        if (cli->json)
            printf("{\"replicas\":%u,\"nodes\":[", r->replicas);
        else
            printf("%-32s  %-21s  %-10s  %-10s  %-7s  %6s  %7s\n", "ID",
                   "ADDRESS", "REGION", "ZONE", "STATUS", "TOKENS", "OWNS");
        for (size_t i = 0; i < r->n; i++) {
            const struct ring_row *row = &r->rows[i];
            if (!cli->json) {
                print_member(cli, &row->info);
                printf("  %6zu  %6.2f%%\n", row->n_tokens,
                       row->share_ppm / 10000.0);
                continue;
            }
            printf("%s{", i ? "," : "");
            print_member(cli, &row->info);
            printf(",\"share\":%.6f,\"tokens\":[", row->share_ppm / 1e6);
            for (size_t t = 0; t < row->n_tokens; t++)
                printf("%s%llu", t ? "," : "",
                       (unsigned long long)row->tokens[t]);
            printf("]}");
        }
        if (cli->json)
            printf("]}\n");
        else
            printf("%zu nodes, %u replicas per key\n", r->n, r->replicas);
    }
    kvc_close(c);
    return code;
}

int cmd_where(const struct cli *cli, int argc, char **argv)
{
    if (argc != 2 || !argv[1][0] || strlen(argv[1]) > PROTO_MAX_KEY)
        return cli_fail(EXIT_USAGE, "usage: kvcli where KEY (1 to %d bytes)",
                        PROTO_MAX_KEY);
    struct kvc *c = NULL;
    int code = cli_connect_node(cli, &c);
    if (code)
        return code;
    struct msg m = {.type = MSG_WHERE};
    m.u.req.key = (const uint8_t *)argv[1];
    m.u.req.key_len = strlen(argv[1]);
    m.u.req.timeout_ms = (uint32_t)cli->timeout_ms;
    code = cli_call(cli, c, &m, "where");
    if (code == EXIT_DONE && m.type == MSG_RESULT)
        code = cli_report("where", &m.u.result);
    else if (code == EXIT_DONE && m.type != MSG_WHERE_RESULT)
        code = cli_fail(EXIT_OTHER, "where: unexpected answer");
    if (code != EXIT_DONE) {
        kvc_close(c);
        return code;
    }
    static const char *const states[] = {"answered", "down", "no answer",
                                         "error"};
    const struct msg_where *w = &m.u.where;
    if (cli->json) {
        printf("{\"key\":");
        cli_json_str((const uint8_t *)argv[1], strlen(argv[1]));
        printf(",\"token\":%llu,\"replicas\":[", (unsigned long long)w->token);
    } else {
        printf("token %016llx\n%-32s  %-21s  %-10s  %-10s  %-7s  %-9s  %s\n",
               (unsigned long long)w->token, "ID", "ADDRESS", "REGION", "ZONE",
               "STATUS", "ANSWER", "VERSION");
    }
    for (size_t i = 0; i < w->n; i++) {
        const struct where_row *row = &w->rows[i];
        const char *state = states[row->state];
        if (cli->json) {
            printf("%s{", i ? "," : "");
            print_member(cli, &row->info);
            printf(",\"answer\":\"%s\"", state);
            if (row->state == WHERE_ERROR)
                printf(",\"error\":\"%s\"", kv_strerror(row->code));
            if (row->state == WHERE_ANSWERED)
                printf(",\"found\":%s,\"tombstone\":%s,\"version\":%llu",
                       row->found ? "true" : "false",
                       row->tombstone ? "true" : "false",
                       (unsigned long long)row->version);
            printf("}");
            continue;
        }
        print_member(cli, &row->info);
        printf("  %-9s  ", state);
        if (row->state == WHERE_ERROR)
            printf("%s\n", kv_strerror(row->code));
        else if (row->state != WHERE_ANSWERED)
            printf("-\n");
        else if (!row->found)
            printf("none\n");
        else
            printf("%llu%s\n", (unsigned long long)row->version,
                   row->tombstone ? " (deleted)" : "");
    }
    if (cli->json)
        printf("]}\n");
    kvc_close(c);
    return code;
}

/* A percentage ("20", "0.5") as parts per million. */
static int parse_pct(const char *s, uint32_t *ppm)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= 0 && v <= 100))
        return -1;
    *ppm = (uint32_t)(v * 10000.0 + 0.5);
    return 0;
}

static int parse_ms(const char *s, uint32_t *ms)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || s[0] == '-' || v > 3600000)
        return -1;
    *ms = (uint32_t)v;
    return 0;
}

static int parse_rule(int argc, char **argv, struct fault_rule *r)
{
    memset(r, 0, sizeof(*r));
    if (argc < 3 || strlen(argv[2]) >= sizeof(r->peer) || !argv[2][0])
        return cli_fail(EXIT_USAGE,
                        "usage: kvcli fault set PEER [--drop PCT] ... "
                        "(see kvcli --help)");
    snprintf(r->peer, sizeof(r->peer), "%s", argv[2]);
    r->dirs = FAULT_OUT;
    r->transports = FAULT_UDP | FAULT_TCP;
    static const char *const pcts[] = {"--drop", "--dup", "--reorder",
                                       "--corrupt"};
    uint32_t *ppm[] = {&r->drop, &r->dup, &r->reorder, &r->corrupt};
    for (int i = 3; i < argc; i += 2) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL, known = false;
        for (int k = 0; k < 4 && ok; k++)
            if (strcmp(o, pcts[k]) == 0) {
                known = true;
                ok = parse_pct(v, ppm[k]) == 0;
            }
        if (ok && strcmp(o, "--delay") == 0)
            known = true, ok = parse_ms(v, &r->delay_ms) == 0;
        if (ok && strcmp(o, "--jitter") == 0)
            known = true, ok = parse_ms(v, &r->jitter_ms) == 0;
        if (ok && (!strcmp(o, "--dir") || !strcmp(o, "--transport"))) {
            bool dir = strcmp(o, "--dir") == 0;
            uint8_t *f = dir ? &r->dirs : &r->transports;
            const char *a = dir ? "in" : "udp", *b = dir ? "out" : "tcp";
            known = true;
            *f = !strcmp(v, a)        ? 1
                 : !strcmp(v, b)      ? 2
                 : !strcmp(v, "both") ? 3
                                      : 0;
            ok = *f != 0;
        }
        if (!known || !ok)
            return cli_fail(
                EXIT_USAGE,
                "fault set: bad or incomplete option '%s' (rates are "
                "percentages 0..100, delays milliseconds)",
                o);
    }
    return EXIT_DONE;
}

static void print_fault_state(const struct cli *cli,
                              const struct msg_fault_result *r)
{
    static const char *const dirs[] = {"", "in", "out", "both"};
    static const char *const trs[] = {"", "udp", "tcp", "both"};
    const struct fault_counters *c = &r->counters;
    if (cli->json) {
        printf("{\"enabled\":%s,\"clock_offset_ms\":%lld,\"rules\":[",
               r->enabled ? "true" : "false", (long long)r->offset_ms);
        for (size_t i = 0; i < r->n_rules; i++) {
            const struct fault_rule *u = &r->rules[i];
            printf("%s{\"peer\":", i ? "," : "");
            cli_json_str((const uint8_t *)u->peer, strlen(u->peer));
            printf(",\"dir\":\"%s\",\"transport\":\"%s\",\"drop_ppm\":%u,"
                   "\"dup_ppm\":%u,\"reorder_ppm\":%u,\"corrupt_ppm\":%u,"
                   "\"delay_ms\":%u,\"jitter_ms\":%u}",
                   dirs[u->dirs & 3], trs[u->transports & 3], u->drop, u->dup,
                   u->reorder, u->corrupt, u->delay_ms, u->jitter_ms);
        }
        printf("],\"blocked\":[");
        for (size_t i = 0; i < r->n_peers; i++) {
            printf("%s", i ? "," : "");
            cli_json_str((const uint8_t *)r->peers[i], strlen(r->peers[i]));
        }
        printf(
            "],\"dropped\":%llu,\"duplicated\":%llu,\"reordered\":%llu,"
            "\"corrupted\":%llu,\"delayed\":%llu,\"blocked_count\":%llu}\n",
            (unsigned long long)c->dropped, (unsigned long long)c->duplicated,
            (unsigned long long)c->reordered, (unsigned long long)c->corrupted,
            (unsigned long long)c->delayed, (unsigned long long)c->blocked);
        return;
    }
    printf("enabled          %s\nclock_offset_ms  %lld\n",
           r->enabled ? "yes" : "no", (long long)r->offset_ms);
    for (size_t i = 0; i < r->n_rules; i++) {
        const struct fault_rule *u = &r->rules[i];
        printf("rule             %s dir=%s transport=%s drop=%g%% dup=%g%% "
               "reorder=%g%% corrupt=%g%% delay=%ums jitter=%ums\n",
               u->peer, dirs[u->dirs & 3], trs[u->transports & 3],
               u->drop / 1e4, u->dup / 1e4, u->reorder / 1e4, u->corrupt / 1e4,
               u->delay_ms, u->jitter_ms);
    }
    for (size_t i = 0; i < r->n_peers; i++)
        printf("blocked          %s\n", r->peers[i]);
    printf("dropped          %llu\nduplicated       %llu\n"
           "reordered        %llu\ncorrupted        %llu\n"
           "delayed          %llu\nblocked_count    %llu\n",
           (unsigned long long)c->dropped, (unsigned long long)c->duplicated,
           (unsigned long long)c->reordered, (unsigned long long)c->corrupted,
           (unsigned long long)c->delayed, (unsigned long long)c->blocked);
}

int cmd_fault(const struct cli *cli, int argc, char **argv)
{
    struct msg m = {.type = MSG_FAULT};
    struct msg_fault *q = &m.u.fault;
    char peers[FAULT_MAX_BLOCKED][GOSSIP_ADDR_MAX];
    int op = -1;
    for (int i = FAULT_OP_SHOW; argc >= 2 && fault_op_name(i); i++)
        if (strcmp(argv[1], fault_op_name(i)) == 0)
            op = i;
    if (op < 0)
        return cli_fail(EXIT_USAGE,
                        "usage: kvcli fault show|set|block|clock|clear ...");
    q->op = (uint8_t)op;
    if ((op == FAULT_OP_SHOW || op == FAULT_OP_CLEAR) && argc != 2)
        return cli_fail(EXIT_USAGE, "usage: kvcli fault %s", fault_op_name(op));
    if (op == FAULT_OP_SET) {
        int code = parse_rule(argc, argv, &q->rule);
        if (code)
            return code;
    }
    if (op == FAULT_OP_BLOCK) {
        if (argc - 2 > FAULT_MAX_BLOCKED)
            return cli_fail(EXIT_USAGE, "fault block: at most %d peers",
                            FAULT_MAX_BLOCKED);
        for (int i = 2; i < argc; i++) {
            if (!argv[i][0] || strlen(argv[i]) >= GOSSIP_ADDR_MAX)
                return cli_fail(EXIT_USAGE, "fault block: bad peer '%s'",
                                argv[i]);
            snprintf(peers[i - 2], GOSSIP_ADDR_MAX, "%s", argv[i]);
        }
        q->peers = peers;
        q->n_peers = (size_t)(argc - 2);
    }
    if (op == FAULT_OP_CLOCK) {
        char *end;
        long long v = argc == 3 ? strtoll(argv[2], &end, 10) : 0;
        if (argc != 3 || !argv[2][0] || *end || v < -86400000LL ||
            v > 86400000LL)
            return cli_fail(EXIT_USAGE,
                            "usage: kvcli fault clock MS (-86400000 "
                            "to 86400000)");
        q->offset_ms = v;
    }
    struct kvc *c = NULL;
    int code = cli_connect_node(cli, &c);
    if (code)
        return code;
    code = cli_call(cli, c, &m, "fault");
    if (code == EXIT_DONE && m.type == MSG_RESULT)
        code = cli_report("fault", &m.u.result);
    else if (code == EXIT_DONE && m.type != MSG_FAULT_RESULT)
        code = cli_fail(EXIT_OTHER, "fault: unexpected answer");
    else if (code == EXIT_DONE) {
        const struct msg_fault_result *r = &m.u.fault_result;
        if (r->code)
            code = cli_fail(cli_exit_code_for(r->code), "fault %s: %s: %.*s",
                            fault_op_name(op), kv_strerror(r->code),
                            (int)r->text_len, r->text);
        else
            print_fault_state(cli, r);
    }
    kvc_close(c);
    return code;
}

/* kvcli access list | add KEY NAME ROLE | remove KEY-or-NAME: the cluster's
 * access list (admin), changed on the node asked and spread from there. */
int cmd_access(const struct cli *cli, int argc, char **argv)
{
    const char *usage =
        "usage: kvcli access list | add KEY NAME ROLE | remove KEY|NAME";
    uint8_t op = argc == 2 && strcmp(argv[1], "list") == 0     ? ACCESS_LIST
                 : argc == 5 && strcmp(argv[1], "add") == 0    ? ACCESS_ADD
                 : argc == 3 && strcmp(argv[1], "remove") == 0 ? ACCESS_REMOVE
                                                               : 0;
    if (!op)
        return cli_fail(EXIT_USAGE, "%s", usage);
    char arg[1024] = "";
    if (op == ACCESS_ADD)
        snprintf(arg, sizeof(arg), "%s %s %s", argv[2], argv[3], argv[4]);
    else if (op == ACCESS_REMOVE)
        snprintf(arg, sizeof(arg), "%s", argv[2]);
    struct kvc *c = NULL;
    int code = cli_connect_node(cli, &c);
    if (code)
        return code;
    struct msg m = {.type = MSG_ACCESS};
    m.u.access.op = op;
    m.u.access.arg = arg;
    m.u.access.arg_len = strlen(arg);
    code = cli_call(cli, c, &m, "access");
    if (code == EXIT_DONE && m.type == MSG_RESULT)
        code = cli_report("access", &m.u.result);
    else if (code == EXIT_DONE && m.type != MSG_ACCESS_RESULT)
        code = cli_fail(EXIT_OTHER, "access: unexpected answer");
    else if (code == EXIT_DONE && cli->json) {
        printf("{\"version\":%llu,\"list\":",
               (unsigned long long)m.u.access_result.version);
        cli_json_str((const uint8_t *)m.u.access_result.text,
                     m.u.access_result.text_len);
        printf("}\n");
    } else if (code == EXIT_DONE) {
        printf("# version %llu\n%.*s",
               (unsigned long long)m.u.access_result.version,
               (int)m.u.access_result.text_len, m.u.access_result.text);
    }
    kvc_close(c);
    return code;
}
