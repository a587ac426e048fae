/* accel: the API, the CPU worker pool and auto's calibration. See accel.h. */
#include "accel.h"
#include "opencl.h"

#include "../common/common.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Batches smaller than this are hashed on the caller's thread: waking the
 * pool costs more than they do. */
#define INLINE_ITEMS 64
#define INLINE_BYTES (64u << 10)
/* Workers take items in runs of this many. */
#define RUN_ITEMS 256
#define MAX_THREADS 256

struct job {
    const uint8_t *data;
    const uint64_t *off;
    size_t n, outlen;
    uint8_t *out;
    size_t next; /* first item not yet taken (under mu) */
};

struct accel {
    struct accel_info info;
    struct ocl *ocl;
    pthread_t threads[MAX_THREADS];
    unsigned n_threads; /* workers besides the caller */
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    struct job job;
    uint64_t generation; /* bumped per job */
    unsigned busy;       /* workers still on the current job */
    bool stopping;
};

int accel_mode_parse(const char *s)
{
    if (strcmp(s, "auto") == 0)
        return ACCEL_AUTO;
    if (strcmp(s, "cpu") == 0)
        return ACCEL_CPU;
    if (strcmp(s, "opencl") == 0)
        return ACCEL_OPENCL;
    return -1;
}

static void hash_range(const struct job *j, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        crypto_generichash(j->out + i * j->outlen, j->outlen,
                           j->data + j->off[i], j->off[i + 1] - j->off[i], NULL,
                           0);
}

/* Takes runs of the current job until none is left. Called with mu held;
 * returns with it held. */
static void drain(struct accel *a)
{
    while (a->job.next < a->job.n) {
        size_t from = a->job.next;
        size_t to = from + RUN_ITEMS < a->job.n ? from + RUN_ITEMS : a->job.n;
        a->job.next = to;
        pthread_mutex_unlock(&a->mu);
        hash_range(&a->job, from, to);
        pthread_mutex_lock(&a->mu);
    }
}

static void *worker_main(void *arg)
{
    struct accel *a = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stopping && a->generation == seen)
            pthread_cond_wait(&a->work_cv, &a->mu);
        if (a->stopping)
            break;
        seen = a->generation;
        drain(a);
        if (--a->busy == 0)
            pthread_cond_signal(&a->done_cv);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

