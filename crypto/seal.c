/* Sealed gossip datagrams (DESIGN §8); see crypto.h for the layout.
 *
 * The gossip key is BLAKE2b-256 keyed with the cluster secret over a fixed
 * label, so it is never the secret itself and never the Noise PSK. The key
 * id is a hash of the key: it names the key without revealing it. */
#include "crypto.h"

#include "../common/common.h"

#include <sodium.h>
#include <string.h>

static const char KEY_LABEL[] = "essaim/1 gossip key";
static const char ID_LABEL[] = "essaim/1 gossip key id";

static void derive(struct seal_key *k, const uint8_t secret[CRYPTO_KEY_BYTES])
{
    uint8_t id[32];
    crypto_generichash(k->key, sizeof(k->key), (const uint8_t *)KEY_LABEL,
                       sizeof(KEY_LABEL) - 1, secret, CRYPTO_KEY_BYTES);
    crypto_generichash(id, sizeof(id), (const uint8_t *)ID_LABEL,
                       sizeof(ID_LABEL) - 1, k->key, sizeof(k->key));
    memcpy(k->id, id, SEAL_KEY_ID_BYTES);
}

void seal_init(struct sealer *s, const uint8_t secret[CRYPTO_KEY_BYTES])
{
    memset(s, 0, sizeof(*s));
    derive(&s->keys[0], secret);
    s->n_keys = 1;
}

int seal_add_old_key(struct sealer *s, const uint8_t secret[CRYPTO_KEY_BYTES])
{
    if (s->n_keys == SEAL_MAX_KEYS)
        return KV_ERR_FULL;
    derive(&s->keys[s->n_keys++], secret);
    return 0;
}

void seal_packet(struct sealer *s, uint64_t now_ms, const uint8_t *payload,
                 size_t len, uint8_t *out)
{
    const struct seal_key *k = &s->keys[0];
    uint8_t *hdr = out, *nonce = out + 1 + SEAL_KEY_ID_BYTES;
    uint8_t *ct = nonce + SEAL_NONCE_BYTES;
    hdr[0] = SEAL_VERSION;
    memcpy(hdr + 1, k->id, SEAL_KEY_ID_BYTES);
    randombytes_buf(nonce, SEAL_NONCE_BYTES);
    /* The plaintext is timestamp ‖ payload, assembled in place. */
    memmove(ct + 8, payload, len);
    be64_put(ct, now_ms);
    unsigned long long clen;
    crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &clen, ct, 8 + len, hdr,
                                               1 + SEAL_KEY_ID_BYTES, NULL,
                                               nonce, k->key);
    s->counters.sealed++;
}

/* The replay cache: a nonce seen inside the window is a duplicate. Entries
 * live 2 windows of the monotonic clock, so a wall clock stepping back
 * does not expire them (security review L1). Every probe of a nonce's
 * neighbourhood is looked at before it is taken for new: an entry that
 * expired earlier in the chain hides no later one. */
static bool seen_before(struct sealer *s, const uint8_t *nonce,
                        uint64_t mono_ms)
{
    uint64_t tag = be64_get(nonce) | 1; /* never 0, which marks empty */
    size_t slot = (size_t)(be64_get(nonce + 8) % SEAL_SEEN_SLOTS);
    size_t free_i = SEAL_SEEN_SLOTS, oldest = slot;
    for (size_t probe = 0; probe < SEAL_SEEN_PROBES; probe++) {
        size_t i = (slot + probe) % SEAL_SEEN_SLOTS;
        bool live = s->seen[i].tag &&
                    mono_ms - s->seen[i].seen_ms <= 2 * SEAL_WINDOW_MS;
        if (live && s->seen[i].tag == tag)
            return true;
        if (!live && free_i == SEAL_SEEN_SLOTS)
            free_i = i;
        if (s->seen[i].seen_ms < s->seen[oldest].seen_ms)
            oldest = i;
    }
    /* A full neighbourhood gives up its oldest entry, the nearest to
     * leaving the window anyway: a fresh packet is never dropped. */
    size_t i = free_i < SEAL_SEEN_SLOTS ? free_i : oldest;
    s->seen[i].tag = tag;
    s->seen[i].seen_ms = mono_ms;
    return false;
}

int seal_open(struct sealer *s, uint64_t now_ms, const uint8_t *pkt, size_t len,
              uint8_t *out, size_t *out_len)
{
    return seal_open_at(s, now_ms, clock_mono_ms(), pkt, len, out, out_len);
}

int seal_open_at(struct sealer *s, uint64_t now_ms, uint64_t mono_ms,
                 const uint8_t *pkt, size_t len, uint8_t *out, size_t *out_len)
{
    if (len < SEAL_OVERHEAD) {
        s->counters.malformed++;
        return KV_ERR_TRUNCATED;
    }
    if (pkt[0] != SEAL_VERSION) {
        s->counters.malformed++;
        return KV_ERR_VERSION;
    }
    const struct seal_key *k = NULL;
    for (unsigned i = 0; i < s->n_keys && !k; i++)
        if (memcmp(pkt + 1, s->keys[i].id, SEAL_KEY_ID_BYTES) == 0)
            k = &s->keys[i];
    const uint8_t *nonce = pkt + 1 + SEAL_KEY_ID_BYTES;
    const uint8_t *ct = nonce + SEAL_NONCE_BYTES;
    size_t clen = len - 1 - SEAL_KEY_ID_BYTES - SEAL_NONCE_BYTES;
    unsigned long long plen;
    if (!k || crypto_aead_xchacha20poly1305_ietf_decrypt(
                  out, &plen, NULL, ct, clen, pkt, 1 + SEAL_KEY_ID_BYTES, nonce,
                  k->key) != 0) {
        s->counters.bad_auth++;
        return KV_ERR_AUTH;
    }
    uint64_t ts = be64_get(out);
    uint64_t age = now_ms > ts ? now_ms - ts : ts - now_ms;
    if (age > SEAL_WINDOW_MS || seen_before(s, nonce, mono_ms)) {
        s->counters.replayed++;
        return KV_ERR_TIMEOUT;
    }
    *out_len = (size_t)plen - 8;
    memmove(out, out + 8, *out_len);
    s->counters.opened++;
    return 0;
}

void seal_wipe(struct sealer *s)
{
    sodium_memzero(s->keys, sizeof(s->keys));
}
