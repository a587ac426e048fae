/* Wire messages: msgpack arrays [version, type, id, hlc, fields...].
 *
 * Encoding, with msgpack-c's packer, and the small helpers every side
 * uses; decoding is in msg_decode.c. */
#include "proto.h"
#include "wire.h"

#include "../common/common.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoding ---- */

/* Number of array items of each message type, header included. */
size_t msg_type_items(uint8_t type)
{
    switch (type) {
    case MSG_PUT:
        return 8;
    case MSG_GET:
    case MSG_DEL:
        return 7;
    case MSG_STATUS:
    case MSG_MEMBERS:
    case MSG_RING:
        return 4;
    case MSG_MEMBERS_RESULT:
    case MSG_WHERE:
        return 5;
    case MSG_REPLICA_READ:
        return 6;
    case MSG_RING_RESULT:
    case MSG_WHERE_RESULT:
        return 6;
    case MSG_REPLICA_WRITE:
        return 10;
    case MSG_REPLICA_ANSWER:
        return 13;
    case MSG_RESULT:
        return 8;
    case MSG_STATUS_RESULT:
        return 9;
    case MSG_AE:
    case MSG_AE_ANSWER:
        return 14;
    case MSG_REPAIR:
        return 6;
    case MSG_TOPO:
        return 7;
    case MSG_STREAM:
    case MSG_STREAM_ANSWER:
        return 15;
    case MSG_REPAIR_RESULT:
        return 17;
    case MSG_FAULT:
        return 8;
    case MSG_FAULT_RESULT:
        return 11;
    case MSG_WELCOME:
        return 7;
    case MSG_ACCESS:
        return 6;
    case MSG_ACCESS_RESULT:
        return 7;
    case MSG_ACCESS_SET:
        return 6;
    default:
        return 0;
    }
}

