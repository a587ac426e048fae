/* Key files (DESIGN §8): one line, 32 bytes in standard base64 with padding.
 * The secret never leaves this file except into the caller's buffer, and
 * every buffer that held it is wiped. */
#include "crypto.h"

#include "../common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* 32 bytes in base64 with padding: 44 characters. */
#define KEY_B64_LEN 44

int crypto_init(void)
{
    return sodium_init() < 0 ? KV_ERR_IO : 0;
}

int crypto_keyfile_read(const char *path, uint8_t key[CRYPTO_KEY_BYTES])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return KV_ERR_IO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return KV_ERR_IO;
    }
    /* Only its owner may read or change it: no group or other bits, and
     * owned by this user or root (security review L4). */
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) ||
        (st.st_uid != geteuid() && st.st_uid != 0)) {
        close(fd);
        return KV_ERR_PERM;
    }
    char buf[KEY_B64_LEN + 4];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    int rc = KV_ERR_INVAL;
    if (n < KEY_B64_LEN)
        goto out;
    size_t len = (size_t)n;
    /* Exactly one line: 44 characters and an optional "\n" or "\r\n". */
    if (len > KEY_B64_LEN && buf[len - 1] == '\n')
        len--;
    if (len > KEY_B64_LEN && buf[len - 1] == '\r')
        len--;
    if (len != KEY_B64_LEN)
        goto out;
    size_t bin_len = 0;
    const char *end = NULL;
    if (sodium_base642bin(key, CRYPTO_KEY_BYTES, buf, len, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        bin_len != CRYPTO_KEY_BYTES || end != buf + len)
        goto out;
    rc = 0;
out:
    sodium_memzero(buf, sizeof(buf));
    if (rc != 0)
        sodium_memzero(key, CRYPTO_KEY_BYTES);
    return rc;
}

/* Syncs the directory that holds path, so that a new name in it survives a
 * crash. */
static int sync_parent(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 1;
    if (len >= sizeof(dir))
        return KV_ERR_IO;
    memcpy(dir, slash ? path : ".", len);
    dir[len ? len : 1] = '\0';
    if (slash == path)
        dir[0] = '/'; /* a file in / */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return KV_ERR_IO;
    int rc = fsync(fd) == 0 ? 0 : KV_ERR_IO;
    close(fd);
    return rc;
}

int crypto_keyfile_write(const char *path, const uint8_t key[CRYPTO_KEY_BYTES])
{
    /* Written whole to a temporary file, synced, then given its name with
     * link(2), which never replaces an existing key, and the directory
     * synced: after a crash the key is there whole or not at all (security
     * review L4). */
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path) >= (int)sizeof(tmp))
        return KV_ERR_IO;
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return KV_ERR_IO;
    char line[KEY_B64_LEN + 2];
    sodium_bin2base64(line, sizeof(line), key, CRYPTO_KEY_BYTES,
                      sodium_base64_VARIANT_ORIGINAL);
    line[KEY_B64_LEN] = '\n';
    int rc = 0;
    /* Set the mode explicitly: the umask must not widen or narrow it. */
    if (fchmod(fd, 0600) != 0 ||
        write(fd, line, KEY_B64_LEN + 1) != KEY_B64_LEN + 1 || fsync(fd) != 0)
        rc = KV_ERR_IO;
    sodium_memzero(line, sizeof(line));
    if (close(fd) != 0)
        rc = KV_ERR_IO;
    if (rc == 0 && link(tmp, path) != 0)
        rc = KV_ERR_IO;
    unlink(tmp);
    if (rc == 0)
        rc = sync_parent(path);
    return rc;
}

int crypto_keyfile_generate(const char *path)
{
    uint8_t key[CRYPTO_KEY_BYTES];
    randombytes_buf(key, sizeof(key));
    int rc = crypto_keyfile_write(path, key);
    sodium_memzero(key, sizeof(key));
    return rc;
}

int crypto_x25519_public(uint8_t pub[CRYPTO_KEY_BYTES],
                         const uint8_t priv[CRYPTO_KEY_BYTES])
{
    return crypto_scalarmult_base(pub, priv) == 0 ? 0 : KV_ERR_INVAL;
}

int crypto_node_key_load(const char *path, uint8_t priv[CRYPTO_KEY_BYTES],
                         uint8_t pub[CRYPTO_KEY_BYTES], bool *created)
{
    *created = false;
    int rc = crypto_keyfile_read(path, priv);
    if (rc == KV_ERR_IO && access(path, F_OK) != 0 && errno == ENOENT) {
        rc = crypto_keyfile_generate(path);
        if (rc == 0)
            rc = crypto_keyfile_read(path, priv);
        *created = rc == 0;
    }
    if (rc == 0)
        rc = crypto_x25519_public(pub, priv);
    return rc;
}

void crypto_node_id(uint8_t id[CRYPTO_NODE_ID_BYTES],
                    const uint8_t pub[CRYPTO_KEY_BYTES])
{
    uint8_t h[32];
    crypto_generichash(h, sizeof(h), pub, CRYPTO_KEY_BYTES, NULL, 0);
    memcpy(id, h, CRYPTO_NODE_ID_BYTES);
}
