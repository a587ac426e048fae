/* The OpenCL backend of accel. See opencl.h and accel.h. */
#define CL_TARGET_OPENCL_VERSION 120
#include "opencl.h"

#include "../common/common.h"

#include <CL/cl.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One transfer to the device holds at most this many bytes of items. */
#define CHUNK_BYTES (256u << 20)
#define CHUNK_ITEMS (4u << 20)

struct ocl {
    cl_context ctx;
    cl_command_queue q;
    cl_program prog;
    cl_kernel kern;
    cl_mem d_data, d_off, d_out;
    size_t cap_data, cap_off, cap_out;
    size_t max_alloc;
    uint64_t *rebased; /* offsets of the chunk in flight, from 0 */
    size_t cap_rebased;
    char device[160];
    bool from_cache;
};

static const char *const BUILD_OPTIONS = "";

static void dev_string(cl_device_id d, cl_device_info what, char *buf,
                       size_t cap)
{
    buf[0] = '\0';
    if (clGetDeviceInfo(d, what, cap, buf, NULL) != CL_SUCCESS)
        snprintf(buf, cap, "?");
    buf[cap - 1] = '\0';
}

static void plat_string(cl_platform_id p, cl_platform_info what, char *buf,
                        size_t cap)
{
    buf[0] = '\0';
    if (clGetPlatformInfo(p, what, cap, buf, NULL) != CL_SUCCESS)
        snprintf(buf, cap, "?");
    buf[cap - 1] = '\0';
}

/* The first device of the wanted types over all platforms. */
static bool pick_device(cl_device_type types, cl_platform_id *plat,
                        cl_device_id *dev)
{
    cl_platform_id ps[16];
    cl_uint np = 0;
    if (clGetPlatformIDs(16, ps, &np) != CL_SUCCESS)
        return false;
    for (cl_uint i = 0; i < np && i < 16; i++) {
        cl_uint nd = 0;
        if (clGetDeviceIDs(ps[i], types, 1, dev, &nd) == CL_SUCCESS && nd > 0) {
            *plat = ps[i];
            return true;
        }
    }
    return false;
}

/* The cache file for this source on this device and driver. */
static void cache_path(char *out, size_t cap, const char *dir, cl_platform_id p,
                       cl_device_id d)
{
    char s[4][256];
    plat_string(p, CL_PLATFORM_NAME, s[0], sizeof(s[0]));
    plat_string(p, CL_PLATFORM_VERSION, s[1], sizeof(s[1]));
    dev_string(d, CL_DEVICE_NAME, s[2], sizeof(s[2]));
    dev_string(d, CL_DRIVER_VERSION, s[3], sizeof(s[3]));
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 16);
    crypto_generichash_update(&st, (const uint8_t *)accel_kernel_blake2b,
                              strlen(accel_kernel_blake2b) + 1);
    crypto_generichash_update(&st, (const uint8_t *)BUILD_OPTIONS,
                              strlen(BUILD_OPTIONS) + 1);
    for (int i = 0; i < 4; i++)
        crypto_generichash_update(&st, (const uint8_t *)s[i], strlen(s[i]) + 1);
    uint8_t h[16];
    crypto_generichash_final(&st, h, sizeof(h));
    char hex[33];
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    snprintf(out, cap, "%s/blake2b-%s.bin", dir, hex);
}

static cl_program load_cached(struct ocl *o, cl_device_id d, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    cl_program prog = NULL;
    uint8_t *bin = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    if (len > 0 && len < (64L << 20) && fseek(f, 0, SEEK_SET) == 0 &&
        (bin = malloc((size_t)len)) &&
        fread(bin, 1, (size_t)len, f) == (size_t)len) {
        size_t sz = (size_t)len;
        const unsigned char *bp = bin;
        cl_int st = CL_SUCCESS, err;
        prog = clCreateProgramWithBinary(o->ctx, 1, &d, &sz, &bp, &st, &err);
        if (prog && (err != CL_SUCCESS || st != CL_SUCCESS ||
                     clBuildProgram(prog, 1, &d, BUILD_OPTIONS, NULL, NULL) !=
                         CL_SUCCESS)) {
            clReleaseProgram(prog);
            prog = NULL;
        }
    }
    if (!prog)
        log_warn("accel: cached kernel %s is unusable; building from source",
                 path);
    free(bin);
    fclose(f);
    return prog;
}