static int pack_replica(msgpack_packer *pk, uint8_t type,
                        const struct msg_replica *r)
{
    int e = 0;
    /* An answer names the key it answers for, so that a late answer can
     * never be taken for another request's (correctness review F8). */
    e |= wire_pack_bin(pk, r->key, r->key_len);
    if (type == MSG_REPLICA_READ)
        return e | (r->digest ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
    if (type == MSG_REPLICA_ANSWER) {
        e |= msgpack_pack_int32(pk, r->code);
        e |= r->found ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    }
    e |= msgpack_pack_uint64(pk, r->version);
    e |= wire_pack_bin(pk, r->origin, sizeof(r->origin));
    e |= r->tombstone ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    e |= wire_pack_bin(pk, r->value, r->value_len);
    if (type == MSG_REPLICA_WRITE) {
        e |= r->hinted ? wire_pack_bin(pk, r->owner, sizeof(r->owner))
                       : msgpack_pack_nil(pk);
    }
    if (type == MSG_REPLICA_ANSWER) {
        e |= r->digest ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        e |= wire_pack_bin(pk, r->checksum, sizeof(r->checksum));
    }
    return e;
}

static int pack_fault_rule(msgpack_packer *pk, const struct fault_rule *r)
{
    int e = msgpack_pack_array(pk, 9);
    e |= wire_pack_str(pk, r->peer, strnlen(r->peer, sizeof(r->peer) - 1));
    e |= msgpack_pack_uint8(pk, r->dirs);
    e |= msgpack_pack_uint8(pk, r->transports);
    e |= msgpack_pack_uint32(pk, r->drop);
    e |= msgpack_pack_uint32(pk, r->dup);
    e |= msgpack_pack_uint32(pk, r->reorder);
    e |= msgpack_pack_uint32(pk, r->corrupt);
    e |= msgpack_pack_uint32(pk, r->delay_ms);
    e |= msgpack_pack_uint32(pk, r->jitter_ms);
    return e;
}

static int pack_peers(msgpack_packer *pk, const char (*peers)[GOSSIP_ADDR_MAX],
                      size_t n)
{
    int e = msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        e |=
            wire_pack_str(pk, peers[i], strnlen(peers[i], GOSSIP_ADDR_MAX - 1));
    return e;
}

static int pack_fault(msgpack_packer *pk, uint8_t type, const struct msg *m)
{
    if (type == MSG_FAULT) {
        const struct msg_fault *f = &m->u.fault;
        int e = msgpack_pack_uint8(pk, f->op);
        e |= f->op == FAULT_OP_SET ? pack_fault_rule(pk, &f->rule)
                                   : msgpack_pack_nil(pk);
        e |= pack_peers(pk, (const char(*)[GOSSIP_ADDR_MAX])f->peers,
                        f->n_peers);
        e |= msgpack_pack_int64(pk, f->offset_ms);
        return e;
    }
    const struct msg_fault_result *r = &m->u.fault_result;
    int e = msgpack_pack_int32(pk, r->code);
    e |= wire_pack_str(pk, r->text, r->text_len);
    e |= r->enabled ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    e |= msgpack_pack_int64(pk, r->offset_ms);
    e |= msgpack_pack_array(pk, r->n_rules);
    for (size_t i = 0; i < r->n_rules; i++)
        e |= pack_fault_rule(pk, &r->rules[i]);
    e |= pack_peers(pk, (const char(*)[GOSSIP_ADDR_MAX])r->peers, r->n_peers);
    const struct fault_counters *c = &r->counters;
    e |= msgpack_pack_array(pk, 6);
    e |= msgpack_pack_uint64(pk, c->dropped);
    e |= msgpack_pack_uint64(pk, c->duplicated);
    e |= msgpack_pack_uint64(pk, c->reordered);
    e |= msgpack_pack_uint64(pk, c->corrupted);
    e |= msgpack_pack_uint64(pk, c->delayed);
    e |= msgpack_pack_uint64(pk, c->blocked);
    return e;
}

static int pack_bool(msgpack_packer *pk, bool b)
{
    return b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

/* Whole records, as anti-entropy and streams carry them. */
static int pack_records(msgpack_packer *pk, const struct ae_record *recs,
                        size_t n)
{
    int e = msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n && !e; i++) {
        const struct ae_record *r = &recs[i];
        e |= msgpack_pack_array(pk, 5);
        e |= wire_pack_bin(pk, r->key, r->key_len);
        e |= wire_pack_bin(pk, r->value, r->value_len);
        e |= msgpack_pack_uint64(pk, r->version);
        e |= wire_pack_bin(pk, r->origin, sizeof(r->origin));
        e |= pack_bool(pk, r->tombstone);
    }
    return e;
}

static int pack_ae(msgpack_packer *pk, const struct msg_ae *a)
{
    int e = msgpack_pack_uint8(pk, a->step);
    e |= wire_pack_bin(pk, a->ring, sizeof(a->ring));
    e |= msgpack_pack_int32(pk, a->code);
    e |= msgpack_pack_uint32(pk, a->range);
    e |= wire_pack_bin(pk, a->hashes, a->hashes_len);
    e |= msgpack_pack_array(pk, a->n_idx);
    for (size_t i = 0; i < a->n_idx; i++)
        e |= msgpack_pack_uint32(pk, a->idx[i]);
    e |= a->has_after ? wire_pack_bin(pk, a->after, sizeof(a->after))
                      : msgpack_pack_nil(pk);
    e |= msgpack_pack_array(pk, a->n_keys);
    for (size_t i = 0; i < a->n_keys && !e; i++) {
        const struct ae_key *k = &a->keys[i];
        e |= msgpack_pack_array(pk, 4);
        e |= wire_pack_bin(pk, k->lkey, sizeof(k->lkey));
        e |= msgpack_pack_uint64(pk, k->version);
        e |= wire_pack_bin(pk, k->origin, sizeof(k->origin));
        e |= pack_bool(pk, k->tombstone);
    }
    e |= pack_records(pk, a->recs, a->n_recs);
    e |= pack_bool(pk, a->more);
    return e;
}

static int pack_stream(msgpack_packer *pk, const struct msg_stream *s)
{
    int e = msgpack_pack_uint8(pk, s->op);
    e |= msgpack_pack_int32(pk, s->code);
    e |= msgpack_pack_uint64(pk, s->digest);
    e |= msgpack_pack_uint64(pk, s->first);
    e |= msgpack_pack_uint64(pk, s->last);
    e |= s->has_after ? wire_pack_bin(pk, s->after, sizeof(s->after))
                      : msgpack_pack_nil(pk);
    e |= msgpack_pack_uint32(pk, s->max_bytes);
    e |= wire_pack_bin(pk, s->sums, s->sums_len);
    e |= pack_records(pk, s->recs, s->n_recs);
    e |= pack_bool(pk, s->more);
    e |= wire_pack_bin(pk, s->owner, sizeof(s->owner));
    return e;
}

static int pack_repair_result(msgpack_packer *pk,
                              const struct msg_repair_result *r)
{
    int e = pack_bool(pk, r->final);
    e |= msgpack_pack_int32(pk, r->code);
    e |= wire_pack_str(pk, r->text, r->text_len);
    e |= msgpack_pack_uint32(pk, r->done);
    e |= msgpack_pack_uint32(pk, r->total);
    const uint64_t u[] = {r->differing,  r->pulled,         r->pushed,
                          r->bytes_sent, r->bytes_received, r->scrubbed,
                          r->corrupt,    r->scrub_repaired};
    for (size_t i = 0; i < sizeof(u) / sizeof(*u); i++)
        e |= msgpack_pack_uint64(pk, u[i]);
    return e;
}

static int pack_ring(msgpack_packer *pk, const struct msg_ring *r)
{
    int e = msgpack_pack_uint32(pk, r->replicas);
    e |= msgpack_pack_array(pk, r->n);
    for (size_t i = 0; i < r->n && !e; i++) {
        const struct ring_row *row = &r->rows[i];
        e |= msgpack_pack_array(pk, 3);
        e |= wire_pack_member(pk, &row->info);
        e |= msgpack_pack_uint32(pk, row->share_ppm);
        e |= msgpack_pack_array(pk, row->n_tokens);
        for (size_t t = 0; t < row->n_tokens; t++)
            e |= msgpack_pack_uint64(pk, row->tokens[t]);
    }
    return e;
}

static int pack_where(msgpack_packer *pk, const struct msg_where *w)
{
    int e = msgpack_pack_uint64(pk, w->token);
    e |= msgpack_pack_array(pk, w->n);
    for (size_t i = 0; i < w->n && !e; i++) {
        const struct where_row *row = &w->rows[i];
        e |= msgpack_pack_array(pk, 6);
        e |= wire_pack_member(pk, &row->info);
        e |= msgpack_pack_uint8(pk, row->state);
        e |= msgpack_pack_int32(pk, row->code);
        e |= row->found ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        e |= row->tombstone ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        e |= msgpack_pack_uint64(pk, row->version);
    }
    return e;
}

int msg_encode(const struct msg *m, uint8_t **out, size_t *out_len)
{
    size_t items = msg_type_items(m->type);
    if (!items)
        return KV_ERR_INVAL;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int e = msgpack_pack_array(&pk, items);
    e |= msgpack_pack_uint8(&pk, PROTO_VERSION);
    e |= msgpack_pack_uint8(&pk, m->type);
    e |= msgpack_pack_uint64(&pk, m->id);
    e |= msgpack_pack_uint64(&pk, m->hlc);
    const struct msg_req *q = &m->u.req;
    const struct msg_result *r = &m->u.result;
    const struct msg_status *s = &m->u.status;
    const struct msg_welcome *w = &m->u.welcome;
    switch (m->type) {
    case MSG_PUT:
    case MSG_GET:
    case MSG_DEL:
        e |= wire_pack_bin(&pk, q->key, q->key_len);
        if (m->type == MSG_PUT)
            e |= wire_pack_bin(&pk, q->value, q->value_len);
        e |= msgpack_pack_uint8(&pk, q->consistency);
        e |= msgpack_pack_uint32(&pk, q->timeout_ms);
        break;
    case MSG_WHERE:
        e |= wire_pack_bin(&pk, q->key, q->key_len);
        break;
    case MSG_STATUS:
    case MSG_RING:
        break;
    case MSG_REPLICA_READ:
    case MSG_REPLICA_WRITE:
    case MSG_REPLICA_ANSWER:
        e |= pack_replica(&pk, m->type, &m->u.replica);
        break;
    case MSG_RING_RESULT:
        e |= pack_ring(&pk, &m->u.ring);
        break;
    case MSG_WHERE_RESULT:
        e |= pack_where(&pk, &m->u.where);
        break;
    case MSG_FAULT:
    case MSG_FAULT_RESULT:
        e |= pack_fault(&pk, m->type, m);
        break;
    case MSG_AE:
    case MSG_AE_ANSWER:
        e |= pack_ae(&pk, &m->u.ae);
        break;
    case MSG_REPAIR:
        e |= msgpack_pack_int32(&pk, m->u.repair.range);
        e |= pack_bool(&pk, m->u.repair.scrub);
        break;
    case MSG_REPAIR_RESULT:
        e |= pack_repair_result(&pk, &m->u.repair_result);
        break;
    case MSG_TOPO:
        e |= msgpack_pack_uint8(&pk, m->u.topo.op);
        e |= pack_bool(&pk, m->u.topo.force);
        e |= wire_pack_bin(&pk, m->u.topo.node, sizeof(m->u.topo.node));
        break;
    case MSG_STREAM:
    case MSG_STREAM_ANSWER:
        e |= pack_stream(&pk, &m->u.stream);
        break;
    case MSG_RESULT:
        e |= msgpack_pack_int32(&pk, r->code);
        e |= msgpack_pack_uint64(&pk, r->version);
        e |= r->has_value ? wire_pack_bin(&pk, r->value, r->value_len)
                          : msgpack_pack_nil(&pk);
        e |= wire_pack_str(&pk, r->text, r->text_len);
        break;
    case MSG_STATUS_RESULT:
        e |= wire_pack_bin(&pk, s->node_id, sizeof(s->node_id));
        e |= wire_pack_str(&pk, s->listen, s->listen_len);
        e |= msgpack_pack_map(&pk, s->n_counters);
        for (size_t i = 0; i < s->n_counters; i++) {
            e |= wire_pack_str(&pk, s->counters[i].name,
                               s->counters[i].name_len);
            e |= msgpack_pack_uint64(&pk, s->counters[i].value);
        }
        e |= msgpack_pack_array(&pk, s->n_hint_rows);
        for (size_t i = 0; i < s->n_hint_rows; i++) {
            e |= msgpack_pack_array(&pk, 2);
            e |= wire_pack_bin(&pk, s->hint_rows[i].owner,
                               sizeof(s->hint_rows[i].owner));
            e |= msgpack_pack_uint64(&pk, s->hint_rows[i].count);
        }
        e |= msgpack_pack_array(&pk, s->n_ranges);
        for (size_t i = 0; i < s->n_ranges; i++)
            e |= msgpack_pack_uint64(&pk, s->range_converged[i]);
        break;
    case MSG_MEMBERS:
        break;
    case MSG_MEMBERS_RESULT:
        e |= msgpack_pack_array(&pk, m->u.members.n);
        for (size_t i = 0; i < m->u.members.n && !e; i++) {
            e |= msgpack_pack_array(&pk, 2);
            e |= wire_pack_member(&pk, &m->u.members.rows[i].info);
            e |= msgpack_pack_uint64(&pk, m->u.members.rows[i].rtt_ms);
        }
        break;
    case MSG_WELCOME:
        e |= wire_pack_bin(&pk, w->node_id, sizeof(w->node_id));
        e |= msgpack_pack_uint32(&pk, w->max_key);
        e |= msgpack_pack_uint32(&pk, w->max_value);
        break;
    case MSG_ACCESS:
        e |= msgpack_pack_uint8(&pk, m->u.access.op);
        e |= wire_pack_str(&pk, m->u.access.arg, m->u.access.arg_len);
        break;
    case MSG_ACCESS_RESULT:
        e |= msgpack_pack_int32(&pk, m->u.access_result.code);
        e |= wire_pack_str(&pk, m->u.access_result.text,
                           m->u.access_result.text_len);
        e |= msgpack_pack_uint64(&pk, m->u.access_result.version);
        break;
    case MSG_ACCESS_SET:
        e |= msgpack_pack_uint64(&pk, m->u.access_result.version);
        e |= wire_pack_str(&pk, m->u.access_result.text,
                           m->u.access_result.text_len);
        break;
    }
    if (e) {
        msgpack_sbuffer_destroy(&sb);
        return KV_ERR_NOMEM;
    }
    *out_len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    return 0;
}

int msg_peek_type(const uint8_t *buf, size_t len)
{
    /* fixarray or array16/32 header, then fixint version and fixint type */
    size_t i;
    if (len >= 1 && (buf[0] & 0xf0) == 0x90)
        i = 1;
    else if (len >= 3 && buf[0] == 0xdc)
        i = 3;
    else if (len >= 5 && buf[0] == 0xdd)
        i = 5;
    else
        return -1;
    if (len < i + 2 || buf[i] != PROTO_VERSION || buf[i + 1] > 0x7f)
        return -1;
    return buf[i + 1];
}

bool msg_peek_id(const uint8_t *buf, size_t len, uint64_t *id)
{
    size_t i = buf && len >= 1 && (buf[0] & 0xf0) == 0x90 ? 1
               : len >= 3 && buf[0] == 0xdc               ? 3
               : len >= 5 && buf[0] == 0xdd               ? 5
                                                          : 0;
    if (i == 0 || msg_peek_type(buf, len) < 0 || len < i + 3)
        return false;
    const uint8_t *p = buf + i + 2;
    size_t have = len - i - 2, n;
    if (p[0] < 0x80) {
        *id = p[0];
        return true;
    }
    n = p[0] == 0xcc   ? 1
        : p[0] == 0xcd ? 2
        : p[0] == 0xce ? 4
        : p[0] == 0xcf ? 8
                       : 0;
    if (n == 0 || have < 1 + n)
        return false;
    *id = 0;
    for (size_t k = 1; k <= n; k++)
        *id = *id << 8 | p[k];
    return true;
}

_Static_assert((int)GOSSIP_SYNC_REPLY < (int)MSG_REPLICA_READ,
               "gossip and node messages share one type space on links");

enum proto_peer_kind proto_peer_kind(const uint8_t *buf, size_t len)
{
    int type = msg_peek_type(buf, len);
    if (type == GOSSIP_SYNC || type == GOSSIP_SYNC_REPLY)
        return PROTO_PEER_GOSSIP;
    if (type >= MSG_REPLICA_READ)
        return PROTO_PEER_NODE;
    return PROTO_PEER_NONE;
}

const char *fault_op_name(int op)
{
    static const char *const names[] = {"show", "set", "block", "clock",
                                        "clear"};
    return op >= FAULT_OP_SHOW && op <= FAULT_OP_CLEAR ? names[op] : NULL;
}

const char *consistency_name(int c)
{
    switch (c) {
    case CONS_ONE:
        return "one";
    case CONS_QUORUM:
        return "quorum";
    case CONS_ALL:
        return "all";
    case CONS_LOCAL_ONE:
        return "local_one";
    case CONS_LOCAL_QUORUM:
        return "local_quorum";
    case CONS_EACH_QUORUM:
        return "each_quorum";
    default:
        return NULL;
    }
}

int consistency_parse(const char *s)
{
    for (int c = CONS_ONE; c <= CONS_MAX; c++)
        if (strcmp(s, consistency_name(c)) == 0)
            return c;
    return 0;
}
