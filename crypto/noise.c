/* Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b on libsodium primitives.
 *
 * The code follows the Noise Protocol Framework (revision 34) step by step:
 * CipherState (§5.1), SymmetricState (§5.2), HandshakeState (§5.3), the XX
 * pattern (§7.5) with the psk3 modifier (§9). Read it with the spec beside
 * it: each function is named after the spec's operation.
 *
 *   DH      X25519            crypto_scalarmult
 *   cipher  ChaCha20-Poly1305 crypto_aead_chacha20poly1305_ietf, nonce =
 *                             32 zero bits || 64-bit little-endian counter
 *   hash    BLAKE2b-512       crypto_generichash, HASHLEN 64, BLOCKLEN 128
 *   HKDF    HMAC-BLAKE2b as §4.3 defines it (RFC 2104 over BLAKE2b) */
#include "crypto.h"

#include "../common/common.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define PROTOCOL_NAME "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b"
#define BLOCKLEN 128

struct noise_hs {
    enum noise_role role;
    int msg_index; /* messages processed so far: 0..3 */

    /* SymmetricState */
    uint8_t ck[NOISE_HASH_BYTES];
    uint8_t h[NOISE_HASH_BYTES];
    struct noise_cipher cs;
    bool has_key;

    uint8_t psk[CRYPTO_KEY_BYTES];
    /* A responder's second PSK, tried when the first fails message 3. */
    uint8_t alt_psk[CRYPTO_KEY_BYTES];
    bool has_alt, used_alt;
    uint8_t s_priv[NOISE_DH_BYTES], s_pub[NOISE_DH_BYTES];
    uint8_t e_priv[NOISE_DH_BYTES], e_pub[NOISE_DH_BYTES];
    bool e_fixed; /* e set by noise_hs_set_ephemeral (test vectors) */
    uint8_t rs[NOISE_DH_BYTES], re[NOISE_DH_BYTES];
};

/* ---- CipherState (§5.1) ---- */

static void make_nonce(uint8_t nonce[12], uint64_t n)
{
    memset(nonce, 0, 4);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (uint8_t)(n >> (8 * i));
}

static int encrypt_with_ad(struct noise_cipher *c, const uint8_t *ad,
                           size_t adlen, const uint8_t *pt, size_t len,
                           uint8_t *out)
{
    if (c->n >= c->limit)
        return KV_ERR_NONCE;
    uint8_t nonce[12];
    make_nonce(nonce, c->n);
    unsigned long long clen;
    crypto_aead_chacha20poly1305_ietf_encrypt(out, &clen, pt, len, ad, adlen,
                                              NULL, nonce, c->key);
    c->n++;
    return 0;
}

static int decrypt_with_ad(struct noise_cipher *c, const uint8_t *ad,
                           size_t adlen, const uint8_t *ct, size_t len,
                           uint8_t *out)
{
    if (len < NOISE_TAG_BYTES)
        return KV_ERR_TRUNCATED;
    if (c->n >= c->limit)
        return KV_ERR_NONCE;
    uint8_t nonce[12];
    make_nonce(nonce, c->n);
    unsigned long long plen;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(out, &plen, NULL, ct, len, ad,
                                                  adlen, nonce, c->key) != 0)
        return KV_ERR_AUTH;
    c->n++;
    return 0;
}

int noise_cipher_encrypt(struct noise_cipher *c, const uint8_t *pt, size_t len,
                         uint8_t *out)
{
    return encrypt_with_ad(c, NULL, 0, pt, len, out);
}

int noise_cipher_decrypt(struct noise_cipher *c, const uint8_t *ct, size_t len,
                         uint8_t *out)
{
    return decrypt_with_ad(c, NULL, 0, ct, len, out);
}

void noise_cipher_wipe(struct noise_cipher *c)
{
    sodium_memzero(c, sizeof(*c));
}

static void cipher_init(struct noise_cipher *c, const uint8_t key[32])
{
    memcpy(c->key, key, CRYPTO_KEY_BYTES);
    c->n = 0;
    /* 2^64-1 is reserved (§5.1); stop one short so no counter can wrap. */
    c->limit = UINT64_MAX - 1;
}

/* ---- hash, HMAC and HKDF (§4.3) ---- */