/* Writes the built program's binary to path (through a temporary file, so
 * a crash never leaves half a binary). Failure only costs the next start a
 * build. */
static void save_cached(cl_program prog, const char *dir, const char *path)
{
    size_t sz = 0;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof(sz), &sz,
                         NULL) != CL_SUCCESS ||
        sz == 0)
        return;
    unsigned char *bin = malloc(sz);
    if (!bin)
        return;
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
    FILE *f = NULL;
    if (clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof(bin), &bin, NULL) ==
            CL_SUCCESS &&
        (mkdir(dir, 0700) == 0 || errno == EEXIST) && (f = fopen(tmp, "wb"))) {
        bool ok = fwrite(bin, 1, sz, f) == sz;
        ok &= fclose(f) == 0;
        if (!ok || rename(tmp, path) != 0) {
            log_warn("accel: cannot cache the kernel in %s: %s", path,
                     strerror(errno));
            unlink(tmp);
        }
    }
    free(bin);
}

static cl_program build_source(struct ocl *o, cl_device_id d, char *why,
                               size_t why_len)
{
    const char *src = accel_kernel_blake2b;
    cl_int err;
    cl_program prog = clCreateProgramWithSource(o->ctx, 1, &src, NULL, &err);
    if (!prog) {
        snprintf(why, why_len, "cannot create the program (OpenCL error %d)",
                 (int)err);
        return NULL;
    }
    err = clBuildProgram(prog, 1, &d, BUILD_OPTIONS, NULL, NULL);
    if (err != CL_SUCCESS) {
        char blog[512] = "";
        clGetProgramBuildInfo(prog, d, CL_PROGRAM_BUILD_LOG, sizeof(blog) - 1,
                              blog, NULL);
        blog[sizeof(blog) - 1] = '\0';
        for (char *c = blog; *c; c++)
            if (*c == '\n')
                *c = ' ';
        snprintf(why, why_len, "the kernel failed to build (error %d): %.300s",
                 (int)err, blog);
        clReleaseProgram(prog);
        return NULL;
    }
    return prog;
}

/* Hashes items of many lengths on the device and compares with libsodium. */
static bool self_test(struct ocl *o)
{
    enum { N = 300 };
    static const size_t outlens[] = {16, 32, 64, 1};
    uint64_t off[N + 1];
    off[0] = 0;
    for (size_t i = 0; i < N; i++)
        off[i + 1] = off[i] + (i < 260 ? i : 129 * (i - 259));
    uint8_t *data = malloc(off[N]), *out = malloc(N * 64);
    bool ok = data && out;
    for (size_t i = 0; ok && i < off[N]; i++)
        data[i] = (uint8_t)(i * 131 + 7);
    for (size_t k = 0; ok && k < sizeof(outlens) / sizeof(*outlens); k++) {
        size_t ol = outlens[k];
        ok = ocl_hash(o, data, off, N, ol, out) == 0;
        for (size_t i = 0; ok && i < N; i++) {
            uint8_t want[64];
            crypto_generichash(want, ol, data + off[i], off[i + 1] - off[i],
                               NULL, 0);
            ok = memcmp(want, out + i * ol, ol) == 0;
        }
    }
    free(data);
    free(out);
    return ok;
}

