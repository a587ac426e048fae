/* kvcli's private header: what its command files share. */
#ifndef ESSAIM_TOOLS_KVCLI_H
#define ESSAIM_TOOLS_KVCLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../proto/proto.h"

enum {
    EXIT_DONE = 0,
    EXIT_NOT_FOUND = 1,
    EXIT_USAGE = 2,
    EXIT_UNAVAILABLE = 3,
    EXIT_AUTH = 4,
    EXIT_OTHER = 5
};

#define DEFAULT_TIMEOUT_MS 5000

struct cli {
    const char *node;
    const char *key_path;
    const char *identity_path; /* --identity: a key of its own */
    const char *node_key;      /* --node-key: the node must prove this key */
    int consistency;
    int timeout_ms;
    bool json;
};

/* Prints "kvcli: ..." on stderr and returns code. */
int cli_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The exit code for a kv_err. */
int cli_exit_code_for(int err);
/* A JSON string of n bytes (escaped). */
void cli_json_str(const uint8_t *s, size_t n);
/* Reports a MSG_RESULT that is an error; returns the exit code. */
int cli_report(const char *what, const struct msg_result *r);
/* Connects to --node with --identity, else --key. @retval an exit code. */
int cli_connect_node(const struct cli *cli, struct kvc **c);
/* One request and its answer (into *m). @retval an exit code. */
int cli_call(const struct cli *cli, struct kvc *c, struct msg *m,
             const char *what);
/* Connects, sends a request of type and expects an answer of type want. */
int cli_simple_request(const struct cli *cli, uint8_t type, uint8_t want,
                       const char *what, struct kvc **c, struct msg *m);

int cmd_status(const struct cli *cli, int argc, char **argv);
int cmd_members(const struct cli *cli, int argc, char **argv);
int cmd_access(const struct cli *cli, int argc, char **argv);
int cmd_ring(const struct cli *cli, int argc, char **argv);
int cmd_where(const struct cli *cli, int argc, char **argv);
int cmd_repair(const struct cli *cli, int argc, char **argv);
int cmd_fault(const struct cli *cli, int argc, char **argv);
int cmd_decommission(const struct cli *cli, int argc, char **argv);
int cmd_removenode(const struct cli *cli, int argc, char **argv);

#endif