static void hash2(uint8_t out[NOISE_HASH_BYTES], const uint8_t *a, size_t alen,
                  const uint8_t *b, size_t blen)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, NOISE_HASH_BYTES);
    crypto_generichash_update(&st, a, alen);
    if (blen)
        crypto_generichash_update(&st, b, blen);
    crypto_generichash_final(&st, out, NOISE_HASH_BYTES);
    sodium_memzero(&st, sizeof(st));
}

/* HMAC-HASH(key, data) per RFC 2104; key is always HASHLEN bytes here. */
static void hmac(uint8_t out[NOISE_HASH_BYTES],
                 const uint8_t key[NOISE_HASH_BYTES], const uint8_t *data,
                 size_t len, const uint8_t *data2, size_t len2)
{
    uint8_t pad[BLOCKLEN], inner[NOISE_HASH_BYTES];
    crypto_generichash_state st;

    memset(pad, 0x36, sizeof(pad));
    for (int i = 0; i < NOISE_HASH_BYTES; i++)
        pad[i] ^= key[i];
    crypto_generichash_init(&st, NULL, 0, NOISE_HASH_BYTES);
    crypto_generichash_update(&st, pad, sizeof(pad));
    crypto_generichash_update(&st, data, len);
    if (len2)
        crypto_generichash_update(&st, data2, len2);
    crypto_generichash_final(&st, inner, sizeof(inner));

    memset(pad, 0x5c, sizeof(pad));
    for (int i = 0; i < NOISE_HASH_BYTES; i++)
        pad[i] ^= key[i];
    hash2(out, pad, sizeof(pad), inner, sizeof(inner));
    sodium_memzero(pad, sizeof(pad));
    sodium_memzero(inner, sizeof(inner));
    sodium_memzero(&st, sizeof(st));
}

/* HKDF(chaining_key, input_key_material, num_outputs) of §4.3; out3 may be
 * NULL for two outputs. */
static void hkdf(const uint8_t ck[NOISE_HASH_BYTES], const uint8_t *ikm,
                 size_t ikm_len, uint8_t out1[NOISE_HASH_BYTES],
                 uint8_t out2[NOISE_HASH_BYTES], uint8_t out3[NOISE_HASH_BYTES])
{
    uint8_t temp[NOISE_HASH_BYTES];
    const uint8_t one = 1, two = 2, three = 3;
    hmac(temp, ck, ikm, ikm_len, NULL, 0);
    hmac(out1, temp, &one, 1, NULL, 0);
    hmac(out2, temp, out1, NOISE_HASH_BYTES, &two, 1);
    if (out3)
        hmac(out3, temp, out2, NOISE_HASH_BYTES, &three, 1);
    sodium_memzero(temp, sizeof(temp));
}

/* ---- SymmetricState (§5.2) ---- */

static void mix_hash(struct noise_hs *hs, const uint8_t *data, size_t len)
{
    hash2(hs->h, hs->h, sizeof(hs->h), data, len);
}

static void mix_key(struct noise_hs *hs, const uint8_t *ikm, size_t len)
{
    uint8_t ck[NOISE_HASH_BYTES], k[NOISE_HASH_BYTES];
    hkdf(hs->ck, ikm, len, ck, k, NULL);
    memcpy(hs->ck, ck, sizeof(ck));
    cipher_init(&hs->cs, k); /* HASHLEN 64: truncate temp_k to 32 bytes */
    hs->has_key = true;
    sodium_memzero(ck, sizeof(ck));
    sodium_memzero(k, sizeof(k));
}

static void mix_key_and_hash(struct noise_hs *hs, const uint8_t *ikm,
                             size_t len)
{
    uint8_t ck[NOISE_HASH_BYTES], th[NOISE_HASH_BYTES], k[NOISE_HASH_BYTES];
    hkdf(hs->ck, ikm, len, ck, th, k);
    memcpy(hs->ck, ck, sizeof(ck));
    mix_hash(hs, th, sizeof(th));
    cipher_init(&hs->cs, k);
    hs->has_key = true;
    sodium_memzero(ck, sizeof(ck));
    sodium_memzero(th, sizeof(th));
    sodium_memzero(k, sizeof(k));
}