int ocl_open(struct ocl **out, const char *cache_dir, bool cpu_devices,
             char *why, size_t why_len)
{
    *out = NULL;
    cl_platform_id plat;
    cl_device_id dev;
    cl_uint np = 0;
    if (clGetPlatformIDs(0, NULL, &np) != CL_SUCCESS || np == 0) {
        snprintf(why, why_len, "no OpenCL platform is installed");
        return KV_ERR_UNAVAILABLE;
    }
    if (!pick_device(CL_DEVICE_TYPE_GPU | CL_DEVICE_TYPE_ACCELERATOR, &plat,
                     &dev) &&
        !(cpu_devices && pick_device(CL_DEVICE_TYPE_CPU, &plat, &dev))) {
        snprintf(why, why_len,
                 cpu_devices ? "no OpenCL device"
                             : "no OpenCL GPU or accelerator (CPU devices "
                               "are used only with --accel opencl)");
        return KV_ERR_UNAVAILABLE;
    }
    struct ocl *o = calloc(1, sizeof(*o));
    if (!o) {
        snprintf(why, why_len, "out of memory");
        return KV_ERR_NOMEM;
    }
    char pname[60], dname[96];
    plat_string(plat, CL_PLATFORM_NAME, pname, sizeof(pname));
    dev_string(dev, CL_DEVICE_NAME, dname, sizeof(dname));
    snprintf(o->device, sizeof(o->device), "%s: %s", pname, dname);
    cl_ulong max_alloc = 0;
    clGetDeviceInfo(dev, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof(max_alloc),
                    &max_alloc, NULL);
    o->max_alloc =
        max_alloc && max_alloc < CHUNK_BYTES ? (size_t)max_alloc : CHUNK_BYTES;
    cl_int err;
    o->ctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
    if (o->ctx)
        o->q = clCreateCommandQueue(o->ctx, dev, 0, &err);
    if (!o->q) {
        snprintf(why, why_len, "%s: cannot create a context (error %d)",
                 o->device, (int)err);
        ocl_close(o);
        return KV_ERR_UNAVAILABLE;
    }
    char path[4096] = "";
    if (cache_dir) {
        cache_path(path, sizeof(path), cache_dir, plat, dev);
        o->prog = load_cached(o, dev, path);
        o->from_cache = o->prog != NULL;
    }
    if (!o->prog) {
        char bwhy[400];
        o->prog = build_source(o, dev, bwhy, sizeof(bwhy));
        if (!o->prog) {
            snprintf(why, why_len, "%s: %s", o->device, bwhy);
            ocl_close(o);
            return KV_ERR_UNAVAILABLE;
        }
        if (cache_dir)
            save_cached(o->prog, cache_dir, path);
    }
    o->kern = clCreateKernel(o->prog, "blake2b_batch", &err);
    if (!o->kern) {
        snprintf(why, why_len, "%s: no kernel blake2b_batch (error %d)",
                 o->device, (int)err);
        ocl_close(o);
        return KV_ERR_UNAVAILABLE;
    }
    if (!self_test(o)) {
        snprintf(why, why_len,
                 "%s: the kernel's digests differ from libsodium's", o->device);
        ocl_close(o);
        return KV_ERR_UNAVAILABLE;
    }
    *out = o;
    return 0;
}

void ocl_close(struct ocl *o)
{
    if (!o)
        return;
    if (o->d_data)
        clReleaseMemObject(o->d_data);
    if (o->d_off)
        clReleaseMemObject(o->d_off);
    if (o->d_out)
        clReleaseMemObject(o->d_out);
    if (o->kern)
        clReleaseKernel(o->kern);
    if (o->prog)
        clReleaseProgram(o->prog);
    if (o->q)
        clReleaseCommandQueue(o->q);
    if (o->ctx)
        clReleaseContext(o->ctx);
    free(o->rebased);
    free(o);
}

const char *ocl_device(const struct ocl *o)
{
    return o->device;
}

bool ocl_from_cache(const struct ocl *o)
{
    return o->from_cache;
}

