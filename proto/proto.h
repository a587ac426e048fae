/* proto: what travels between essaim processes.
 *
 * - messages: msgpack arrays [version, type, id, hlc, fields...], one encode
 *   and one decode function per type; decoders check every type and length,
 *   reject trailing bytes and unknown types, and never size an allocation
 *   from a count they have not bounded.
 * - chan: a sans-I/O secure channel. Bytes in, bytes out: the Noise handshake,
 *   then transport messages, each in a frame of a 4-byte big-endian length and
 *   at most NOISE_MAX_MESSAGE bytes; larger messages span several frames.
 * - kvc: the blocking client library used by kvcli, kvbench and tests.
 *
 * Depends on crypto/ and common/. */
#ifndef ESSAIM_PROTO_H
#define ESSAIM_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../crypto/crypto.h"

#define PROTO_VERSION 1
#define PROTO_PROLOGUE_CLIENT "essaim/1 client"
#define PROTO_PROLOGUE_PEER "essaim/1 peer"
/* A client with a key of its own (kvcli --identity): the handshake proves
 * its static key, which the node looks up in its access file; the PSK of
 * this kind is public (proto_identity_psk), so it proves nothing. */
#define PROTO_PROLOGUE_IDENTITY "essaim/1 identity"

/* Where kvcli and kvbench look for a node when neither --node nor KV_NODE
 * says. */
#define PROTO_DEFAULT_NODE "127.0.0.1:7400"

#define PROTO_MAX_KEY 1024                 /* DESIGN §4: keys are 1..1024 B */
#define PROTO_DEFAULT_MAX_VALUE (1u << 20) /* 1 MiB */
#define PROTO_MAX_VALUE_LIMIT                                                  \
    (64u << 20) /* max_value_size may go to 64 MiB                             \
                 */
/* A value's checksum, BLAKE2b-128 (storage_checksum). */
#define PROTO_CHECKSUM_BYTES 16
/* The largest node-to-node message whatever --max-value-size says: a
 * full-state exchange of GOSSIP_MAX_MEMBERS records (about 280 B each), or
 * an anti-entropy answer of AE_MAX_KEYS keys. Links take at least this, and
 * a value's size on top (security review M7). */
#define PROTO_PEER_MSG_MIN (20u << 20)
/* A whole message may hold a value plus its key and a few small fields. */
#define PROTO_MSG_OVERHEAD 4096

/* ---- members, as gossip and kvcli members carry them (DESIGN §7) ---- */

#define GOSSIP_ADDR_MAX 64 /* "host:port", NUL included */
#define GOSSIP_NAME_MAX 32 /* region and zone names, NUL included */
/* A member's --replicas setting as text ("3", "eu:3,us:3"), NUL included. */
#define GOSSIP_REPLICAS_MAX 64
/* UDP gossip stays within one unfragmented datagram on any path. */
#define GOSSIP_UDP_MAX 1400
/* A full-state exchange lists at most this many members. */
#define GOSSIP_MAX_MEMBERS 65536

enum member_status {
    MEMBER_ALIVE = 0,
    MEMBER_SUSPECT = 1,
    MEMBER_DEAD = 2,
    MEMBER_LEFT = 3,
};

/* A member's part in ownership changes (DESIGN §7b). Only the rings move
 * with it: its status says whether it is up. A change moves through the
 * phases in order, and each step that changes who is read waits until every
 * live member's view agrees (node/topo.c). */
enum ring_phase {
    RING_NORMAL = 0,  /* owns its ranges */
    RING_WAITING = 1, /* new, waiting for its turn to join: owns nothing */
    RING_JOINING = 2, /* takes writes for the ranges it will own; not read */
    RING_JOINED = 3,  /* streamed in and read; the ranges' previous owners
                         still take writes until the change is done */
    RING_LEAVING = 4, /* read; its next owners take writes as well */
    RING_LEFT = 5,    /* streamed out: not read, still takes writes until
                         the change is done */
};
#define RING_PHASE_MAX RING_LEFT

/* The name of a phase ("normal", "joining", ...), or NULL. */
const char *ring_phase_name(int phase);