/* Writes the ciphertext of pt at out; returns its length through *n. */
static int encrypt_and_hash(struct noise_hs *hs, const uint8_t *pt, size_t len,
                            uint8_t *out, size_t *n)
{
    if (hs->has_key) {
        int rc = encrypt_with_ad(&hs->cs, hs->h, sizeof(hs->h), pt, len, out);
        if (rc)
            return rc;
        len += NOISE_TAG_BYTES;
    } else {
        memmove(out, pt, len);
    }
    mix_hash(hs, out, len);
    *n = len;
    return 0;
}

static int decrypt_and_hash(struct noise_hs *hs, const uint8_t *ct, size_t len,
                            uint8_t *out, size_t *n)
{
    uint8_t h[NOISE_HASH_BYTES];
    memcpy(h, hs->h, sizeof(h));
    mix_hash(hs, ct, len); /* h covers the ciphertext, computed before */
    if (!hs->has_key) {
        memmove(out, ct, len);
        *n = len;
        return 0;
    }
    int rc = decrypt_with_ad(&hs->cs, h, sizeof(h), ct, len, out);
    if (rc)
        return rc;
    *n = len - NOISE_TAG_BYTES;
    return 0;
}

/* ---- HandshakeState (§5.3) ---- */

static int dh(uint8_t out[NOISE_DH_BYTES], const uint8_t priv[NOISE_DH_BYTES],
              const uint8_t pub[NOISE_DH_BYTES])
{
    /* libsodium refuses an all-zero result (a low-order point): treat it as a
     * failed handshake rather than mix a known value into the key. */
    return crypto_scalarmult(out, priv, pub) == 0 ? 0 : KV_ERR_AUTH;
}

static int mix_dh(struct noise_hs *hs, const uint8_t *priv, const uint8_t *pub)
{
    uint8_t shared[NOISE_DH_BYTES];
    int rc = dh(shared, priv, pub);
    if (rc == 0)
        mix_key(hs, shared, sizeof(shared));
    sodium_memzero(shared, sizeof(shared));
    return rc;
}

/* The public half of a static key, computed once per key and thread, not
 * once per handshake (security review H2: an accepted connection costs no
 * scalar multiplication before it sends). Keyed by a hash of the private
 * key, so that no further copy of it is kept. */
static void static_public(const uint8_t priv[NOISE_DH_BYTES],
                          uint8_t pub[NOISE_DH_BYTES])
{
    static _Thread_local uint8_t tag[crypto_generichash_BYTES];
    static _Thread_local uint8_t cached[NOISE_DH_BYTES];
    static _Thread_local bool have;
    uint8_t t[crypto_generichash_BYTES];
    crypto_generichash(t, sizeof(t), priv, NOISE_DH_BYTES, NULL, 0);
    if (!have || sodium_memcmp(t, tag, sizeof(t)) != 0) {
        crypto_scalarmult_base(cached, priv);
        memcpy(tag, t, sizeof(t));
        have = true;
    }
    memcpy(pub, cached, NOISE_DH_BYTES);
}

struct noise_hs *noise_hs_new(enum noise_role role, const uint8_t *prologue,
                              size_t prologue_len,
                              const uint8_t psk[CRYPTO_KEY_BYTES],
                              const uint8_t static_priv[CRYPTO_KEY_BYTES])
{
    struct noise_hs *hs = calloc(1, sizeof(*hs));
    if (!hs)
        return NULL;
    hs->role = role;
    /* InitializeSymmetric: the name is at most HASHLEN, so h = name padded
     * with zeros; ck = h. */
    memcpy(hs->h, PROTOCOL_NAME, sizeof(PROTOCOL_NAME) - 1);
    memcpy(hs->ck, hs->h, sizeof(hs->h));
    mix_hash(hs, prologue, prologue_len);
    memcpy(hs->psk, psk, CRYPTO_KEY_BYTES);
    memcpy(hs->s_priv, static_priv, NOISE_DH_BYTES);
    static_public(hs->s_priv, hs->s_pub);
    return hs;
}

size_t noise_hs_size(void)
{
    return sizeof(struct noise_hs);
}

void noise_hs_set_ephemeral(struct noise_hs *hs,
                            const uint8_t priv[CRYPTO_KEY_BYTES])
{
    memcpy(hs->e_priv, priv, NOISE_DH_BYTES);
    crypto_scalarmult_base(hs->e_pub, hs->e_priv);
    hs->e_fixed = true;
}

