/* common: the bottom of essaim's dependency graph.
 *
 * One enum of error codes shared by every module (functions return 0 or a
 * negative kv_err), kv_strerror() to turn any code into text, a one-line
 * logger with levels, and the big-endian helpers used by every on-disk and
 * on-wire format. Depends on libc alone. */
#ifndef ESSAIM_COMMON_H
#define ESSAIM_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Every error any essaim function can return. Values are negative so that
 * "return 0 on success, a kv_err on failure" reads naturally; the numbers are
 * also sent on the wire in responses, so never renumber one. */
enum kv_err {
    KV_OK = 0,
    KV_ERR_NOMEM = -1,         /* an allocation failed */
    KV_ERR_IO = -2,            /* a system call failed; see errno in the log */
    KV_ERR_INVAL = -3,         /* bad argument or malformed input */
    KV_ERR_NOT_FOUND = -4,     /* no such key (or the key was deleted) */
    KV_ERR_TOO_LARGE = -5,     /* a key, value, frame or field over its limit */
    KV_ERR_AUTH = -6,          /* authentication failed (wrong key, bad tag) */
    KV_ERR_PERM = -7,          /* a key file readable by group or others */
    KV_ERR_CORRUPT = -8,       /* stored data failed its checksum */
    KV_ERR_FULL = -9,          /* storage map or disk is full */
    KV_ERR_READONLY = -10,     /* storage cannot be written */
    KV_ERR_TIMEOUT = -11,      /* a deadline passed */
    KV_ERR_UNAVAILABLE = -12,  /* too few replicas or the node is stopping */
    KV_ERR_PROTO = -13,        /* a peer broke the protocol */
    KV_ERR_TRUNCATED = -14,    /* input ended in the middle of an item */
    KV_ERR_TRAILING = -15,     /* bytes left after a complete item */
    KV_ERR_TYPE = -16,         /* a field has the wrong msgpack type */
    KV_ERR_MISSING = -17,      /* a message lacks a required field */
    KV_ERR_UNKNOWN_TYPE = -18, /* unknown message type */
    KV_ERR_VERSION = -19,      /* unsupported protocol or format version */
    KV_ERR_NONCE = -20,        /* a cipher's counter is exhausted */
    KV_ERR_CLOSED = -21,       /* the connection was closed */
    KV_ERR_BUSY = -22,         /* too many connections or requests */
    KV_ERR_CLOCK = -23,        /* a peer's clock is off by more than allowed */
    KV_ERR__LAST = -24
};

/* Returns a static, human-readable text for any kv_err (or for an unknown
 * value, a generic text). Never NULL. */
const char *kv_strerror(int err);

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level that log_msg() prints (default LOG_INFO). */
void log_set_level(enum log_level level);

/* Sets a short name printed on every line (for example the listen address),
 * so that several nodes logging to one terminal can be told apart. The string
 * is copied. */
void log_set_name(const char *name);

/* Writes one line to stderr: ISO-8601 UTC time, level, name, message.
 * Thread-safe: each line is written with one write(2). Never pass a secret. */
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

static inline void be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline void be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t be32_get(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | p[3];
}

/* Monotonic clock in milliseconds (CLOCK_MONOTONIC). */
uint64_t clock_mono_ms(void);

/* Wall clock in milliseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t clock_wall_ms(void);

/* Writes the lowercase hex of n bytes into out (2n+1 bytes with the NUL). */
void hex_encode(char *out, const uint8_t *in, size_t n);

#endif