/* One member as gossip carries it (DESIGN §7's member record). */
struct wire_member {
    uint8_t id[CRYPTO_NODE_ID_BYTES];
    uint8_t pubkey[CRYPTO_KEY_BYTES];
    char addr[GOSSIP_ADDR_MAX];
    char region[GOSSIP_NAME_MAX];
    char zone[GOSSIP_NAME_MAX];
    uint64_t incarnation;
    uint8_t status;  /* enum member_status */
    uint8_t version; /* the protocol version the member speaks */
    uint8_t ring;    /* enum ring_phase */
    /* its --replicas setting, canonical (node/ring.h); members compare it */
    char replicas[GOSSIP_REPLICAS_MAX];
    /* For a suspect record: the member that suspected it, so that receivers
     * count independent confirmations (Lifeguard §4.2); zeros otherwise. */
    uint8_t suspecter[CRYPTO_NODE_ID_BYTES];
};

enum msg_type {
    MSG_PUT = 1,
    MSG_GET = 2,
    MSG_DEL = 3,
    MSG_STATUS = 4,
    MSG_MEMBERS = 5,
    MSG_RING = 6,           /* kvcli ring */
    MSG_WHERE = 7,          /* kvcli where KEY: a msg_req without value */
    MSG_FAULT = 8,          /* kvcli fault: change or show fault injection */
    MSG_REPAIR = 9,         /* kvcli repair: run an anti-entropy round now */
    MSG_TOPO = 10,          /* kvcli decommission and removenode */
    MSG_ACCESS = 11,        /* kvcli access list|add|remove (admin) */
    MSG_RESULT = 16,        /* answer to put, get and del */
    MSG_STATUS_RESULT = 17, /* answer to status */
    MSG_WELCOME = 18,       /* first message a node sends after the handshake */
    MSG_MEMBERS_RESULT = 19, /* answer to members */
    MSG_RING_RESULT = 20,    /* answer to ring */
    MSG_WHERE_RESULT = 21,   /* answer to where */
    MSG_FAULT_RESULT = 22,   /* answer to fault */
    MSG_REPAIR_RESULT = 23,  /* progress of a repair, then its end */
    MSG_ACCESS_RESULT = 24,  /* answer to access: the list as it is now */
    /* Node to node, on the peer channel (DESIGN §6). */
    MSG_REPLICA_READ = 32,   /* send me your record of key */
    MSG_REPLICA_WRITE = 33,  /* store this record (or hold it as a hint) */
    MSG_REPLICA_ANSWER = 34, /* the answer to either */
    MSG_AE = 35,             /* anti-entropy request (DESIGN §11) */
    MSG_AE_ANSWER = 36,      /* its answer */
    MSG_STREAM = 37,         /* ownership changes: digest, scan, store */
    MSG_STREAM_ANSWER = 38,  /* its answer */
    MSG_ACCESS_SET = 39,     /* the cluster's access list, with its version */
};

/* kvcli access: what to do with the access list (DESIGN §8; kvnode
 * --access). arg: "" to list, "KEY NAME ROLE" to add (or change), "KEY" or
 * "NAME" to remove. */
enum access_op {
    ACCESS_LIST = 1,
    ACCESS_ADD = 2,
    ACCESS_REMOVE = 3,
};

/* The largest access list text a message carries. */
#define ACCESS_TEXT_MAX (1u << 20)

struct msg_access {
    uint8_t op; /* enum access_op */
    const char *arg;
    size_t arg_len;
};

/* The answer to MSG_ACCESS (code, and text: the list, or why not), and the
 * list nodes exchange (MSG_ACCESS_SET: code 0, text, version). The text is
 * the access file's format, one "KEY NAME ROLE" line per client. */
struct msg_access_result {
    int32_t code;
    const char *text;
    size_t text_len;
    uint64_t version; /* the HLC of the change that made it; 0: none yet */
};

/* ---- anti-entropy (DESIGN §11) ---- */

/* The token space is cut into AE_RANGES ranges of equal width (the top bits
 * of a token); each range's tree has AE_BRANCHES branches of AE_FANOUT
 * segments (the next bits). These fix the trees' shape on every node. */