void noise_hs_free(struct noise_hs *hs)
{
    if (!hs)
        return;
    sodium_memzero(hs, sizeof(*hs));
    free(hs);
}

bool noise_hs_wants_write(const struct noise_hs *hs)
{
    if (hs->msg_index >= 3)
        return false;
    /* Messages 0 and 2 are the initiator's, message 1 the responder's. */
    bool initiator_turn = hs->msg_index != 1;
    return initiator_turn == (hs->role == NOISE_INITIATOR);
}

bool noise_hs_done(const struct noise_hs *hs)
{
    return hs->msg_index == 3;
}

/* Token "e" for the writer: with a PSK modifier, e also calls MixKey (§9.2). */
static void write_e(struct noise_hs *hs, uint8_t *out)
{
    if (!hs->e_fixed)
        crypto_box_keypair(hs->e_pub, hs->e_priv); /* X25519 key pair */
    memcpy(out, hs->e_pub, NOISE_DH_BYTES);
    mix_hash(hs, hs->e_pub, NOISE_DH_BYTES);
    mix_key(hs, hs->e_pub, NOISE_DH_BYTES);
}

static void read_e(struct noise_hs *hs, const uint8_t *in)
{
    memcpy(hs->re, in, NOISE_DH_BYTES);
    mix_hash(hs, hs->re, NOISE_DH_BYTES);
    mix_key(hs, hs->re, NOISE_DH_BYTES);
}

/* Size of a message's fixed part (keys and their tags) before the payload. */
static size_t msg_overhead(int index)
{
    switch (index) {
    case 0:
        return NOISE_DH_BYTES; /* e */
    case 1:
        return NOISE_DH_BYTES + NOISE_DH_BYTES + NOISE_TAG_BYTES; /* e, s */
    default:
        return NOISE_DH_BYTES + NOISE_TAG_BYTES; /* s */
    }
}

int noise_hs_write(struct noise_hs *hs, const uint8_t *payload, size_t plen,
                   uint8_t *out, size_t out_cap, size_t *out_len)
{
    if (!noise_hs_wants_write(hs))
        return KV_ERR_PROTO;
    size_t need = msg_overhead(hs->msg_index) + plen + NOISE_TAG_BYTES;
    if (need > out_cap || need > NOISE_MAX_MESSAGE)
        return KV_ERR_TOO_LARGE;
    size_t off = 0, n;
    int rc = 0;
    switch (hs->msg_index) {
    case 0: /* -> e */
        write_e(hs, out);
        off = NOISE_DH_BYTES;
        break;
    case 1: /* <- e, ee, s, es */
        write_e(hs, out);
        off = NOISE_DH_BYTES;
        if ((rc = mix_dh(hs, hs->e_priv, hs->re)))
            return rc;
        if ((rc = encrypt_and_hash(hs, hs->s_pub, NOISE_DH_BYTES, out + off,
                                   &n)))
            return rc;
        off += n;
        if ((rc = mix_dh(hs, hs->s_priv, hs->re)))
            return rc;
        break;
    case 2: /* -> s, se, psk */
        if ((rc = encrypt_and_hash(hs, hs->s_pub, NOISE_DH_BYTES, out, &n)))
            return rc;
        off = n;
        if ((rc = mix_dh(hs, hs->s_priv, hs->re)))
            return rc;
        mix_key_and_hash(hs, hs->psk, CRYPTO_KEY_BYTES);
        break;
    }
    if ((rc = encrypt_and_hash(hs, payload, plen, out + off, &n)))
        return rc;
    *out_len = off + n;
    hs->msg_index++;
    return 0;
}

static int read_message(struct noise_hs *hs, const uint8_t *in, size_t len,
                        uint8_t *payload, size_t payload_cap, size_t *plen);

void noise_hs_accept_psk(struct noise_hs *hs,
                         const uint8_t psk[CRYPTO_KEY_BYTES])
{
    memcpy(hs->alt_psk, psk, CRYPTO_KEY_BYTES);
    hs->has_alt = hs->role == NOISE_RESPONDER;
}