static int cpu_hash(struct accel *a, const uint8_t *data, const uint64_t *off,
                    size_t n, size_t outlen, uint8_t *out)
{
    struct job j = {data, off, n, outlen, out, 0};
    a->info.cpu_batches++;
    if (a->n_threads == 0 || n < INLINE_ITEMS ||
        off[n] - off[0] < INLINE_BYTES) {
        hash_range(&j, 0, n);
        return 0;
    }
    pthread_mutex_lock(&a->mu);
    a->job = j;
    a->busy = a->n_threads;
    a->generation++;
    pthread_cond_broadcast(&a->work_cv);
    drain(a); /* the caller works too */
    while (a->busy)
        pthread_cond_wait(&a->done_cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

static int check_args(const uint64_t *off, size_t n, size_t outlen)
{
    if (outlen < 1 || outlen > ACCEL_MAX_DIGEST || (n && !off) ||
        n > UINT32_MAX)
        return KV_ERR_INVAL;
    for (size_t i = 0; i < n; i++)
        if (off[i + 1] < off[i])
            return KV_ERR_INVAL;
    return 0;
}

/* Runs a batch on the device; a device error turns the device off. */
static int ocl_run(struct accel *a, const uint8_t *data, const uint64_t *off,
                   size_t n, size_t outlen, uint8_t *out)
{
    int rc = ocl_hash(a->ocl, data, off, n, outlen, out);
    if (rc == 0) {
        a->info.opencl_batches++;
        return 0;
    }
    a->info.opencl_errors++;
    if (rc == KV_ERR_TOO_LARGE)
        return rc; /* an item over the device's allocation limit */
    log_error("accel: %s failed (%s); bulk hashing goes to the CPU from now "
              "on",
              ocl_device(a->ocl), kv_strerror(rc));
    snprintf(a->info.device, sizeof(a->info.device), "none (%.140s failed)",
             ocl_device(a->ocl));
    ocl_close(a->ocl);
    a->ocl = NULL;
    a->info.opencl = false;
    a->info.crossover = 0;
    return rc;
}

int accel_hash_on(struct accel *a, enum accel_backend b, const uint8_t *data,
                  const uint64_t *off, size_t n, size_t outlen, uint8_t *out)
{
    int rc = check_args(off, n, outlen);
    if (rc || n == 0)
        return rc;
    if (b == ACCEL_BACKEND_CPU)
        return cpu_hash(a, data, off, n, outlen, out);
    if (!a->ocl)
        return KV_ERR_UNAVAILABLE;
    return ocl_run(a, data, off, n, outlen, out);
}

int accel_hash(struct accel *a, const uint8_t *data, const uint64_t *off,
               size_t n, size_t outlen, uint8_t *out)
{
    int rc = check_args(off, n, outlen);
    if (rc || n == 0)
        return rc;
    if (a->ocl && a->info.crossover && n >= a->info.crossover &&
        ocl_run(a, data, off, n, outlen, out) == 0)
        return 0;
    return cpu_hash(a, data, off, n, outlen, out);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The best of three runs of a batch on one backend, in seconds; a negative
 * figure when the backend failed. */
static double time_batch(struct accel *a, enum accel_backend b,
                         const uint8_t *data, const uint64_t *off, size_t n,
                         uint8_t *out)
{
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        if (accel_hash_on(a, b, data, off, n, 16, out) != 0)
            return -1;
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    return best;
}

/* auto: batches of leaf-sized items (96 bytes) at growing sizes on both
 * backends. The crossover is the smallest size from which the device wins
 * at every larger size measured; none when it never wins. */
static void calibrate(struct accel *a)
{
    static const size_t sizes[] = {256, 1024, 4096, 16384, 65536, 262144};
    enum { K = sizeof(sizes) / sizeof(*sizes), ITEM = 96 };
    size_t max = sizes[K - 1];
    uint8_t *data = malloc(max * ITEM), *out = malloc(max * 16);
    uint64_t *off = malloc((max + 1) * sizeof(*off));
    if (!data || !out || !off) {
        free(data), free(out), free(off);
        a->info.crossover = 0;
        return;
    }
    randombytes_buf(data, max * ITEM);
    for (size_t i = 0; i <= max; i++)
        off[i] = i * ITEM;
    size_t crossover = 0;
    for (size_t k = 0; k < K && a->ocl; k++) {
        double c = time_batch(a, ACCEL_BACKEND_CPU, data, off, sizes[k], out);
        double g =
            time_batch(a, ACCEL_BACKEND_OPENCL, data, off, sizes[k], out);
        log_info("accel: calibration: %zu items: cpu %.3f ms, opencl %.3f ms",
                 sizes[k], c * 1e3, g * 1e3);
        if (g >= 0 && g < c) {
            if (!crossover)
                crossover = sizes[k];
        } else {
            crossover = 0;
        }
    }
    a->info.crossover = a->ocl ? crossover : 0;
    a->info.cpu_batches = a->info.opencl_batches = 0;
    free(data);
    free(out);
    free(off);
}

int accel_open(struct accel **out, const struct accel_config *cfg)
{
    if (cfg->mode < ACCEL_AUTO || cfg->mode > ACCEL_OPENCL)
        return KV_ERR_INVAL;
    struct accel *a = calloc(1, sizeof(*a));
    if (!a)
        return KV_ERR_NOMEM;
    static const char *const names[] = {"auto", "cpu", "opencl"};
    a->info.mode = names[cfg->mode];
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned threads =
        cfg->threads ? cfg->threads : (online > 0 ? (unsigned)online : 1);
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->work_cv, NULL);
    pthread_cond_init(&a->done_cv, NULL);
    /* The caller is one of the threads. */
    for (unsigned i = 0; i + 1 < threads; i++) {
        if (pthread_create(&a->threads[i], NULL, worker_main, a) != 0)
            break;
        a->n_threads++;
    }
    a->info.threads = a->n_threads + 1;
    snprintf(a->info.device, sizeof(a->info.device), "none");
    if (cfg->mode != ACCEL_CPU) {
        char why[480];
        bool cpu_devices = cfg->mode == ACCEL_OPENCL || cfg->cpu_devices;
        if (ocl_open(&a->ocl, cfg->cache_dir, cpu_devices, why, sizeof(why)) ==
            0) {
            a->info.opencl = true;
            a->info.cached = ocl_from_cache(a->ocl);
            snprintf(a->info.device, sizeof(a->info.device), "%s",
                     ocl_device(a->ocl));
        } else {
            snprintf(a->info.device, sizeof(a->info.device), "none (%.150s)",
                     why);
            log_warn("accel: OpenCL is not used: %s; hashing on %u CPU "
                     "thread(s)",
                     why, a->info.threads);
        }
    }
    if (a->ocl && cfg->mode == ACCEL_OPENCL)
        a->info.crossover = 1;
    else if (a->ocl && cfg->crossover)
        a->info.crossover = cfg->crossover;
    else if (a->ocl)
        calibrate(a);
    *out = a;
    return 0;
}

void accel_close(struct accel *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    pthread_cond_broadcast(&a->work_cv);
    pthread_mutex_unlock(&a->mu);
    for (unsigned i = 0; i < a->n_threads; i++)
        pthread_join(a->threads[i], NULL);
    ocl_close(a->ocl);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->work_cv);
    pthread_cond_destroy(&a->done_cv);
    free(a);
}

const struct accel_info *accel_info(const struct accel *a)
{
    return &a->info;
}
