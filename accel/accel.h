/* accel: bulk hashing (DESIGN §10).
 *
 * One call hashes a batch of items with BLAKE2b, bit-identical to libsodium's
 * crypto_generichash (no key) with the same digest length. Two backends do
 * the work: `cpu`, libsodium on a pool of worker threads, and `opencl`, the
 * kernel in accel/kernels/blake2b.cl on an OpenCL device, built at start and
 * its program binary cached on disk. In `auto` mode accel_open measures both
 * and sends a batch to the device only when it holds at least the measured
 * crossover number of items, and only if the device beat the CPU at all.
 *
 * No OpenCL platform, a kernel that fails to build or to match libsodium on
 * its self-test, or a device error later: one log line, and the CPU backend
 * does the work from then on. A batch is never answered with a wrong digest.
 *
 * An accel is used from one thread at a time (the node's loop). */
#ifndef ESSAIM_ACCEL_H
#define ESSAIM_ACCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ACCEL_MAX_DIGEST 64

enum accel_mode { ACCEL_AUTO = 0, ACCEL_CPU = 1, ACCEL_OPENCL = 2 };
enum accel_backend { ACCEL_BACKEND_CPU = 0, ACCEL_BACKEND_OPENCL = 1 };

struct accel_config {
    int mode;              /* enum accel_mode */
    unsigned threads;      /* cpu workers; 0: one per online CPU */
    const char *cache_dir; /* where program binaries are kept; NULL: none */
    /* auto also calibrates OpenCL devices of type CPU (pocl). Off for the
     * node: such a device shares the cores the cpu backend already uses. */
    bool cpu_devices;
    /* auto: use this crossover instead of measuring one (0: measure). */
    size_t crossover;
};

struct accel_info {
    const char *mode; /* "auto", "cpu" or "opencl" as asked */
    bool opencl;      /* an OpenCL device is ready */
    bool cached;      /* its program came from the cache, not a build */
    char device[160]; /* its platform and name, or why there is none */
    unsigned threads; /* cpu workers */
    /* Batches of at least this many items go to the device; 0: none do. */
    size_t crossover;
    uint64_t cpu_batches, opencl_batches, opencl_errors;
};

struct accel;

/* Opens accel as cfg asks; a missing or broken device is not an error (see
 * above). @retval 0 Success. @retval KV_ERR_NOMEM. @retval KV_ERR_INVAL. */
int accel_open(struct accel **out, const struct accel_config *cfg);

void accel_close(struct accel *a);

/* Hashes n items: item i is data[off[i] .. off[i + 1]) (off holds n + 1
 * offsets, ascending), its digest of outlen bytes (1..64) goes to
 * out + i * outlen.
 * @retval 0 Success. @retval KV_ERR_INVAL bad lengths or offsets.
 * @retval KV_ERR_NOMEM. */
int accel_hash(struct accel *a, const uint8_t *data, const uint64_t *off,
               size_t n, size_t outlen, uint8_t *out);

/* The same on a chosen backend (tests and the benchmark). On the OpenCL
 * backend without a device it answers KV_ERR_UNAVAILABLE; after a device
 * error it answers that error's code and hashes nothing. */
int accel_hash_on(struct accel *a, enum accel_backend b, const uint8_t *data,
                  const uint64_t *off, size_t n, size_t outlen, uint8_t *out);

/* What accel_open chose, and counters since. */
const struct accel_info *accel_info(const struct accel *a);

/* Parses "auto", "cpu" or "opencl"; -1 when none. */
int accel_mode_parse(const char *s);

#endif
