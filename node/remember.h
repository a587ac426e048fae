/* remember: the members a node has known, kept in its data directory
 * (DATA/members), so that a node that was ever part of a cluster rejoins it
 * at restart whatever --join says, instead of starting a cluster of one
 * (DESIGN §7). Private to node/. */
#ifndef ESSAIM_NODE_REMEMBER_H
#define ESSAIM_NODE_REMEMBER_H

#include <stdbool.h>
#include <stddef.h>

#include "../proto/proto.h"

/* A list of member addresses. */
struct remembered {
    char (*addr)[GOSSIP_ADDR_MAX];
    size_t n, cap;
};

/* Reads DATA/members (none: an empty list). Lines that are not an address
 * are skipped.
 * @retval 0 Success. @retval KV_ERR_NOMEM. @retval KV_ERR_IO (logged). */
int remember_load(const char *data_dir, struct remembered *out);

/* Writes the list (sorted, without repeats) to DATA/members through a
 * temporary file that is synced and renamed over it.
 * @retval 0 Success. @retval KV_ERR_IO (logged). */
int remember_save(const char *data_dir, const struct remembered *r);

/* Sorts the list and drops repeats; true when it now differs from old. */
bool remember_normalise(struct remembered *r, const struct remembered *old);

/* Appends addr. @retval 0 Success. @retval KV_ERR_NOMEM. */
int remember_add(struct remembered *r, const char *addr);

void remember_free(struct remembered *r);

/* Replaces the file at path with head and len bytes of data (mode 0600):
 * written to path.tmp, synced, renamed over it. What a node keeps in its
 * data directory is written this way.
 * @retval 0 Success. @retval KV_ERR_IO (logged). */
int remember_write_file(const char *path, const char *head, const void *data,
                        size_t len);

#endif
