/* bench_accel: accel's figures for make bench (DESIGN §10, §11).
 *
 * For each backend (cpu with 1 thread, cpu with every thread, opencl) it
 * hashes batches of 1, 64, 1k, 64k and 1M items of 64 B and of 4 KiB and
 * prints hashes/s and GB/s; then the crossover auto chose; then the time to
 * build the anti-entropy trees over 1M stored keys through each backend.
 *
 *   bench_accel [--max-items N] [--tree-keys N] [--no-opencl]
 *
 * --max-items bounds the batch sizes (a quick run); the 1M x 4 KiB batch
 * needs 4 GiB of memory. */
#include "../../accel/accel.h"
#include "../../common/common.h"
#include "../../node/ae.h"
#include "../../node/ring.h"
#include "../fake/env.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct backend {
    const char *name;
    struct accel *a;
    enum accel_backend b;
};

/* Runs the batch until 0.3 s have passed (at least once); returns seconds
 * per run, or a negative figure on failure. */
static double time_batch(const struct backend *be, const uint8_t *data,
                         const uint64_t *off, size_t n, uint8_t *out)
{
    double t0 = now_s(), t = 0;
    unsigned runs = 0;
    do {
        if (accel_hash_on(be->a, be->b, data, off, n, 16, out) != 0)
            return -1;
        runs++;
        t = now_s() - t0;
    } while (t < 0.3);
    return t / runs;
}

static void batches(const struct backend *be, size_t n_be, size_t max_items)
{
    static const size_t counts[] = {1, 64, 1024, 65536, 1048576};
    static const size_t sizes[] = {64, 4096};
    printf("\naccel: BLAKE2b-128 batches, hashes/s and GB/s of input\n");
    printf("%-14s %8s %10s %14s %10s\n", "backend", "item", "items", "hashes/s",
           "GB/s");
    for (size_t z = 0; z < 2; z++) {
        size_t item = sizes[z], maxn = 0;
        for (size_t c = 0; c < 5; c++)
            if (counts[c] <= max_items)
                maxn = counts[c];
        uint8_t *data = malloc(maxn * item);
        uint64_t *off = malloc((maxn + 1) * sizeof(*off));
        uint8_t *out = malloc(maxn * 16);
        if (!data || !off || !out) {
            printf("(not enough memory for %zu items of %zu B)\n", maxn, item);
            free(data), free(off), free(out);
            continue;
        }
        for (size_t i = 0; i < maxn * item; i++)
            data[i] = (uint8_t)(i * 2654435761u >> 13);
        for (size_t i = 0; i <= maxn; i++)
            off[i] = i * item;
        for (size_t k = 0; k < n_be; k++) {
            for (size_t c = 0; c < 5 && counts[c] <= maxn; c++) {
                double t = time_batch(&be[k], data, off, counts[c], out);
                if (t < 0) {
                    printf("%-14s %7zuB %10zu %14s %10s\n", be[k].name, item,
                           counts[c], "failed", "-");
                    continue;
                }
                printf("%-14s %7zuB %10zu %14.0f %10.3f\n", be[k].name, item,
                       counts[c], (double)counts[c] / t,
                       (double)counts[c] * (double)item / t / 1e9);
                fflush(stdout);
            }
        }
        free(data);
        free(off);
        free(out);
    }
}

/* ---- the tree of 1M keys ---- */

static struct storage *tree_st;
static struct accel *tree_accel;

static int t_hash(void *ctx, const uint8_t *data, const uint64_t *off, size_t n,
                  size_t outlen, uint8_t *out)
{
    (void)ctx;
    return accel_hash(tree_accel, data, off, n, outlen, out);
}

static int fill_store(const char *dir, size_t keys)
{
    if (storage_open(&tree_st, dir, (uint64_t)keys * 400 + (64u << 20), NULL,
                     NULL) != 0)
        return -1;
    enum { BATCH = 8192 };
    struct storage_write *w = calloc(BATCH, sizeof(*w));
    char(*k)[24] = calloc(BATCH, 24);
    uint8_t value[100];
    memset(value, 'v', sizeof(value));
    if (!w || !k)
        return -1;
    for (size_t base = 0; base < keys; base += BATCH) {
        size_t n = keys - base < BATCH ? keys - base : BATCH;
        for (size_t i = 0; i < n; i++) {
            int len = snprintf(k[i], 24, "tree-%zu", base + i);
            w[i] = (struct storage_write){.key = (const uint8_t *)k[i],
                                          .key_len = (size_t)len,
                                          .value = value,
                                          .value_len = sizeof(value),
                                          .version = 1};
            storage_submit(tree_st, &w[i]);
        }
        for (size_t got = 0; got < n;) {
            struct storage_write *d = storage_completed(tree_st);
            if (!d) {
                usleep(500);
                continue;
            }
            for (; d; d = d->next)
                got++;
        }
    }
    free(w);
    free(k);
    return 0;
}