#define AE_RANGE_BITS 4
#define AE_RANGES (1u << AE_RANGE_BITS)
#define AE_FANOUT 16
#define AE_BRANCHES 16
#define AE_SEGMENTS (AE_BRANCHES * AE_FANOUT) /* per range */
#define AE_HASH_BYTES 16
#define AE_RING_BYTES 16
/* Bounds on one message. */
#define AE_MAX_KEYS 8192
#define AE_MAX_RECORDS 4096

enum ae_step {
    AE_STEP_ROOTS = 1,    /* idx: ranges; hashes: my roots. answer: yours */
    AE_STEP_BRANCHES = 2, /* range; answer: its branch hashes */
    AE_STEP_SEGS = 3, /* range, idx: branches; answer: their segment hashes */
    AE_STEP_KEYS = 4, /* range, idx: segments, after; answer: keys, more */
    AE_STEP_PULL = 5, /* lkeys as keys; answer: records (those it has) */
    AE_STEP_PUSH = 6, /* records; answer: code */
};

/* A record's identity and version, as trees are compared key by key. */
struct ae_key {
    uint8_t lkey[40]; /* STORAGE_LKEY_BYTES: token ‖ BLAKE2b-256 of key */
    uint64_t version;
    uint8_t origin[CRYPTO_NODE_ID_BYTES];
    bool tombstone;
};

/* A whole record, as pulls and pushes carry it. */
struct ae_record {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value; /* empty for a tombstone */
    size_t value_len;
    uint64_t version;
    uint8_t origin[CRYPTO_NODE_ID_BYTES];
    bool tombstone;
};

struct msg_ae {
    uint8_t step;                /* enum ae_step */
    uint8_t ring[AE_RING_BYTES]; /* the sender's ring (ae.h) */
    int32_t code;                /* answers: 0 or a kv_err */
    uint32_t range;
    const uint8_t *hashes; /* AE_HASH_BYTES each */
    size_t hashes_len;
    uint32_t *idx; /* allocated by msg_decode */
    size_t n_idx;
    bool has_after;
    uint8_t after[40];   /* AE_KEYS: start after this lkey */
    struct ae_key *keys; /* allocated by msg_decode */
    size_t n_keys;
    struct ae_record *recs; /* allocated by msg_decode */
    size_t n_recs;
    bool more; /* AE_KEYS answer: more keys after the last one */
};

/* kvcli repair: range -1 for all; scrub re-hashes every stored value. */
struct msg_repair {
    int32_t range;
    bool scrub;
};

/* A repair's progress (final false), then its outcome (final true). */
struct msg_repair_result {
    bool final;
    int32_t code;
    const char *text; /* not NUL-terminated */
    size_t text_len;
    uint32_t done, total; /* exchanges (peer and range) */
    uint64_t differing;   /* keys that differed */
    uint64_t pulled, pushed;
    uint64_t bytes_sent, bytes_received;
    uint64_t scrubbed, corrupt, scrub_repaired;
};

/* kvcli decommission (sent to the node that leaves) and removenode. */
enum topo_op { TOPO_DECOMMISSION = 1, TOPO_REMOVENODE = 2 };

struct msg_topo {
    uint8_t op; /* enum topo_op */
    bool force; /* decommission below the replication factor */
    uint8_t node[CRYPTO_NODE_ID_BYTES]; /* removenode: the dead member */
};

/* Streaming between nodes during an ownership change (DESIGN §7b). */
enum stream_op {
    STREAM_DIGEST = 1, /* answer: the receiver's ring digest */
    STREAM_SCAN = 2,   /* records with tokens in [first, last] after
                          `after`, up to max_bytes; answer: recs, their
                          value checksums in sums, after = the last one's
                          LMDB key, more */
    STREAM_STORE = 3,  /* store recs; answer: code once they are durable */
    STREAM_HINTS = 4,  /* hold recs as hints for owner (a leaving node hands
                          on its hints); answer: code once durable */
};
#define STREAM_MAX_RECORDS 4096

struct msg_stream {
    uint8_t op;      /* enum stream_op */
    int32_t code;    /* answers: 0 or a kv_err */
    uint64_t digest; /* the sender's ring digest */
    uint64_t first, last;
    bool has_after;
    uint8_t after[40]; /* STORAGE_LKEY_BYTES */
    uint32_t max_bytes;
    const uint8_t *sums; /* STORAGE_CHECKSUM_BYTES per record */
    size_t sums_len;
    struct ae_record *recs; /* allocated by msg_decode */
    size_t n_recs;
    bool more;
    uint8_t owner[CRYPTO_NODE_ID_BYTES]; /* STREAM_HINTS: who they are for */
};

