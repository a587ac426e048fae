/* storage: one LMDB environment per data directory (DESIGN §4, §9).
 *
 * Records are keyed by ring token so that a token range is one sequential
 * cursor scan. Reads run on the caller's thread (the node's loop) in LMDB
 * read transactions. Writes go to one writer thread that commits everything
 * queued in one transaction — one fsync per batch (group commit) — and only
 * then reports them done; the owner learns of completions through a notify
 * callback it supplies (the node wires it to ev_async, so this module never
 * sees libev).
 *
 * LMDB key: token (8 bytes, big-endian) ‖ BLAKE2b-256 of the user key. Debian's
 * LMDB caps keys at 511 bytes and user keys may be 1024, so the user key
 * itself lives in the record, and every read checks it. */
#ifndef ESSAIM_STORAGE_H
#define ESSAIM_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORAGE_ORIGIN_BYTES 16
#define STORAGE_CHECKSUM_BYTES 16
#define STORAGE_MAX_KEY 1024
/* The LMDB key of a record: token (8 bytes, big-endian) ‖ BLAKE2b-256 of
 * the user key. Anti-entropy names records by it. */
#define STORAGE_LKEY_BYTES 40

struct storage;

/* A stored record. From storage_get the value is malloc'd (free it with
 * storage_record_free); from storage_record_parse it points into the input. */
struct storage_record {
    uint64_t version; /* HLC; the higher (version, origin) wins */
    uint8_t origin[STORAGE_ORIGIN_BYTES]; /* id of the node that wrote it */
    bool tombstone;
    uint8_t checksum[STORAGE_CHECKSUM_BYTES]; /* BLAKE2b-128 of the value */
    const uint8_t *key;
    size_t key_len;
    uint8_t *value;
    size_t value_len;
};

/* What a queued write does. Hints (DESIGN §6) are records held for another
 * node (the owner) while it is down; they live in their own LMDB database,
 * keyed by owner ‖ the record's key, and are never read as data. */
enum storage_op {
    STORAGE_PUT = 0,      /* store the record (last writer wins) */
    STORAGE_PUT_HINT = 1, /* hold it for owner (last writer wins) */
    STORAGE_DEL_HINT = 2, /* owner has it: drop the hint unless newer */
    STORAGE_PUT_META = 3, /* keep value under the name key, apart from the
                             records (a stream's progress); an empty value
                             deletes it */
};

/* One queued write. The caller owns it and the key and value buffers until
 * it comes back from storage_completed(). */
struct storage_write {
    /* in */
    uint8_t op;                          /* enum storage_op */
    uint8_t owner[STORAGE_ORIGIN_BYTES]; /* hints: the node it is for */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    uint64_t version;
    uint8_t origin[STORAGE_ORIGIN_BYTES];
    bool tombstone;
    void *ctx;   /* the caller's */
    uint8_t tag; /* the caller's: which module submitted it */
    /* out */
    int result;              /* 0 or a kv_err */
    bool applied;            /* false: a newer version was already stored */
    uint64_t stored_version; /* the version stored after this write */
    /* The record's LMDB key (every op). For a STORAGE_PUT that was
     * applied: the transaction that committed it, the new record's checksum,
     * and the record it replaced (had_prev false when there was none, or
     * none that could be parsed). Anti-entropy keeps its trees current from
     * these. */
    uint8_t lkey[STORAGE_LKEY_BYTES];
    uint64_t txn;
    uint8_t checksum[STORAGE_CHECKSUM_BYTES];
    bool had_prev;
    bool prev_tombstone;
    uint64_t prev_version;
    uint8_t prev_origin[STORAGE_ORIGIN_BYTES];
    uint8_t prev_checksum[STORAGE_CHECKSUM_BYTES];
    struct storage_write *next;
};

struct storage_stats {
    uint64_t entries;  /* records, tombstones included */
    uint64_t map_used; /* bytes of the map in use */
    uint64_t map_size; /* bytes of the map */
    uint64_t batches;  /* write transactions committed */
    uint64_t writes;   /* writes committed */
};

