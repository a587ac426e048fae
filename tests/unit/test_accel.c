/* accel: both backends give libsodium's digests for every item length from
 * 0 to 1024 bytes, every digest length, and batches of 1 to 1,000,000 items;
 * the program binary is cached and reused; bad arguments are refused; auto
 * picks a crossover it can justify. CI runs the OpenCL backend on pocl's CPU
 * device (make deps installs it); set ESSAIM_NO_OPENCL=1 to run only the
 * CPU backend on a machine without any OpenCL platform. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../accel/accel.h"
#include "../../common/common.h"

static char cache[64];

static bool want_opencl(void)
{
    const char *e = getenv("ESSAIM_NO_OPENCL");
    return !(e && *e && strcmp(e, "0") != 0);
}

static struct accel *open_mode(int mode, unsigned threads)
{
    struct accel_config cfg = {.mode = mode,
                               .threads = threads,
                               .cache_dir = cache,
                               .cpu_devices = true};
    struct accel *a = NULL;
    assert_int_equal(accel_open(&a, &cfg), 0);
    assert_non_null(a);
    if (mode == ACCEL_OPENCL && want_opencl()) {
        const struct accel_info *in = accel_info(a);
        if (!in->opencl)
            fail_msg("no OpenCL device: %s", in->device);
    }
    return a;
}

/* Hashes the batch on backend b and compares every digest with libsodium. */
static void check_batch(struct accel *a, enum accel_backend b,
                        const uint8_t *data, const uint64_t *off, size_t n,
                        size_t outlen)
{
    uint8_t *out = malloc(n * outlen);
    assert_non_null(out);
    memset(out, 0xee, n * outlen);
    assert_int_equal(accel_hash_on(a, b, data, off, n, outlen, out), 0);
    for (size_t i = 0; i < n; i++) {
        uint8_t want[ACCEL_MAX_DIGEST];
        crypto_generichash(want, outlen, data + off[i], off[i + 1] - off[i],
                           NULL, 0);
        if (memcmp(want, out + i * outlen, outlen) != 0)
            fail_msg("backend %d: item %zu of %zu (%llu bytes, digest %zu) "
                     "differs",
                     (int)b, i, n, (unsigned long long)(off[i + 1] - off[i]),
                     outlen);
    }
    free(out);
}

static void backends(void (*fn)(struct accel *, enum accel_backend))
{
    struct accel *a = open_mode(ACCEL_CPU, 0);
    fn(a, ACCEL_BACKEND_CPU);
    accel_close(a);
    a = open_mode(ACCEL_CPU, 1);
    fn(a, ACCEL_BACKEND_CPU);
    accel_close(a);
    if (want_opencl()) {
        a = open_mode(ACCEL_OPENCL, 0);
        fn(a, ACCEL_BACKEND_OPENCL);
        accel_close(a);
    }
}

/* Every length from 0 to 1024 bytes in one batch, at digest lengths 1, 16,
 * 32 and 64 (and every other length once). */
static void every_length(struct accel *a, enum accel_backend b)
{
    enum { N = 1025 };
    uint64_t *off = malloc((N + 1) * sizeof(*off));
    uint8_t *data = malloc((size_t)N * 1024 / 2 + N);
    assert_non_null(off);
    assert_non_null(data);
    off[0] = 0;
    for (size_t i = 0; i < N; i++)
        off[i + 1] = off[i] + i;
    randombytes_buf(data, off[N]);
    static const size_t lens[] = {1, 16, 32, 64};
    for (size_t k = 0; k < 4; k++)
        check_batch(a, b, data, off, N, lens[k]);
    for (size_t ol = 2; ol < 64; ol++)
        check_batch(a, b, data + 1000 * ol, off, 3, ol);
    free(off);
    free(data);
}

static void test_every_item_length_matches_libsodium(void **state)
{
    (void)state;
    backends(every_length);
}

/* Batches of 1 to 1,000,000 items of lengths 0..200; the big one crosses
 * the pool's runs and, with 4 KiB items, the device's chunks. */
static void batch_sizes(struct accel *a, enum accel_backend b)
{
    static const size_t sizes[] = {1, 2, 63, 64, 65, 257, 1000, 65537, 1000000};
    size_t max = 1000000;
    uint64_t *off = malloc((max + 1) * sizeof(*off));
    assert_non_null(off);
    off[0] = 0;
    for (size_t i = 0; i < max; i++)
        off[i + 1] = off[i] + (i * 7919) % 201;
    uint8_t *data = malloc(off[max]);
    assert_non_null(data);
    randombytes_buf(data, off[max]);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(*sizes); k++)
        check_batch(a, b, data, off, sizes[k], 16);
    /* A batch that starts part-way into the data. */
    check_batch(a, b, data, off + 12345, 5000, 32);
    free(off);
    free(data);
}

static void test_batches_of_one_to_a_million_items(void **state)
{
    (void)state;
    backends(batch_sizes);
}