/* A record as replicas exchange it: in a replica read (key only), a replica
 * write (key, record, and the owner when it is a hint), or an answer (code,
 * and the record when found). */
struct msg_replica {
    const uint8_t *key; /* read and write */
    size_t key_len;
    const uint8_t *value; /* write and answer; empty for a tombstone */
    size_t value_len;
    uint64_t version;
    uint8_t origin[CRYPTO_NODE_ID_BYTES];
    bool tombstone;
    bool hinted; /* write: hold it for owner, who is down */
    uint8_t owner[CRYPTO_NODE_ID_BYTES];
    int32_t code; /* answer: 0 or a kv_err */
    bool found;   /* answer to a read: a record (maybe a tombstone) exists */
    /* A read asking for a digest only, and its answer: the record's
     * version, origin, tombstone and value checksum, without the value
     * (DESIGN §6: the full record moves only on a mismatch). */
    bool digest;
    uint8_t checksum[PROTO_CHECKSUM_BYTES];
};

/* One node of kvcli ring. */
struct ring_row {
    struct wire_member info;
    uint32_t share_ppm; /* share of the key space it owns first, per million */
    size_t n_tokens;
    uint64_t *tokens;
};

struct msg_ring {
    uint32_t replicas; /* N */
    size_t n;
    struct ring_row *rows; /* allocated by msg_decode: see msg_free */
};

/* What one replica of a key said, for kvcli where. */
enum where_state {
    WHERE_ANSWERED = 0,
    WHERE_DOWN = 1,      /* not asked: gossip says it is dead or left */
    WHERE_NO_ANSWER = 2, /* asked; no answer before the deadline */
    WHERE_ERROR = 3,     /* answered with an error (code) */
};

struct where_row {
    struct wire_member info;
    uint8_t state; /* enum where_state */
    int32_t code;
    bool found;
    bool tombstone;
    uint64_t version;
};

struct msg_where {
    uint64_t token;
    size_t n;
    struct where_row *rows; /* allocated by msg_decode: see msg_free */
};

/* Hints one node holds for another (kvcli status). */
struct hint_row {
    uint8_t owner[CRYPTO_NODE_ID_BYTES];
    uint64_t count;
};

/* ---- fault injection (node/fault.h), as kvcli fault carries it ---- */

enum fault_dir { FAULT_IN = 1, FAULT_OUT = 2 };
enum fault_transport { FAULT_UDP = 1, FAULT_TCP = 2 };

#define FAULT_MAX_RULES 64
#define FAULT_MAX_BLOCKED 64
#define FAULT_PPM 1000000u

/* What to do to traffic with one peer: rates in parts per million, and a
 * delay of delay_ms plus up to jitter_ms. */
struct fault_rule {
    char peer[GOSSIP_ADDR_MAX];           /* a listen address, or "*" */
    uint8_t dirs;                         /* enum fault_dir bits */
    uint8_t transports;                   /* enum fault_transport bits */
    uint32_t drop, dup, reorder, corrupt; /* parts per million */
    uint32_t delay_ms, jitter_ms;
};

/* What the fault layer did, since start. */
struct fault_counters {
    uint64_t dropped, duplicated, reordered, corrupted, delayed, blocked;
};

enum fault_op {
    FAULT_OP_SHOW = 0,  /* change nothing; the answer shows the state */
    FAULT_OP_SET = 1,   /* add or replace rule (all zero: remove it) */
    FAULT_OP_BLOCK = 2, /* replace the blocked peers (none: heal) */
    FAULT_OP_CLOCK = 3, /* set the HLC's wall-clock offset */
    FAULT_OP_CLEAR = 4, /* remove every rule, block and offset */
};

/* The name of a fault op ("show", "set", ...), or NULL. */
const char *fault_op_name(int op);

