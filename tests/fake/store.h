/* The storage port in memory (storage/storage.h, struct storage_port): what
 * the simulator and the unit tests give a node instead of LMDB. It keeps the
 * same contract as storage_lmdb (tests/unit/test_store_port.c holds both to
 * it): last writer wins by (version, origin), hints live apart from data,
 * scans walk LMDB-key order, every applied write reports its LMDB key,
 * transaction, checksum and the record it replaced, and what it hands out is
 * allocated as storage/ allocates it.
 *
 * Submitted writes wait until the test applies them: by default they queue
 * and fake_store_completed() applies and returns them in order, as
 * storage_completed() does; a submit hook (the simulator's) takes them
 * instead and calls fake_store_apply() when it decides they commit. */
#ifndef ESSAIM_FAKE_STORE_H
#define ESSAIM_FAKE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../storage/storage.h"

struct fake_store;

extern const struct storage_port fake_store_port; /* ctx: struct fake_store */

struct fake_store *fake_store_new(void);
void fake_store_free(struct fake_store *fs);

/* Everything is lost, as with a deleted data directory. */
void fake_store_wipe(struct fake_store *fs);

/* Submitted writes go to hook(arg, w) instead of the queue. */
void fake_store_set_submit_hook(struct fake_store *fs,
                                void (*hook)(void *arg,
                                             struct storage_write *w),
                                void *arg);

/* From now on every write fails with code (KV_ERR_FULL: the map is full;
 * KV_ERR_IO: the disk fails) and changes nothing, until called with 0. */
void fake_store_fail(struct fake_store *fs, int code);

/* Commits one write as storage's writer thread would, filling its outcome. */
void fake_store_apply(struct fake_store *fs, struct storage_write *w);

/* Applies every queued write and returns them, in submission order (NULL:
 * none), as storage_completed. */
struct storage_write *fake_store_completed(struct fake_store *fs);

/* The data record of key. @retval false: none. */
bool fake_store_lookup(struct fake_store *fs, const uint8_t *key, size_t len,
                       uint64_t *version, bool *tombstone);

/* Data records, and hints held for any owner. */
/* Flips a bit of key's stored value, leaving its checksum as it was (a
 * record damaged on disk). @retval false: no such record, or it is empty. */
bool fake_store_corrupt(struct fake_store *fs, const uint8_t *key, size_t len);

/* Copies key's value (up to cap bytes) into out. @retval its length, or
 * SIZE_MAX when there is no such record. */
size_t fake_store_value(struct fake_store *fs, const uint8_t *key, size_t len,
                        uint8_t *out, size_t cap);

size_t fake_store_records(const struct fake_store *fs);
size_t fake_store_hint_count(const struct fake_store *fs);

#endif