static size_t count_cached(void)
{
    DIR *d = opendir(cache);
    size_t n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".bin") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* The first open builds and caches the program; the next reuses it, and a
 * damaged cache file is rebuilt, never trusted. */
static void test_program_binary_is_cached(void **state)
{
    (void)state;
    if (!want_opencl())
        skip();
    /* Whatever earlier tests cached goes: this one starts with none. */
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", cache);
    assert_int_equal(system(cmd), 0);
    struct accel *a = open_mode(ACCEL_OPENCL, 0);
    assert_false(accel_info(a)->cached);
    accel_close(a);
    assert_int_equal(count_cached(), 1);
    a = open_mode(ACCEL_OPENCL, 0);
    assert_true(accel_info(a)->cached);
    accel_close(a);
    assert_int_equal(count_cached(), 1);
    /* Damage it: the kernel is rebuilt and still right. */
    DIR *d = opendir(cache);
    assert_non_null(d);
    char path[400] = "";
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".bin"))
            snprintf(path, sizeof(path), "%s/%s", cache, e->d_name);
    closedir(d);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("not a program", f);
    fclose(f);
    a = open_mode(ACCEL_OPENCL, 0);
    assert_false(accel_info(a)->cached);
    every_length(a, ACCEL_BACKEND_OPENCL);
    accel_close(a);
    /* ...and the damaged file was rewritten with the rebuilt program. */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size > (off_t)strlen("not a program"));
    a = open_mode(ACCEL_OPENCL, 0);
    assert_true(accel_info(a)->cached);
    accel_close(a);
}

static void test_bad_arguments_are_refused(void **state)
{
    (void)state;
    struct accel *a = open_mode(ACCEL_CPU, 2);
    uint8_t data[8] = {0}, out[128];
    uint64_t off[3] = {0, 5, 3}; /* descending */
    assert_int_equal(accel_hash(a, data, off, 2, 16, out), KV_ERR_INVAL);
    uint64_t ok[2] = {0, 8};
    assert_int_equal(accel_hash(a, data, ok, 1, 0, out), KV_ERR_INVAL);
    assert_int_equal(accel_hash(a, data, ok, 1, 65, out), KV_ERR_INVAL);
    assert_int_equal(accel_hash(a, data, ok, 0, 16, out), 0);
    /* No device on the cpu backend. */
    assert_int_equal(
        accel_hash_on(a, ACCEL_BACKEND_OPENCL, data, ok, 1, 16, out),
        KV_ERR_UNAVAILABLE);
    assert_false(accel_info(a)->opencl);
    assert_int_equal(accel_info(a)->crossover, 0);
    accel_close(a);
    struct accel_config cfg = {.mode = 7};
    assert_int_equal(accel_open(&a, &cfg), KV_ERR_INVAL);
    assert_int_equal(accel_mode_parse("opencl"), ACCEL_OPENCL);
    assert_int_equal(accel_mode_parse("gpu"), -1);
}

/* auto measures both backends; whatever it chooses, accel_hash gives the
 * right digests below and above the crossover. */
static void test_auto_calibrates_and_stays_correct(void **state)
{
    (void)state;
    struct accel *a = open_mode(ACCEL_AUTO, 0);
    const struct accel_info *in = accel_info(a);
    if (want_opencl())
        assert_true(in->opencl);
    size_t n = 300000;
    uint64_t *off = malloc((n + 1) * sizeof(*off));
    uint8_t *data = malloc(n * 81), *out = malloc(n * 16);
    assert_non_null(off);
    assert_non_null(data);
    assert_non_null(out);
    for (size_t i = 0; i <= n; i++)
        off[i] = i * 81;
    randombytes_buf(data, n * 81);
    assert_int_equal(accel_hash(a, data, off, n, 16, out), 0);
    assert_int_equal(accel_hash(a, data, off, 10, 16, out + n * 8), 0);
    uint8_t want[16];
    crypto_generichash(want, 16, data + off[n - 1], 81, NULL, 0);
    assert_memory_equal(want, out + (n - 1) * 16, 16);
    crypto_generichash(want, 16, data + off[9], 81, NULL, 0);
    assert_memory_equal(want, out + n * 8 + 9 * 16, 16);
    /* The crossover, when there is one, sent the big batch to the device. */
    if (in->crossover)
        assert_int_equal(in->opencl_batches, 1);
    else
        assert_int_equal(in->cpu_batches, 2);
    free(off);
    free(data);
    free(out);
    accel_close(a);
}

static int setup(void **state)
{
    (void)state;
    snprintf(cache, sizeof(cache), "/tmp/essaim-accel-%ld", (long)getpid());
    return sodium_init() < 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", cache);
    return system(cmd) != 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_item_length_matches_libsodium),
        cmocka_unit_test(test_batches_of_one_to_a_million_items),
        cmocka_unit_test(test_program_binary_is_cached),
        cmocka_unit_test(test_bad_arguments_are_refused),
        cmocka_unit_test(test_auto_calibrates_and_stays_correct),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