struct msg_fault {
    uint8_t op;                     /* enum fault_op */
    struct fault_rule rule;         /* FAULT_OP_SET */
    size_t n_peers;                 /* FAULT_OP_BLOCK */
    char (*peers)[GOSSIP_ADDR_MAX]; /* allocated by msg_decode */
    int64_t offset_ms;              /* FAULT_OP_CLOCK */
};

/* The answer to a fault request: its outcome, then the node's fault state. */
struct msg_fault_result {
    int32_t code;     /* 0 or a kv_err */
    const char *text; /* not NUL-terminated */
    size_t text_len;
    bool enabled; /* the node runs with --fault-injection */
    int64_t offset_ms;
    size_t n_rules;
    struct fault_rule *rules; /* allocated by msg_decode */
    size_t n_peers;
    char (*peers)[GOSSIP_ADDR_MAX]; /* blocked; allocated by msg_decode */
    struct fault_counters counters;
};

/* How many replicas a request waits for (DESIGN §6): over every replica
 * of the key, over those in the coordinator's region (local_*), or a
 * quorum in every region holding one (each_quorum). */
enum consistency {
    CONS_ONE = 1,
    CONS_QUORUM = 2,
    CONS_ALL = 3,
    CONS_LOCAL_ONE = 4,
    CONS_LOCAL_QUORUM = 5,
    CONS_EACH_QUORUM = 6,
};
#define CONS_MAX CONS_EACH_QUORUM
/* Every level's name, for usage and error messages. */
#define CONS_NAMES "one, quorum, all, local_one, local_quorum, each_quorum"

/* A put, get or del. value is only meaningful for MSG_PUT. */
struct msg_req {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    uint8_t consistency; /* enum consistency */
    uint32_t timeout_ms; /* 0: the node's default */
};

/* The answer to a put, get or del. code is 0 or a kv_err. */
struct msg_result {
    int32_t code;
    uint64_t version; /* HLC version of the value read or written; 0 if none */
    bool has_value;
    const uint8_t *value;
    size_t value_len;
    const char *text; /* an error's details for the user, not NUL-terminated */
    size_t text_len;
};

/* kvcli status travels as a map from counter name to value, so that a node
 * adds a counter in one place (node/service.c) and every client shows it.
 * Names are 1 to STATUS_NAME_MAX bytes of [a-z0-9_]. */
#define STATUS_MAX_COUNTERS 128
#define STATUS_NAME_MAX 32

struct status_counter {
    const char *name; /* not NUL-terminated when decoded */
    size_t name_len;
    uint64_t value;
};

struct msg_status {
    uint8_t node_id[CRYPTO_NODE_ID_BYTES];
    const char *listen; /* not NUL-terminated */
    size_t listen_len;
    size_t n_counters;
    struct status_counter *counters; /* in the node's order; allocated by
                                        msg_decode */
    size_t n_hint_rows;
    struct hint_row *hint_rows; /* per owner; allocated by msg_decode */
    /* Per range: when it last converged with every replica (wall ms, 0:
     * never since start). */
    size_t n_ranges;
    uint64_t range_converged[AE_RANGES];
};

/* The value of the counter called name in s, or 0 when s has none. */
uint64_t msg_status_counter(const struct msg_status *s, const char *name);

/* One row of kvcli members. */
struct member_row {
    struct wire_member info;
    uint64_t rtt_ms; /* last direct probe round trip; 0 if none */
};

struct msg_members {
    size_t n;
    struct member_row *rows; /* allocated by msg_decode: see msg_free */
};

struct msg_welcome {
    uint8_t node_id[CRYPTO_NODE_ID_BYTES];
    uint32_t max_key;
    uint32_t max_value;
};

struct msg {
    uint8_t type; /* enum msg_type */
    uint64_t id;  /* chosen by the requester, echoed in the answer */
    uint64_t hlc; /* the sender's hybrid logical clock (DESIGN §4) */
    union {
        struct msg_req req;
        struct msg_result result;
        struct msg_status status;
        struct msg_welcome welcome;
        struct msg_members members;
        struct msg_replica replica;
        struct msg_ring ring;
        struct msg_where where;
        struct msg_fault fault;
        struct msg_fault_result fault_result;
        struct msg_ae ae;
        struct msg_repair repair;
        struct msg_repair_result repair_result;
        struct msg_topo topo;
        struct msg_stream stream;
        struct msg_access access;
        struct msg_access_result access_result; /* and MSG_ACCESS_SET */
    } u;
};