static void tree_build(const struct backend *be, size_t n_be, size_t keys)
{
    char dir[] = "/tmp/essaim-bench-tree-XXXXXX";
    if (!mkdtemp(dir))
        return;
    printf("\nanti-entropy: building the trees of %zu stored keys (100 B "
           "values)\n",
           keys);
    double t0 = now_s();
    if (fill_store(dir, keys) != 0) {
        printf("(could not fill the store)\n");
        return;
    }
    printf("%-14s %10.2f s (storing them, for reference)\n", "load",
           now_s() - t0);
    struct ring_node rn[2];
    memset(rn, 0, sizeof(rn));
    memset(rn[0].id, 1, sizeof(rn[0].id));
    memset(rn[1].id, 2, sizeof(rn[1].id));
    struct ring *ring = ring_build(rn, 2, RING_DEFAULT_VNODES);
    struct ae_config cfg;
    ae_config_defaults(&cfg);
    ring_placement_set_n(&cfg.placement, 2);
    static struct fake_env fe; /* nothing is sent: a build only reads */
    fake_env_init(&fe, &storage_lmdb, tree_st);
    fe.env.hash = t_hash;
    for (size_t k = 0; k < n_be; k++) {
        tree_accel = be[k].a;
        struct ae *ae = ae_new(&cfg, &fe.env, rn[0].id);
        ae_set_ring(ae, ring);
        uint8_t root[AE_HASH_BYTES];
        /* Force the backend: a crossover of 1 for opencl, none for cpu. */
        t0 = now_s();
        int rc = ae_root(ae, rn[1].id, 0, root);
        double t = now_s() - t0;
        if (rc)
            printf("%-14s failed: %s\n", be[k].name, kv_strerror(rc));
        else
            printf("%-14s %10.2f s (%.0f keys/s)\n", be[k].name, t,
                   (double)keys / t);
        ae_free(ae);
    }
    ring_free(ring);
    storage_close(tree_st);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_accel: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    size_t max_items = 1048576, tree_keys = 1000000;
    bool opencl = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--max-items") == 0 && i + 1 < argc)
            max_items = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--tree-keys") == 0 && i + 1 < argc)
            tree_keys = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--no-opencl") == 0)
            opencl = false;
        else {
            fprintf(stderr, "usage: bench_accel [--max-items N] "
                            "[--tree-keys N] [--no-opencl]\n");
            return 2;
        }
    }
    if (sodium_init() < 0)
        return 1;
    log_set_level(LOG_ERROR);
    char cache[] = "/tmp/essaim-bench-cache-XXXXXX";
    if (!mkdtemp(cache))
        return 1;
    struct backend be[3];
    size_t n_be = 0;
    struct accel_config one = {.mode = ACCEL_CPU, .threads = 1};
    struct accel_config all = {.mode = ACCEL_CPU};
    struct accel_config cl = {.mode = ACCEL_OPENCL, .cache_dir = cache};
    struct accel *a1, *aa, *ac = NULL;
    if (accel_open(&a1, &one) || accel_open(&aa, &all))
        return 1;
    be[n_be++] = (struct backend){"cpu-1", a1, ACCEL_BACKEND_CPU};
    char all_name[32];
    snprintf(all_name, sizeof(all_name), "cpu-%u", accel_info(aa)->threads);
    be[n_be++] = (struct backend){all_name, aa, ACCEL_BACKEND_CPU};
    if (opencl && accel_open(&ac, &cl) == 0 && accel_info(ac)->opencl)
        be[n_be++] = (struct backend){"opencl", ac, ACCEL_BACKEND_OPENCL};
    printf("accel: cpu threads %u; OpenCL device: %s\n",
           accel_info(aa)->threads,
           ac ? accel_info(ac)->device : "not tried (--no-opencl)");
    batches(be, n_be, max_items);

    /* What auto chooses: over any device (CPU devices included), and as
     * kvnode runs it (GPUs and accelerators only). */
    printf("\naccel auto:\n");
    for (int cpu_devices = 1; cpu_devices >= 0 && opencl; cpu_devices--) {
        struct accel_config au = {
            .mode = ACCEL_AUTO, .cache_dir = cache, .cpu_devices = cpu_devices};
        struct accel *a;
        if (accel_open(&a, &au) != 0)
            continue;
        const struct accel_info *in = accel_info(a);
        if (in->crossover)
            printf("  %-34s device %s: batches of %zu items or more go to "
                   "it\n",
                   cpu_devices ? "any device:" : "as kvnode (GPUs only):",
                   in->device, in->crossover);
        else
            printf("  %-34s device %s: the CPU is used for every batch\n",
                   cpu_devices ? "any device:" : "as kvnode (GPUs only):",
                   in->device);
        accel_close(a);
    }
    if (tree_keys)
        tree_build(be, n_be, tree_keys);
    accel_close(a1);
    accel_close(aa);
    accel_close(ac);
    char cmd[96];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", cache);
    return system(cmd) != 0;
}
