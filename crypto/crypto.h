/* crypto: every cryptographic operation essaim performs, on libsodium.
 *
 * - key files: one line of standard base64 (with padding) holding 32 bytes,
 *   as WireGuard writes its keys (DESIGN §8). Files readable by group or
 *   others are refused.
 * - Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b (the Noise Protocol Framework,
 *   revision 34): the handshake state machine and the transport ciphers.
 *
 * Nothing here does network I/O: callers hand bytes in and get bytes out. */
#ifndef ESSAIM_CRYPTO_H
#define ESSAIM_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPTO_KEY_BYTES 32
#define CRYPTO_NODE_ID_BYTES 16

/* Noise's hard limit on any message, handshake or transport (§3). */
#define NOISE_MAX_MESSAGE 65535
#define NOISE_TAG_BYTES 16
#define NOISE_DH_BYTES 32
#define NOISE_HASH_BYTES 64

/* Initialises libsodium. Call once before anything else here.
 * @retval 0 Success. @retval KV_ERR_IO libsodium could not start. */
int crypto_init(void);

/* Reads a key file of exactly one base64 line holding 32 bytes into key.
 * @retval 0 Success.
 * @retval KV_ERR_PERM the file is readable or writable by group or others,
 * or owned by a user other than this one and root.
 * @retval KV_ERR_IO the file cannot be opened or read.
 * @retval KV_ERR_INVAL the contents are not one base64 line of 32 bytes. */
int crypto_keyfile_read(const char *path, uint8_t key[CRYPTO_KEY_BYTES]);

/* Writes key to a new file at path with mode 0600 (fails if it exists): to
 * a temporary file first, synced, then linked into place and the directory
 * synced, so that a crash leaves the key whole or absent.
 * @retval 0 Success. @retval KV_ERR_IO the file could not be created. */
int crypto_keyfile_write(const char *path, const uint8_t key[CRYPTO_KEY_BYTES]);

/* Creates a new random 32-byte secret in a new file (kvcli keygen). */
int crypto_keyfile_generate(const char *path);

/* Loads the node's X25519 private key from path, creating it (mode 0600) when
 * absent, and derives the public key.
 * @retval 0 Success; *created says whether a new key was made.
 * @retval as crypto_keyfile_read and crypto_keyfile_write. */
int crypto_node_key_load(const char *path, uint8_t priv[CRYPTO_KEY_BYTES],
                         uint8_t pub[CRYPTO_KEY_BYTES], bool *created);

/* Node id = the first 16 bytes of BLAKE2b-256 over the public key. */
void crypto_node_id(uint8_t id[CRYPTO_NODE_ID_BYTES],
                    const uint8_t pub[CRYPTO_KEY_BYTES]);

/* Derives the X25519 public key of priv. */
int crypto_x25519_public(uint8_t pub[CRYPTO_KEY_BYTES],
                         const uint8_t priv[CRYPTO_KEY_BYTES]);

/* One direction of a Noise transport: a ChaCha20-Poly1305 key and the
 * 64-bit counter nonce n (Noise §5.1). */
struct noise_cipher {
    uint8_t key[CRYPTO_KEY_BYTES];
    uint64_t n;     /* next nonce; 2^64-1 is reserved by Noise */
    uint64_t limit; /* refuse to use n >= limit, so a counter never wraps */
};

/* Encrypts len bytes of pt into out (len + NOISE_TAG_BYTES bytes) with the
 * next nonce. pt and out may be the same buffer.
 * @retval 0 Success. @retval KV_ERR_NONCE the counter reached its limit. */
int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *pt, size_t len,
                         uint8_t *out);

/* Decrypts len bytes of ct (len >= NOISE_TAG_BYTES) into out. The nonce
 * advances only on success, so a replayed, reordered, forged or corrupted
 * message fails here.
 * @retval 0 Success. @retval KV_ERR_AUTH tag mismatch.
 * @retval KV_ERR_NONCE counter exhausted. @retval KV_ERR_TRUNCATED short. */
int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ct, size_t len,
                         uint8_t *out);

/* Wipes the key. */
void noise_cipher_wipe(struct noise_cipher *c);

enum noise_role { NOISE_INITIATOR, NOISE_RESPONDER };

/* The handshake of Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b:
 *   -> e
 *   <- e, ee, s, es
 *   -> s, se, psk
 * Opaque; secrets inside are wiped by noise_hs_free(). */
struct noise_hs;

/* Creates a handshake. psk is the 32-byte pre-shared key, static_priv this
 * side's X25519 private key; both are copied.
 * @retval a handshake, or NULL when out of memory. */
struct noise_hs *noise_hs_new(enum noise_role role, const uint8_t *prologue,
                              size_t prologue_len,
                              const uint8_t psk[CRYPTO_KEY_BYTES],
                              const uint8_t static_priv[CRYPTO_KEY_BYTES]);

/* sizeof(struct noise_hs): what one handshake holds on the heap. */
size_t noise_hs_size(void);

/* Fixes the ephemeral private key instead of a random one: only for the
 * known-answer tests against published vectors. */
void noise_hs_set_ephemeral(struct noise_hs *hs,
                            const uint8_t priv[CRYPTO_KEY_BYTES]);

/* A responder: a second PSK the initiator may have used (a cluster secret
 * being rotated in or out). It is tried when the first fails at message 3;
 * nothing else changes. Ignored on an initiator. */
void noise_hs_accept_psk(struct noise_hs *hs,
                         const uint8_t psk[CRYPTO_KEY_BYTES]);