/* Limits a decoder enforces. */
struct msg_limits {
    size_t max_key;
    size_t max_value;
};

/* Encodes m into a new buffer (*out, *out_len); the caller frees *out.
 * @retval 0 Success. @retval KV_ERR_NOMEM. @retval KV_ERR_INVAL unknown type.
 */
int msg_encode(const struct msg *m, uint8_t **out, size_t *out_len);

/* Decodes one message that fills buf exactly. Pointers in *m point into buf,
 * so buf must outlive *m.
 * @retval 0 Success.
 * @retval KV_ERR_TRUNCATED buf ends inside the message.
 * @retval KV_ERR_TRAILING bytes or array items after the message.
 * @retval KV_ERR_TYPE a field or the message has the wrong msgpack type.
 * @retval KV_ERR_MISSING the array is too short for its type.
 * @retval KV_ERR_VERSION the protocol version is not PROTO_VERSION.
 * @retval KV_ERR_UNKNOWN_TYPE the message type is unknown.
 * @retval KV_ERR_TOO_LARGE a key or value over the limits.
 * @retval KV_ERR_INVAL an empty key, or a field out of range. */
int msg_decode(const uint8_t *buf, size_t len, const struct msg_limits *lim,
               struct msg *m);

/* Frees what msg_decode allocated (the rows of members, ring, where and
 * status results); any decoded message may be passed. */
void msg_free(struct msg *m);

/* The text of a consistency level ("one", "local_quorum", ...), or NULL. */
const char *consistency_name(int c);
/* Parses a consistency level; returns 0 for an unknown name. */
int consistency_parse(const char *s);

/* The message type of an encoded message, without decoding the rest: lets a
 * node tell replica messages from gossip on the peer channel.
 * @retval the type, or -1 when buf does not start like a message. */
int msg_peek_type(const uint8_t *buf, size_t len);

/* The id of an encoded message (its third field), without decoding the
 * rest. @retval false buf does not start like a message with an id. */
bool msg_peek_id(const uint8_t *buf, size_t len, uint64_t *id);

/* Node-to-node streams carry one type space: gossip's push-pull types
 * (enum gossip_type) sit below MSG_REPLICA_READ, replica and anti-entropy
 * messages (enum msg_type) from it up. Which of the two a message is, by
 * its type alone; PROTO_PEER_NONE for anything else (the link is closed). */
enum proto_peer_kind { PROTO_PEER_NONE, PROTO_PEER_GOSSIP, PROTO_PEER_NODE };
enum proto_peer_kind proto_peer_kind(const uint8_t *buf, size_t len);

/* ---- gossip: membership messages (DESIGN §7) ---- */

enum gossip_type {
    GOSSIP_PING = 1,       /* are you there? (seq) */
    GOSSIP_ACK = 2,        /* yes (seq of the ping or ping-req) */
    GOSSIP_PING_REQ = 3,   /* please ping target for me (SWIM §4.2) */
    GOSSIP_NACK = 4,       /* I pinged target for you and heard nothing
                              (Lifeguard §4.3) */
    GOSSIP_SYNC = 5,       /* push-pull: here is my full state, send yours */
    GOSSIP_SYNC_REPLY = 6, /* push-pull: here is mine */
};

/* gossip_msg.flags */
#define GOSSIP_FLAG_JOINED 0x01 /* the sender's view is a whole cluster's */

struct gossip_msg {
    uint8_t type;                         /* enum gossip_type */
    uint32_t seq;                         /* probe sequence number */
    uint8_t from[CRYPTO_NODE_ID_BYTES];   /* the sender */
    uint8_t target[CRYPTO_NODE_ID_BYTES]; /* the probed member, if any */
    char target_addr[GOSSIP_ADDR_MAX];    /* ping-req: where to find it */
    uint8_t flags;                        /* GOSSIP_FLAG_* */
    size_t n_members;
    struct wire_member *members; /* piggybacked updates, or a full state */
};