/* Makes *buf hold at least need bytes (at least 1). */
static int ensure(struct ocl *o, cl_mem *buf, size_t *cap, size_t need,
                  cl_mem_flags flags)
{
    if (need == 0)
        need = 1;
    if (*buf && *cap >= need)
        return 0;
    if (*buf)
        clReleaseMemObject(*buf);
    size_t sz = need + need / 4;
    cl_int err;
    *buf = clCreateBuffer(o->ctx, flags, sz, NULL, &err);
    *cap = *buf ? sz : 0;
    if (!*buf) {
        log_error("accel: %s: cannot allocate %zu bytes on the device "
                  "(error %d)",
                  o->device, sz, (int)err);
        return KV_ERR_IO;
    }
    return 0;
}

static int run_chunk(struct ocl *o, const uint8_t *data, const uint64_t *off,
                     size_t n, size_t outlen, uint8_t *out)
{
    uint64_t base = off[0];
    size_t bytes = (size_t)(off[n] - base);
    if (n + 1 > o->cap_rebased) {
        uint64_t *r = realloc(o->rebased, (n + 1) * sizeof(*r));
        if (!r)
            return KV_ERR_NOMEM;
        o->rebased = r;
        o->cap_rebased = n + 1;
    }
    for (size_t i = 0; i <= n; i++)
        o->rebased[i] = off[i] - base;
    int rc = ensure(o, &o->d_data, &o->cap_data, bytes, CL_MEM_READ_ONLY);
    if (rc == 0)
        rc = ensure(o, &o->d_off, &o->cap_off, (n + 1) * sizeof(uint64_t),
                    CL_MEM_READ_ONLY);
    if (rc == 0)
        rc = ensure(o, &o->d_out, &o->cap_out, n * outlen, CL_MEM_WRITE_ONLY);
    if (rc)
        return rc;
    cl_int err = CL_SUCCESS;
    if (bytes)
        err = clEnqueueWriteBuffer(o->q, o->d_data, CL_FALSE, 0, bytes,
                                   data + base, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clEnqueueWriteBuffer(o->q, o->d_off, CL_FALSE, 0,
                                   (n + 1) * sizeof(uint64_t), o->rebased, 0,
                                   NULL, NULL);
    cl_uint cn = (cl_uint)n, col = (cl_uint)outlen;
    if (err == CL_SUCCESS)
        err = clSetKernelArg(o->kern, 0, sizeof(cl_mem), &o->d_data);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(o->kern, 1, sizeof(cl_mem), &o->d_off);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(o->kern, 2, sizeof(cl_uint), &cn);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(o->kern, 3, sizeof(cl_uint), &col);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(o->kern, 4, sizeof(cl_mem), &o->d_out);
    size_t local = 64, global = (n + local - 1) / local * local;
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(o->q, o->kern, 1, NULL, &global, &local, 0,
                                     NULL, NULL);
    if (err == CL_SUCCESS)
        err = clEnqueueReadBuffer(o->q, o->d_out, CL_TRUE, 0, n * outlen, out,
                                  0, NULL, NULL);
    if (err != CL_SUCCESS) {
        clFinish(o->q);
        log_error("accel: %s: a batch of %zu items failed (OpenCL error %d)",
                  o->device, n, (int)err);
        return KV_ERR_IO;
    }
    return 0;
}

int ocl_hash(struct ocl *o, const uint8_t *data, const uint64_t *off, size_t n,
             size_t outlen, uint8_t *out)
{
    size_t i = 0;
    while (i < n) {
        /* The longest run of items from i within one chunk's bounds. */
        size_t j = i + 1;
        if (off[j] - off[i] > o->max_alloc)
            return KV_ERR_TOO_LARGE;
        while (j < n && j - i < CHUNK_ITEMS &&
               off[j + 1] - off[i] <= o->max_alloc)
            j++;
        int rc = run_chunk(o, data, off + i, j - i, outlen, out + i * outlen);
        if (rc)
            return rc;
        i = j;
    }
    return 0;
}
