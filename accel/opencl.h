/* The OpenCL backend of accel (accel.h): one device, one program built from
 * accel/kernels/blake2b.cl (embedded at build time) or loaded from the
 * binary cache. Internal to accel/. */
#ifndef ESSAIM_ACCEL_OPENCL_H
#define ESSAIM_ACCEL_OPENCL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ocl;

/* Picks a device: a GPU or accelerator first; a CPU device only when
 * cpu_devices is set. Builds the kernel (or loads it from cache_dir) and
 * checks it against libsodium. On failure *out is NULL and why says what
 * happened, in one line. @retval 0 ready. @retval KV_ERR_UNAVAILABLE. */
int ocl_open(struct ocl **out, const char *cache_dir, bool cpu_devices,
             char *why, size_t why_len);

void ocl_close(struct ocl *o);

/* "platform: device" */
const char *ocl_device(const struct ocl *o);

/* Whether the program came from the cache rather than a build. */
bool ocl_from_cache(const struct ocl *o);

/* accel_hash on the device. @retval 0. @retval KV_ERR_IO a device error
 * (logged). @retval KV_ERR_NOMEM. */
int ocl_hash(struct ocl *o, const uint8_t *data, const uint64_t *off, size_t n,
             size_t outlen, uint8_t *out);

/* The kernel source, generated from accel/kernels/blake2b.cl. */
extern const char accel_kernel_blake2b[];

#endif