/* Encodes g into a new buffer of at most max_len bytes, dropping members from
 * the end until it fits; *n_encoded says how many went in. The caller frees
 * *out.
 * @retval 0 Success. @retval KV_ERR_TOO_LARGE not even without members.
 * @retval KV_ERR_NOMEM. */
int gossip_encode(const struct gossip_msg *g, size_t max_len, uint8_t **out,
                  size_t *out_len, size_t *n_encoded);

/* Decodes one gossip message that fills buf exactly; g->members is allocated
 * (free it with gossip_msg_free). Errors as msg_decode, and KV_ERR_INVAL for
 * a string with a NUL inside or a status out of range. */
int gossip_decode(const uint8_t *buf, size_t len, struct gossip_msg *g);

/* Frees what gossip_decode allocated. */
void gossip_msg_free(struct gossip_msg *g);

/* ---- chan: the secure channel, sans I/O ---- */

struct chan;

/* Creates a channel. An initiator's first handshake message is queued in its
 * output at once. prologue is PROTO_PROLOGUE_CLIENT or _PEER; psk the cluster
 * or client secret; static_priv this side's X25519 key; max_msg the largest
 * application message accepted (bounded before any allocation).
 * @retval 0 Success. @retval KV_ERR_NOMEM. */
int chan_new(struct chan **out, enum noise_role role, const char *prologue,
             const uint8_t psk[CRYPTO_KEY_BYTES],
             const uint8_t static_priv[CRYPTO_KEY_BYTES], size_t max_msg);

/* One kind of connection a responder accepts: its prologue and its PSK,
 * and optionally a second PSK also accepted (a cluster secret in rotation;
 * noise_hs_accept_psk). */
struct chan_kind {
    const char *prologue;
    const uint8_t *psk;     /* CRYPTO_KEY_BYTES */
    const uint8_t *alt_psk; /* CRYPTO_KEY_BYTES, or NULL */
    size_t max_msg;         /* this kind's largest message; 0: the chan's */
};

#define CHAN_MAX_KINDS 2

/* Creates a responder that accepts any of n kinds (at most CHAN_MAX_KINDS):
 * the first handshake message is read under each, and the kind under which
 * it authenticates is kept (the prologue is bound into that message). The
 * handshake is built only then: kinds' secrets and static_priv are
 * referred to, not copied, and must outlive the channel.
 * @retval 0 Success. @retval KV_ERR_NOMEM. @retval KV_ERR_INVAL bad n. */
int chan_new_responder(struct chan **out, const struct chan_kind *kinds,
                       size_t n, const uint8_t static_priv[CRYPTO_KEY_BYTES],
                       size_t max_msg);

/* The index of the kind the initiator used, or -1 before its first
 * message has been read. */
int chan_kind(const struct chan *c);

/* Wipes and frees. NULL is fine. */
void chan_free(struct chan *c);

/* Feeds received bytes. It stops early once a whole application message is
 * ready (see chan_take), so call it again with the rest; *used says how many
 * bytes it consumed. Handshake replies are queued in the output.
 * @retval 0 Success. Any error means the peer must be disconnected:
 * @retval KV_ERR_TOO_LARGE a frame length or message over its limit.
 * @retval KV_ERR_AUTH a handshake or transport message failed to decrypt.
 * @retval KV_ERR_PROTO a malformed frame. */
int chan_input(struct chan *c, const uint8_t *data, size_t len, size_t *used);

/* Takes the application message that chan_input completed, if any. The
 * pointer stays valid until the next chan_input. */
bool chan_take(struct chan *c, const uint8_t **msg, size_t *len);

/* Encrypts and queues one application message (in as many frames as needed).
 * @retval 0 Success. @retval KV_ERR_PROTO handshake not done.
 * @retval KV_ERR_TOO_LARGE over max_msg. @retval KV_ERR_NONCE. */
int chan_send(struct chan *c, const uint8_t *msg, size_t len);

/* The bytes waiting to be written to the socket. */
void chan_output(const struct chan *c, const uint8_t **data, size_t *len);

/* Drops n bytes from the front of the output once they are written. */
void chan_output_done(struct chan *c, size_t n);

/* For fault injection only (node/fault.c): cuts the output back to its
 * first keep bytes, and appends raw bytes that no frame or cipher wraps.
 * chan_output_raw: @retval 0 Success. @retval KV_ERR_NOMEM. */
