/* access: the clients a node lets in and what each may do (kvnode --access
 * FILE). One line per client: its public key (base64, as `kvcli keygen
 * --identity` prints it), a name, and a role: read, write or admin.
 * Everything after '#' is a comment; blank lines are skipped.
 *
 *   read   get, where, members, ring, status
 *   write  that, and put and del
 *   admin  everything: repair, fault, decommission, removenode too
 *
 * Private to node/. */
#ifndef ESSAIM_NODE_ACCESS_H
#define ESSAIM_NODE_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#include "../proto/proto.h"

enum access_role {
    ROLE_NONE = 0,
    ROLE_READ = 1,
    ROLE_WRITE = 2,
    ROLE_ADMIN = 3,
};

#define ACCESS_NAME_MAX 64

struct access_entry {
    uint8_t key[CRYPTO_KEY_BYTES];
    char name[ACCESS_NAME_MAX];
    uint8_t role; /* enum access_role */
};

struct access_list {
    struct access_entry *e;
    size_t n;
};

/* Reads an access file. A line with a bad key, a name missing or too long,
 * an unknown role, or a key already listed fails the whole file, and err
 * says which line and why.
 * @retval 0 Success. @retval KV_ERR_INVAL (err filled). @retval KV_ERR_IO
 * the file cannot be read (err filled). @retval KV_ERR_NOMEM. */
int access_load(const char *path, struct access_list *out, char *err,
                size_t cap);

/* The entry of a public key, or NULL. */
/* access_load on text (len bytes) instead of a file; what names it in
 * errors. */
int access_parse(const char *text, size_t len, const char *what,
                 struct access_list *out, char *err, size_t cap);

/* The list in the file's format, one "KEY NAME ROLE" line per client, in a
 * new buffer (NULL: out of memory). */
char *access_render(const struct access_list *l, size_t *len);

/* One "KEY NAME ROLE" line into e. @retval 0 or KV_ERR_INVAL (why). */
int access_parse_entry(const char *line, struct access_entry *e, char *why,
                       size_t cap);

/* Adds e, or gives its key the new name and role. @retval 0 or NOMEM. */
int access_set(struct access_list *l, const struct access_entry *e);

/* Removes the client with this key (base64), or every one with this name.
 * @retval how many were removed. */
size_t access_remove(struct access_list *l, const char *who);

const struct access_entry *access_find(const struct access_list *l,
                                       const uint8_t key[CRYPTO_KEY_BYTES]);

void access_free(struct access_list *l);

/* "read", "write", "admin"; "none" for anything else. */
const char *access_role_name(int role);

/* The role a request of this type needs (ROLE_ADMIN for any type not
 * named above: what later commands add is admin's until said otherwise). */
int access_role_needed(int msg_type);

#endif