/* Called by the writer thread after a batch has completed. Must be
 * thread-safe and cheap (ev_async_send is both). */
typedef void (*storage_notify_fn)(void *arg);

/* Opens (creating if needed) the environment in dir with a map of map_size
 * bytes, and starts the writer thread.
 * @retval 0 Success.
 * @retval KV_ERR_READONLY the directory cannot be written.
 * @retval KV_ERR_CORRUPT the data file is damaged.
 * @retval KV_ERR_IO any other failure (logged with LMDB's text). */
int storage_open(struct storage **out, const char *dir, uint64_t map_size,
                 storage_notify_fn notify, void *notify_arg);

/* Commits what is queued, stops the writer and closes the environment.
 * Writes that completed but were not collected are dropped. NULL is fine. */
void storage_close(struct storage *st);

/* Last writer wins: true when (v1, o1) is newer than (v2, o2): the higher
 * version, then the higher origin. Every replica decides the same way. */
bool storage_newer(uint64_t v1, const uint8_t *o1, uint64_t v2,
                   const uint8_t *o2);

/* The ring token of a key: BLAKE2b with an 8-byte digest, read big-endian.
 * An on-disk and on-wire format: it never changes (DESIGN §4). */
uint64_t storage_token(const uint8_t *key, size_t len);

/* BLAKE2b-128 of a value: the record checksum. */
void storage_checksum(uint8_t out[STORAGE_CHECKSUM_BYTES], const uint8_t *value,
                      size_t len);

/* Reads a key's record, verifying its checksum and key.
 * @retval 0 Success (a tombstone is returned as a record with tombstone set).
 * @retval KV_ERR_NOT_FOUND no record.
 * @retval KV_ERR_CORRUPT the record fails its checksum or cannot be parsed.
 * @retval KV_ERR_NOMEM. @retval KV_ERR_IO an LMDB error (logged). */
int storage_get(struct storage *st, const uint8_t *key, size_t len,
                struct storage_record *rec);

/* Frees what storage_get allocated. */
void storage_record_free(struct storage_record *rec);

/* Queues a write for the writer thread. */
void storage_submit(struct storage *st, struct storage_write *w);

/* What the writes queued and not yet taken by the writer hold (each one's
 * key, value and the write itself): a node stops taking client writes
 * while this is over its bound. */
uint64_t storage_queued_bytes(struct storage *st);

/* Takes the list of completed writes (in submission order), or NULL. */
struct storage_write *storage_completed(struct storage *st);

/* Current figures. */
int storage_stats(struct storage *st, struct storage_stats *out);

/* Hint storage is bounded: a hint that would go past max hints (all owners
 * together) fails with KV_ERR_FULL. */
void storage_set_hint_limit(struct storage *st, uint64_t max);

/* Up to max hints held for owner, in token order, and no more once they
 * hold STORAGE_HINT_BATCH_BYTES of keys and values (one at least), so that
 * a batch of large hints is not all in memory at once. Each record's key
 * and value live in one allocation: free them all with
 * storage_hints_free.
 * @retval 0 Success. @retval KV_ERR_NOMEM. @retval KV_ERR_IO. */
#define STORAGE_HINT_BATCH_BYTES (4u << 20)
int storage_hints(struct storage *st, const uint8_t owner[STORAGE_ORIGIN_BYTES],
                  size_t max, struct storage_record **out, size_t *n);
void storage_hints_free(struct storage_record *recs, size_t n);

struct storage_hint_count {
    uint8_t owner[STORAGE_ORIGIN_BYTES];
    uint64_t count;
};

/* The owners hints are held for (at most max), in id order: one cursor seek
 * per owner, however many hints each has. */
int storage_hint_owners(struct storage *st,
                        uint8_t (*out)[STORAGE_ORIGIN_BYTES], size_t max,
                        size_t *n);