void chan_output_trim(struct chan *c, size_t keep);
int chan_output_raw(struct chan *c, const uint8_t *p, size_t n);

/* True once the handshake has finished on this side. */
bool chan_established(const struct chan *c);

/* The peer's static public key; valid once established. */
const uint8_t *chan_remote_static(const struct chan *c);

/* Whether part of a frame or of a message has arrived and waits for the
 * rest. */
bool chan_partial(const struct chan *c);

/* The bytes the channel holds on the heap (buffers and handshake). */
size_t chan_memory(const struct chan *c);

/* Gives back the buffers an idle channel does not need: those of a
 * message already taken, and empty ones. The next bytes allocate again. */
void chan_trim(struct chan *c);

/* ---- net: socket helpers for the channel's owners ---- */

/* Splits "HOST:PORT" or "[V6]:PORT" into the caller's buffers; an empty host
 * ("":PORT) is allowed and means any address.
 * @retval 0 Success. @retval KV_ERR_INVAL malformed or too long. */
int net_split_hostport(const char *s, char *host, size_t hcap, char *port,
                       size_t pcap);

/* The outcome of a non-blocking connect on fd, once it is writable.
 * @retval 0 connected, or the errno it failed with. */
int net_connect_error(int fd);

/* Writes the channel's queued output to the non-blocking socket fd until it
 * is all written or the socket is full (chan_output then shows the rest).
 * @retval 0 Success. @retval KV_ERR_CLOSED the socket failed. */
int net_flush(struct chan *c, int fd);

/* ---- kvc: the blocking client library ---- */

struct kvc;

/* The PSK of PROTO_PROLOGUE_IDENTITY handshakes: BLAKE2b-256 of a fixed
 * label, the same for everyone. */
void proto_identity_psk(uint8_t psk[CRYPTO_KEY_BYTES]);

/* Connects to "HOST:PORT", runs the handshake with the client secret and a
 * fresh static key, and waits for the node's welcome.
 * @retval 0 Success.
 * @retval KV_ERR_AUTH the node refused the secret.
 * @retval KV_ERR_UNAVAILABLE nothing listens there / connection failed.
 * @retval KV_ERR_TIMEOUT no answer within timeout_ms.
 * @retval KV_ERR_INVAL bad address. */
int kvc_connect(struct kvc **out, const char *hostport,
                const uint8_t secret[CRYPTO_KEY_BYTES], int timeout_ms);

/* kvc_connect with a key of its own: the handshake proves identity (an
 * X25519 private key) and the node checks it against its access file.
 * @retval KV_ERR_AUTH the node does not take this key (it is not listed,
 * or the node has no access file). Otherwise as kvc_connect. */
int kvc_connect_identity(struct kvc **out, const char *hostport,
                         const uint8_t identity[CRYPTO_KEY_BYTES],
                         int timeout_ms);

/* The static public key the node proved in the handshake. */
const uint8_t *kvc_node_key(const struct kvc *c);

/* Closes and frees. NULL is fine. */
void kvc_close(struct kvc *c);

/* What the node said in its welcome. */
const struct msg_welcome *kvc_welcome(const struct kvc *c);

/* Sends a request without waiting; m->id is assigned and m->hlc set to the
 * session's clock. Several may be in flight; answers carry the same id.
 * @retval 0 Success, or a kv_err (the connection is then unusable). */
int kvc_send(struct kvc *c, struct msg *m);

/* Waits for the next answer. *m and its pointers stay valid until the next
 * kvc_recv or kvc_close, which free it: callers never call msg_free. The
 * session clock merges the answer's hlc.
 * @retval 0 Success. @retval KV_ERR_TIMEOUT. @retval KV_ERR_CLOSED. */
int kvc_recv(struct kvc *c, struct msg *m, int timeout_ms);

/* Sends a request and waits for its answer (one round trip). */
int kvc_call(struct kvc *c, struct msg *m, int timeout_ms);

/* The highest HLC this session has seen; sent with every request so that a
 * later write of this client always wins over an earlier one. */
uint64_t kvc_session_hlc(const struct kvc *c);

#endif