/* Whether message 3 authenticated under the second PSK. */
bool noise_hs_used_alt(const struct noise_hs *hs);

/* Wipes and frees. NULL is fine. */
void noise_hs_free(struct noise_hs *hs);

/* True when it is this side's turn to write a handshake message. */
bool noise_hs_wants_write(const struct noise_hs *hs);

/* True once all three messages have been exchanged. */
bool noise_hs_done(const struct noise_hs *hs);

/* Writes the next handshake message with payload into out.
 * @retval 0 Success; *out_len is set.
 * @retval KV_ERR_PROTO not this side's turn. @retval KV_ERR_TOO_LARGE. */
int noise_hs_write(struct noise_hs *hs, const uint8_t *payload, size_t plen,
                   uint8_t *out, size_t out_cap, size_t *out_len);

/* Reads the next handshake message from in; its payload goes to payload
 * (payload_cap bytes), its length to *plen.
 * @retval 0 Success. @retval KV_ERR_AUTH decryption failed (wrong PSK, a
 * flipped bit). @retval KV_ERR_TRUNCATED too short. @retval KV_ERR_PROTO out
 * of turn. @retval KV_ERR_TOO_LARGE payload buffer too small. */
int noise_hs_read(struct noise_hs *hs, const uint8_t *in, size_t len,
                  uint8_t *payload, size_t payload_cap, size_t *plen);

/* After the handshake: the two transport ciphers for this side (tx to send,
 * rx to receive) and the peer's static public key.
 * @retval 0 Success. @retval KV_ERR_PROTO handshake not finished. */
int noise_hs_split(struct noise_hs *hs, struct noise_cipher *tx,
                   struct noise_cipher *rx,
                   uint8_t remote_static[CRYPTO_KEY_BYTES]);

/* The handshake hash h, for channel binding (Noise §11.2). */
const uint8_t *noise_hs_hash(const struct noise_hs *hs);

/* ---- sealed gossip datagrams (DESIGN §8) ----
 *
 * packet = version (1) ‖ key id (4) ‖ nonce (24) ‖
 *          XChaCha20-Poly1305(key, nonce, ad = version ‖ key id,
 *                             timestamp ms (8, big-endian) ‖ payload)
 * The key is derived from the cluster secret; its id is a hash of the key,
 * so a node holding the old and the new secret during a rotation opens
 * packets under either. A packet whose timestamp lies outside the replay
 * window, or whose nonce was already seen inside it, is dropped. */

#define SEAL_VERSION 1
#define SEAL_KEY_ID_BYTES 4
#define SEAL_NONCE_BYTES 24
#define SEAL_OVERHEAD (1 + SEAL_KEY_ID_BYTES + SEAL_NONCE_BYTES + 8 + 16)
#define SEAL_MAX_KEYS 4       /* the primary and up to three older ones */
#define SEAL_WINDOW_MS 30000  /* packets may be this old or this far ahead */
#define SEAL_SEEN_SLOTS 16384 /* nonces remembered to drop duplicates */
#define SEAL_SEEN_PROBES 8    /* slots a nonce may take, from its home */

struct seal_key {
    uint8_t key[CRYPTO_KEY_BYTES];
    uint8_t id[SEAL_KEY_ID_BYTES];
};

struct seal_counters {
    uint64_t sealed, opened;
    uint64_t bad_auth;  /* unknown key id, or the tag failed */
    uint64_t replayed;  /* outside the window, or a nonce seen before */
    uint64_t malformed; /* too short, or an unknown version */
};

struct sealer {
    struct seal_key keys[SEAL_MAX_KEYS]; /* keys[0] seals */
    unsigned n_keys;
    struct seal_counters counters;
    struct {
        uint64_t tag;     /* first 8 nonce bytes; 0 marks an empty slot */
        uint64_t seen_ms; /* when it was seen (monotonic clock) */
    } seen[SEAL_SEEN_SLOTS];
};

/* Sets up a sealer whose primary key derives from the cluster secret. */
void seal_init(struct sealer *s, const uint8_t secret[CRYPTO_KEY_BYTES]);

/* Adds an older cluster secret whose packets are still accepted.
 * @retval 0 Success. @retval KV_ERR_FULL the keyring is full. */
int seal_add_old_key(struct sealer *s, const uint8_t secret[CRYPTO_KEY_BYTES]);

/* Seals len bytes of payload into out (len + SEAL_OVERHEAD bytes; the two
 * must not overlap). */
void seal_packet(struct sealer *s, uint64_t now_ms, const uint8_t *payload,
                 size_t len, uint8_t *out);

/* Opens a packet into out, which must hold len bytes; counts the outcome.
 * Nothing of the packet is parsed before the tag has been checked.
 * @retval 0 Success; *out_len is the payload length.
 * @retval KV_ERR_AUTH unknown key or bad tag. @retval KV_ERR_TIMEOUT outside
 * the replay window, or a duplicate. @retval KV_ERR_TRUNCATED too short.
 * @retval KV_ERR_VERSION unknown version. */
int seal_open(struct sealer *s, uint64_t now_ms, const uint8_t *pkt, size_t len,
              uint8_t *out, size_t *out_len);

/* seal_open with the monotonic clock given (mono_ms) instead of read: the
 * replay cache's entries age by it, never by the wall clock. */
int seal_open_at(struct sealer *s, uint64_t now_ms, uint64_t mono_ms,
                 const uint8_t *pkt, size_t len, uint8_t *out, size_t *out_len);

/* Wipes the keys. */
void seal_wipe(struct sealer *s);

#endif