/* How many hints are held for each owner (at most max owners listed) and in
 * all (*total): a scan of every hint, for kvcli status. */
int storage_hint_counts(struct storage *st, struct storage_hint_count *out,
                        size_t max, size_t *n, uint64_t *total);

/* The LMDB key of a user key (STORAGE_LKEY_BYTES). */
void storage_lkey(uint8_t out[STORAGE_LKEY_BYTES], const uint8_t *key,
                  size_t len);

/* Called by storage_scan for each record: lkey is its LMDB key; rec is
 * parsed without checking the value's checksum (scrub does that in bulk);
 * sound is false when even the record's header cannot be parsed (rec is then
 * zeroed). Pointers are valid during the call only. Return nonzero to stop.
 */
typedef int (*storage_scan_fn)(void *arg, const uint8_t *lkey,
                               const struct storage_record *rec, bool sound);

/* Walks the records whose tokens lie in [first, last], in LMDB key order,
 * starting after the LMDB key `after` when it is not NULL, in one read
 * transaction; *snapshot (when not NULL) gets that transaction's id: writes
 * with a txn at or below it are in what the walk saw.
 * @retval 0 Success (also when fn stopped it). @retval KV_ERR_IO. */
int storage_scan(struct storage *st, uint64_t first, uint64_t last,
                 const uint8_t *after, storage_scan_fn fn, void *arg,
                 uint64_t *snapshot);

/* Reads a record by its LMDB key, checksum verified. Its key and value live
 * in one allocation that rec->key points to: free it with
 * storage_record_free_all. Errors as storage_get. */
int storage_get_lkey(struct storage *st, const uint8_t *lkey,
                     struct storage_record *rec);
void storage_record_free_all(struct storage_record *rec);

/* The highest version ever stored here (records and hints), kept durably
 * with the writes: a node's clock restarts above it (DESIGN §4). */
uint64_t storage_max_version(struct storage *st);

/* What STORAGE_PUT_META keeps under name (a malloc'd copy: free it).
 * @retval 0 Success. @retval KV_ERR_NOT_FOUND. @retval KV_ERR_IO. */
int storage_meta_get(struct storage *st, const char *name, uint8_t **out,
                     size_t *len);

/* The storage port: the calls the protocol modules make on a node's store
 * (node/env.h), each with the contract of the storage_* function of the same
 * name above. storage_lmdb is this module's implementation (its ctx is a
 * struct storage *); the simulator's in-memory store (tests/fake/store.c) is
 * the other, and tests/unit/test_store_port.c holds both to one contract. */
struct storage_port {
    int (*get)(void *ctx, const uint8_t *key, size_t len,
               struct storage_record *rec);
    int (*get_lkey)(void *ctx, const uint8_t *lkey, struct storage_record *rec);
    /* The completion comes back later (storage_completed), never from inside
     * submit. */
    void (*submit)(void *ctx, struct storage_write *w);
    int (*scan)(void *ctx, uint64_t first, uint64_t last, const uint8_t *after,
                storage_scan_fn fn, void *arg, uint64_t *snapshot);
    int (*hints)(void *ctx, const uint8_t owner[STORAGE_ORIGIN_BYTES],
                 size_t max, struct storage_record **out, size_t *n);
    int (*hint_owners)(void *ctx, uint8_t (*out)[STORAGE_ORIGIN_BYTES],
                       size_t max, size_t *n);
    uint64_t (*max_version)(void *ctx);
    int (*meta_get)(void *ctx, const char *name, uint8_t **out, size_t *len);
};

extern const struct storage_port storage_lmdb;

/* Parses a stored record (LMDB value bytes) without copying.
 * @retval 0 Success. @retval KV_ERR_CORRUPT malformed or bad checksum.
 * @retval KV_ERR_VERSION unknown record format. */
int storage_record_parse(const uint8_t *data, size_t len,
                         struct storage_record *rec);

#endif
