/* The members a node remembers across restarts (remember.h). The file is
 * text, one "HOST:PORT" a line after a comment, so an operator can read it
 * (and delete it to make a node forget its cluster). */
#include "remember.h"

#include "../common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FILE_NAME "members"

int remember_add(struct remembered *r, const char *addr)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        void *p = realloc(r->addr, cap * sizeof(*r->addr));
        if (!p)
            return KV_ERR_NOMEM;
        r->addr = p;
        r->cap = cap;
    }
    snprintf(r->addr[r->n++], GOSSIP_ADDR_MAX, "%s", addr);
    return 0;
}

void remember_free(struct remembered *r)
{
    free(r->addr);
    r->addr = NULL;
    r->n = r->cap = 0;
}

static int cmp_addr(const void *a, const void *b)
{
    return strcmp(a, b);
}

bool remember_normalise(struct remembered *r, const struct remembered *old)
{
    if (r->n)
        qsort(r->addr, r->n, sizeof(*r->addr), cmp_addr);
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++)
        if (k == 0 || strcmp(r->addr[k - 1], r->addr[i]) != 0)
            memmove(r->addr[k++], r->addr[i], GOSSIP_ADDR_MAX);
    r->n = k;
    if (!old || old->n != r->n)
        return true;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(old->addr[i], r->addr[i]) != 0)
            return true;
    return false;
}

int remember_load(const char *data_dir, struct remembered *out)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/" FILE_NAME, data_dir);
    memset(out, 0, sizeof(*out));
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        log_error("cannot read %s: %s", path, strerror(errno));
        return KV_ERR_IO;
    }
    char line[GOSSIP_ADDR_MAX + 2];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char host[GOSSIP_ADDR_MAX], port[16];
        if (line[0] == '#' || !line[0] ||
            net_split_hostport(line, host, sizeof(host), port, sizeof(port)))
            continue;
        rc = remember_add(out, line);
    }
    fclose(f);
    if (rc)
        remember_free(out);
    return rc;
}

int remember_write_file(const char *path, const char *head, const void *data,
                        size_t len)
{
    char tmp[1024];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        log_error("cannot write %s: the path is too long", path);
        return KV_ERR_IO;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        log_error("cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return KV_ERR_IO;
    }
    bool ok = fputs(head, f) >= 0 && fwrite(data, 1, len, f) == len;
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        log_error("cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return KV_ERR_IO;
    }
    return 0;
}

int remember_save(const char *data_dir, const struct remembered *r)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/" FILE_NAME, data_dir);
    char *text = malloc(r->n * GOSSIP_ADDR_MAX + 1);
    if (!text)
        return KV_ERR_NOMEM;
    size_t len = 0;
    for (size_t i = 0; i < r->n; i++)
        len += (size_t)sprintf(text + len, "%s\n", r->addr[i]);
    int rc = remember_write_file(path,
                                 "# The members this node last knew: it "
                                 "rejoins through them at restart.\n",
                                 text, len);
    free(text);
    return rc;
}
