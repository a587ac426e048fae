/* A power cut for the durability test, loaded into kvnode with LD_PRELOAD.
 *
 * Every write to a file named data.mdb through a descriptor that is not
 * O_SYNC/O_DSYNC first appends the bytes it replaces to DATA.mdb.undo; an
 * fsync or fdatasync of that file makes what was written durable and empties
 * the undo log. After the test kills the process, applying the undo log
 * (newest record first) leaves the file as a power cut would in the worst
 * case: nothing that was written but not yet synced reached the disk.
 *
 * Record: offset, length, file size before the write (three uint64 in host
 * order), then `length` bytes of what the file held there (zeros past its
 * end). The log exists, empty, from the moment the file is opened, so the
 * test can tell that the shim was in place.
 *
 * With POWERCUT_AT_SYNC=N in the environment the power goes at the Nth sync
 * of data.mdb itself: the process kills itself with SIGKILL before that sync
 * happens, so the commit it belonged to is cut in the middle. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 4096

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int undo_of[MAX_FD]; /* fd -> its undo log's fd + 1; 0: untracked */
static long cut_at, syncs;  /* POWERCUT_AT_SYNC, and syncs so far */

static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);

__attribute__((constructor)) static void powercut_init(void)
{
    real_pwrite = dlsym(RTLD_NEXT, "pwrite64");
    real_write = dlsym(RTLD_NEXT, "write");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev64");
    real_open = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_close = dlsym(RTLD_NEXT, "close");
    const char *at = getenv("POWERCUT_AT_SYNC");
    cut_at = at ? atol(at) : 0;
}

static int tracked_name(const char *path)
{
    size_t n = strlen(path);
    return n >= 8 && strcmp(path + n - 8, "data.mdb") == 0 &&
           (n == 8 || path[n - 9] == '/');
}

static void track(int fd, const char *path, int flags)
{
    if (fd < 0 || fd >= MAX_FD || !tracked_name(path) ||
        (flags & (O_SYNC | O_DSYNC)))
        return;
    char undo[4096];
    if ((size_t)snprintf(undo, sizeof(undo), "%s.undo", path) >= sizeof(undo))
        abort();
    int u = real_open(undo, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (u < 0)
        abort(); /* a shim that cannot log must not pretend to */
    pthread_mutex_lock(&lock);
    undo_of[fd] = u + 1;
    pthread_mutex_unlock(&lock);
}

/* Appends what [off, off+len) of fd holds now. Called with the lock held. */
static void log_undo(int fd, off_t off, size_t len)
{
    int u = undo_of[fd] - 1;
    struct stat st;
    if (fstat(fd, &st) != 0)
        abort();
    size_t total = 3 * sizeof(uint64_t) + len;
    uint8_t *rec = calloc(1, total);
    if (!rec)
        abort();
    uint64_t head[3] = {(uint64_t)off, len, (uint64_t)st.st_size};
    memcpy(rec, head, sizeof(head));
    size_t got = 0;
    while (got < len) {
        ssize_t r =
            pread(fd, rec + sizeof(head) + got, len - got, off + (off_t)got);
        if (r <= 0)
            break; /* past the end: zeros, and the size says how far */
        got += (size_t)r;
    }
    for (size_t done = 0; done < total;) {
        ssize_t w = real_write(u, rec + done, total - done);
        if (w <= 0)
            abort();
        done += (size_t)w;
    }
    free(rec);
}

static int tracked(int fd)
{
    return fd >= 0 && fd < MAX_FD && undo_of[fd] != 0;
}

static size_t iov_len(const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    return len;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    if (!tracked(fd))
        return real_pwrite(fd, buf, n, off);
    pthread_mutex_lock(&lock);
    log_undo(fd, off, n);
    ssize_t r = real_pwrite(fd, buf, n, off);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return pwrite64(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    if (!tracked(fd))
        return real_write(fd, buf, n);
    pthread_mutex_lock(&lock);
    log_undo(fd, lseek(fd, 0, SEEK_CUR), n);
    ssize_t r = real_write(fd, buf, n);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (!tracked(fd))
        return real_writev(fd, iov, n);
    pthread_mutex_lock(&lock);
    log_undo(fd, lseek(fd, 0, SEEK_CUR), iov_len(iov, n));
    ssize_t r = real_writev(fd, iov, n);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off_t off)
{
    if (!tracked(fd))
        return real_pwritev(fd, iov, n, off);
    pthread_mutex_lock(&lock);
    log_undo(fd, off, iov_len(iov, n));
    ssize_t r = real_pwritev(fd, iov, n, off);
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    return pwritev64(fd, iov, n, off);
}

/* The power goes before the cut_at-th sync of data.mdb. */
static void maybe_cut(int fd)
{
    if (tracked(fd) && cut_at > 0 &&
        __atomic_add_fetch(&syncs, 1, __ATOMIC_SEQ_CST) == cut_at)
        kill(getpid(), SIGKILL);
}

/* Durable now: the undo log empties. */
static int synced(int fd, int rc)
{
    if (rc == 0 && tracked(fd)) {
        pthread_mutex_lock(&lock);
        if (ftruncate(undo_of[fd] - 1, 0) != 0)
            abort();
        pthread_mutex_unlock(&lock);
    }
    return rc;
}

int fsync(int fd)
{
    maybe_cut(fd);
    return synced(fd, real_fsync(fd));
}

int fdatasync(int fd)
{
    maybe_cut(fd);
    return synced(fd, real_fdatasync(fd));
}

int close(int fd)
{
    if (tracked(fd)) {
        pthread_mutex_lock(&lock);
        real_close(undo_of[fd] - 1);
        undo_of[fd] = 0;
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}

/* The mode argument of open and openat, which only O_CREAT and O_TMPFILE
 * pass. */
#define TAKE_MODE(flags, mode)                                                 \
    do {                                                                       \
        if ((flags) & (O_CREAT | O_TMPFILE)) {                                 \
            va_list ap;                                                        \
            va_start(ap, flags);                                               \
            (mode) = va_arg(ap, mode_t);                                       \
            va_end(ap);                                                        \
        }                                                                      \
    } while (0)

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    TAKE_MODE(flags, mode);
    int fd = real_open(path, flags, mode);
    track(fd, path, flags);
    return fd;
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    TAKE_MODE(flags, mode);
    return open64(path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    TAKE_MODE(flags, mode);
    int fd = real_openat(dirfd, path, flags, mode);
    track(fd, path, flags);
    return fd;
}

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    TAKE_MODE(flags, mode);
    return openat64(dirfd, path, flags, mode);
}
