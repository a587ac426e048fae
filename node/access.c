/* The access file (access.h): parsing, lookup, and which role each request
 * needs. */
#include "access.h"

#include "../common/common.h"

#include <errno.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_names[] = {"none", "read", "write", "admin"};

const char *access_role_name(int role)
{
    return role >= ROLE_READ && role <= ROLE_ADMIN ? role_names[role]
                                                   : role_names[0];
}

static int role_parse(const char *s)
{
    for (int r = ROLE_READ; r <= ROLE_ADMIN; r++)
        if (strcmp(s, role_names[r]) == 0)
            return r;
    return ROLE_NONE;
}

int access_role_needed(int msg_type)
{
    switch (msg_type) {
    case MSG_GET:
    case MSG_WHERE:
    case MSG_MEMBERS:
    case MSG_RING:
    case MSG_STATUS:
        return ROLE_READ;
    case MSG_PUT:
    case MSG_DEL:
        return ROLE_WRITE;
    default:
        return ROLE_ADMIN;
    }
}

const struct access_entry *access_find(const struct access_list *l,
                                       const uint8_t key[CRYPTO_KEY_BYTES])
{
    for (size_t i = 0; i < l->n; i++)
        if (sodium_memcmp(l->e[i].key, key, CRYPTO_KEY_BYTES) == 0)
            return &l->e[i];
    return NULL;
}

void access_free(struct access_list *l)
{
    free(l->e);
    l->e = NULL;
    l->n = 0;
}

/* One line into e. @retval 0 an entry, 1 nothing (blank or comment), or
 * KV_ERR_INVAL with why filled. */
static int parse_line(char *line, struct access_entry *e, char *why, size_t cap)
{
    line[strcspn(line, "#\r\n")] = '\0';
    char *save, *key = strtok_r(line, " \t", &save);
    if (!key)
        return 1;
    char *name = strtok_r(NULL, " \t", &save);
    char *role = name ? strtok_r(NULL, " \t", &save) : NULL;
    char *extra = role ? strtok_r(NULL, " \t", &save) : NULL;
    size_t bin_len = 0;
    const char *end = NULL;
    if (sodium_base642bin(e->key, sizeof(e->key), key, strlen(key), NULL,
                          &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        bin_len != sizeof(e->key) || *end != '\0') {
        snprintf(why, cap,
                 "\"%.60s\" is not a public key (44 characters of base64, "
                 "as kvcli keygen --identity prints it)",
                 key);
        return KV_ERR_INVAL;
    }
    if (!name || !role || extra) {
        snprintf(why, cap, "expected: KEY NAME ROLE (read, write or admin)");
        return KV_ERR_INVAL;
    }
    if (strlen(name) >= sizeof(e->name)) {
        snprintf(why, cap, "the name is longer than %d characters",
                 ACCESS_NAME_MAX - 1);
        return KV_ERR_INVAL;
    }
    snprintf(e->name, sizeof(e->name), "%s", name);
    e->role = (uint8_t)role_parse(role);
    if (e->role == ROLE_NONE) {
        snprintf(why, cap, "unknown role \"%.20s\" (read, write or admin)",
                 role);
        return KV_ERR_INVAL;
    }
    return 0;
}

/* Reads the lines of f; what names it in errors. */
static int parse_file(FILE *f, const char *what, struct access_list *out,
                      char *err, size_t cap)
{
    const char *path = what;
    struct access_list l = {0};
    size_t cap_e = 0;
    char line[512], why[160];
    int rc = 0;
    for (unsigned no = 1; rc == 0 && fgets(line, sizeof(line), f); no++) {
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, cap, "%s line %u: longer than %zu characters", path,
                     no, sizeof(line) - 2);
            rc = KV_ERR_INVAL;
            break;
        }
        struct access_entry e;
        int r = parse_line(line, &e, why, sizeof(why));
        if (r == 1)
            continue;
        if (r == 0 && access_find(&l, e.key)) {
            snprintf(why, sizeof(why), "this key is already listed");
            r = KV_ERR_INVAL;
        }
        if (r) {
            snprintf(err, cap, "%s line %u: %s", path, no, why);
            rc = r;
            break;
        }
        if (l.n == cap_e) {
            size_t n = cap_e ? 2 * cap_e : 16;
            struct access_entry *p = realloc(l.e, n * sizeof(*p));
            if (!p) {
                rc = KV_ERR_NOMEM;
                break;
            }
            l.e = p;
            cap_e = n;
        }
        l.e[l.n++] = e;
    }
    if (rc) {
        access_free(&l);
        return rc;
    }
    *out = l;
    return 0;
}

int access_load(const char *path, struct access_list *out, char *err,
                size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, cap, "cannot read access file %s: %s", path,
                 strerror(errno));
        return KV_ERR_IO;
    }
    int rc = parse_file(f, path, out, err, cap);
    fclose(f);
    return rc;
}

int access_parse(const char *text, size_t len, const char *what,
                 struct access_list *out, char *err, size_t cap)
{
    if (len == 0) {
        *out = (struct access_list){0};
        return 0;
    }
    FILE *f = fmemopen((void *)text, len, "r");
    if (!f)
        return KV_ERR_NOMEM;
    int rc = parse_file(f, what, out, err, cap);
    fclose(f);
    return rc;
}

char *access_render(const struct access_list *l, size_t *len)
{
    size_t cap = l->n * (64 + ACCESS_NAME_MAX + 8) + 1, n = 0;
    char *t = malloc(cap);
    if (!t)
        return NULL;
    t[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        char b64[64];
        sodium_bin2base64(b64, sizeof(b64), l->e[i].key, sizeof(l->e[i].key),
                          sodium_base64_VARIANT_ORIGINAL);
        n += (size_t)snprintf(t + n, cap - n, "%s %s %s\n", b64, l->e[i].name,
                              access_role_name(l->e[i].role));
    }
    *len = n;
    return t;
}

int access_set(struct access_list *l, const struct access_entry *e)
{
    for (size_t i = 0; i < l->n; i++)
        if (sodium_memcmp(l->e[i].key, e->key, sizeof(e->key)) == 0) {
            l->e[i] = *e;
            return 0;
        }
    struct access_entry *p = realloc(l->e, (l->n + 1) * sizeof(*p));
    if (!p)
        return KV_ERR_NOMEM;
    l->e = p;
    l->e[l->n++] = *e;
    return 0;
}

size_t access_remove(struct access_list *l, const char *who)
{
    uint8_t key[CRYPTO_KEY_BYTES];
    size_t bin_len = 0, kept = 0, removed = 0;
    const char *end = NULL;
    bool by_key =
        sodium_base642bin(key, sizeof(key), who, strlen(who), NULL, &bin_len,
                          &end, sodium_base64_VARIANT_ORIGINAL) == 0 &&
        bin_len == sizeof(key) && *end == '\0';
    for (size_t i = 0; i < l->n; i++) {
        bool match = by_key ? sodium_memcmp(l->e[i].key, key, sizeof(key)) == 0
                            : strcmp(l->e[i].name, who) == 0;
        if (match)
            removed++;
        else
            l->e[kept++] = l->e[i];
    }
    l->n = kept;
    return removed;
}

int access_parse_entry(const char *line, struct access_entry *e, char *why,
                       size_t cap)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", line);
    int rc = parse_line(buf, e, why, cap);
    if (rc == 1) {
        snprintf(why, cap, "expected: KEY NAME ROLE (read, write or admin)");
        return KV_ERR_INVAL;
    }
    return rc;
}