bool noise_hs_used_alt(const struct noise_hs *hs)
{
    return hs->used_alt;
}

/* The PSK enters only at the end of message 3 (psk3): everything before is
 * the same under either key, so a failed read is undone and read again
 * under the second one. */
int noise_hs_read(struct noise_hs *hs, const uint8_t *in, size_t len,
                  uint8_t *payload, size_t payload_cap, size_t *plen)
{
    if (!(hs->has_alt && hs->msg_index == 2))
        return read_message(hs, in, len, payload, payload_cap, plen);
    struct noise_hs *saved = malloc(sizeof(*saved));
    if (!saved)
        return KV_ERR_NOMEM;
    *saved = *hs;
    int rc = read_message(hs, in, len, payload, payload_cap, plen);
    if (rc == KV_ERR_AUTH) {
        *hs = *saved;
        memcpy(hs->psk, hs->alt_psk, CRYPTO_KEY_BYTES);
        hs->used_alt = true;
        rc = read_message(hs, in, len, payload, payload_cap, plen);
    }
    sodium_memzero(saved, sizeof(*saved));
    free(saved);
    return rc;
}

static int read_message(struct noise_hs *hs, const uint8_t *in, size_t len,
                        uint8_t *payload, size_t payload_cap, size_t *plen)
{
    if (hs->msg_index >= 3 || noise_hs_wants_write(hs))
        return KV_ERR_PROTO;
    size_t over = msg_overhead(hs->msg_index);
    /* Every message carries an encrypted payload (a key is set from the first
     * "e" on, because of the PSK modifier), so it has a tag too. */
    if (len < over + NOISE_TAG_BYTES)
        return KV_ERR_TRUNCATED;
    if (len - over - NOISE_TAG_BYTES > payload_cap)
        return KV_ERR_TOO_LARGE;
    size_t off = 0, n;
    int rc = 0;
    switch (hs->msg_index) {
    case 0: /* -> e */
        read_e(hs, in);
        off = NOISE_DH_BYTES;
        break;
    case 1: /* <- e, ee, s, es */
        read_e(hs, in);
        off = NOISE_DH_BYTES;
        if ((rc = mix_dh(hs, hs->e_priv, hs->re)))
            return rc;
        if ((rc = decrypt_and_hash(
                 hs, in + off, NOISE_DH_BYTES + NOISE_TAG_BYTES, hs->rs, &n)))
            return rc;
        off += NOISE_DH_BYTES + NOISE_TAG_BYTES;
        if ((rc = mix_dh(hs, hs->e_priv, hs->rs)))
            return rc;
        break;
    case 2: /* -> s, se, psk */
        if ((rc = decrypt_and_hash(hs, in, NOISE_DH_BYTES + NOISE_TAG_BYTES,
                                   hs->rs, &n)))
            return rc;
        off = NOISE_DH_BYTES + NOISE_TAG_BYTES;
        if ((rc = mix_dh(hs, hs->e_priv, hs->rs)))
            return rc;
        mix_key_and_hash(hs, hs->psk, CRYPTO_KEY_BYTES);
        break;
    }
    if ((rc = decrypt_and_hash(hs, in + off, len - off, payload, plen)))
        return rc;
    hs->msg_index++;
    return 0;
}

int noise_hs_split(struct noise_hs *hs, struct noise_cipher *tx,
                   struct noise_cipher *rx,
                   uint8_t remote_static[CRYPTO_KEY_BYTES])
{
    if (!noise_hs_done(hs))
        return KV_ERR_PROTO;
    uint8_t k1[NOISE_HASH_BYTES], k2[NOISE_HASH_BYTES];
    hkdf(hs->ck, NULL, 0, k1, k2, NULL);
    /* The first key encrypts initiator -> responder. */
    if (hs->role == NOISE_INITIATOR) {
        cipher_init(tx, k1);
        cipher_init(rx, k2);
    } else {
        cipher_init(tx, k2);
        cipher_init(rx, k1);
    }
    memcpy(remote_static, hs->rs, CRYPTO_KEY_BYTES);
    sodium_memzero(k1, sizeof(k1));
    sodium_memzero(k2, sizeof(k2));
    return 0;
}

const uint8_t *noise_hs_hash(const struct noise_hs *hs)
{
    return hs->h;
}
