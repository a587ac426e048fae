/* crypto: key files, and Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b against the
 * published test vector, plus the refusals a channel relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <dirent.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../common/common.h"
#include "../../crypto/crypto.h"
#include "noise_vectors.h"

static size_t unhex(uint8_t *out, size_t cap, const char *hex)
{
    size_t n = 0;
    assert_int_equal(sodium_hex2bin(out, cap, hex, strlen(hex), NULL, &n, NULL),
                     0);
    return n;
}

static char tmpdir[64];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/essaim-test-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd);
}

static void test_keyfile_roundtrip_has_mode_0600(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/k1", tmpdir);
    uint8_t key[32], back[32];
    randombytes_buf(key, sizeof(key));
    assert_int_equal(crypto_keyfile_write(path, key), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 45); /* 44 base64 characters and "\n" */
    assert_int_equal(crypto_keyfile_read(path, back), 0);
    assert_memory_equal(key, back, 32);
    /* A second write never overwrites an existing key, and neither write
     * leaves its temporary file behind. */
    uint8_t other[32];
    randombytes_buf(other, sizeof(other));
    assert_int_equal(crypto_keyfile_write(path, other), KV_ERR_IO);
    assert_int_equal(crypto_keyfile_read(path, back), 0);
    assert_memory_equal(key, back, 32);
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strncmp(e->d_name, "k1.", 3) == 0)
            fail_msg("a temporary key file was left: %s", e->d_name);
    closedir(d);
}

static void test_keyfile_readable_by_others_is_refused(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/k2", tmpdir);
    assert_int_equal(crypto_keyfile_generate(path), 0);
    assert_int_equal(chmod(path, 0644), 0);
    uint8_t key[32];
    assert_int_equal(crypto_keyfile_read(path, key), KV_ERR_PERM);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(crypto_keyfile_read(path, key), KV_ERR_PERM);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(crypto_keyfile_read(path, key), 0);
    /* Owned by another user (who could replace it): refused. Only root can
     * give a file away, so only a test run as root checks this. */
    if (geteuid() == 0) {
        assert_int_equal(chown(path, 4242, 4242), 0);
        assert_int_equal(crypto_keyfile_read(path, key), KV_ERR_PERM);
    }
}

static void write_raw(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_keyfile_malformed_is_invalid(void **state)
{
    (void)state;
    char path[128];
    uint8_t key[32];
    snprintf(path, sizeof(path), "%s/k3", tmpdir);
    const char *bad[] = {
        "",                                                 /* empty */
        "AAAA\n",                                           /* too short */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nX",  /* two lines */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA*=\n",   /* not base64 */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", /* 33 bytes */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        write_raw(path, bad[i]);
        assert_int_equal(crypto_keyfile_read(path, key), KV_ERR_INVAL);
    }
    write_raw(path, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n");
    assert_int_equal(crypto_keyfile_read(path, key), 0);
    snprintf(path, sizeof(path), "%s/absent", tmpdir);
    assert_int_equal(crypto_keyfile_read(path, key), KV_ERR_IO);
}

static void test_node_key_created_once_and_stable(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof(path), "%s/node.key", tmpdir);
    uint8_t priv[32], pub[32], priv2[32], pub2[32];
    bool created;
    assert_int_equal(crypto_node_key_load(path, priv, pub, &created), 0);
    assert_true(created);
    assert_int_equal(crypto_node_key_load(path, priv2, pub2, &created), 0);
    assert_false(created);
    assert_memory_equal(pub, pub2, 32);
    uint8_t id1[16], id2[16];
    crypto_node_id(id1, pub);
    crypto_node_id(id2, pub2);
    assert_memory_equal(id1, id2, 16);
}

/* Runs the full published vector: three handshake messages, then three
 * transport messages, each checked byte for byte, in both roles. */
static void test_noise_xxpsk3_matches_published_vector(void **state)
{
    (void)state;
    uint8_t prologue[16], psk[32], is[32], ie[32], rs[32], re[32];
    size_t plen = unhex(prologue, sizeof(prologue), nv_prologue);
    unhex(psk, 32, nv_psk);
    unhex(is, 32, nv_init_static);
    unhex(ie, 32, nv_init_ephemeral);
    unhex(rs, 32, nv_resp_static);
    unhex(re, 32, nv_resp_ephemeral);

    struct noise_hs *init =
        noise_hs_new(NOISE_INITIATOR, prologue, plen, psk, is);
    struct noise_hs *resp =
        noise_hs_new(NOISE_RESPONDER, prologue, plen, psk, rs);
    noise_hs_set_ephemeral(init, ie);
    noise_hs_set_ephemeral(resp, re);

    uint8_t payload[256], expect[512], msg[512], got[512];
    for (int i = 0; i < 3; i++) {
        struct noise_hs *w = (i == 1) ? resp : init;
        struct noise_hs *r = (i == 1) ? init : resp;
        size_t pl = unhex(payload, sizeof(payload), nv_messages[i].payload);
        size_t el = unhex(expect, sizeof(expect), nv_messages[i].ciphertext);
        size_t ml = 0, gl = 0;
        assert_true(noise_hs_wants_write(w));
        assert_int_equal(noise_hs_write(w, payload, pl, msg, sizeof(msg), &ml),
                         0);
        assert_int_equal(ml, el);
        assert_memory_equal(msg, expect, el);
        assert_int_equal(noise_hs_read(r, msg, ml, got, sizeof(got), &gl), 0);
        assert_int_equal(gl, pl);
        assert_memory_equal(got, payload, pl);
    }
    assert_true(noise_hs_done(init));
    assert_true(noise_hs_done(resp));
    assert_memory_equal(noise_hs_hash(init), noise_hs_hash(resp), 64);

    struct noise_cipher itx, irx, rtx, rrx;
    uint8_t i_rs[32], r_rs[32], rs_pub[32], is_pub[32];
    assert_int_equal(noise_hs_split(init, &itx, &irx, i_rs), 0);
    assert_int_equal(noise_hs_split(resp, &rtx, &rrx, r_rs), 0);
    crypto_x25519_public(rs_pub, rs);
    crypto_x25519_public(is_pub, is);
    assert_memory_equal(i_rs, rs_pub, 32);
    assert_memory_equal(r_rs, is_pub, 32);

    for (int i = 3; i < 6; i++) {
        bool from_init = (i % 2) == 0; /* turns keep alternating */
        size_t pl = unhex(payload, sizeof(payload), nv_messages[i].payload);
        size_t el = unhex(expect, sizeof(expect), nv_messages[i].ciphertext);
        assert_int_equal(el, pl + 16);
        assert_int_equal(
            noise_cipher_encrypt(from_init ? &itx : &rtx, payload, pl, msg), 0);
        assert_memory_equal(msg, expect, el);
        assert_int_equal(
            noise_cipher_decrypt(from_init ? &rrx : &irx, msg, el, got), 0);
        assert_memory_equal(got, payload, pl);
    }
    noise_hs_free(init);
    noise_hs_free(resp);
}

/* A second PSK the responder accepts (NULL: none), and whether the last
 * handshake used it. */
static const uint8_t *responder_alt;
static bool used_alt;

/* Handshake with fresh keys; returns 0 or the first error. */
static int handshake(const uint8_t *psk_i, const uint8_t *psk_r,
                     const char *pro_i, const char *pro_r,
                     struct noise_cipher *itx, struct noise_cipher *rrx,
                     int flip_msg)
{
    uint8_t is[32], rs[32], rst[32], msg[256], got[256];
    randombytes_buf(is, 32);
    randombytes_buf(rs, 32);
    struct noise_hs *h[2] = {
        noise_hs_new(NOISE_INITIATOR, (const uint8_t *)pro_i, strlen(pro_i),
                     psk_i, is),
        noise_hs_new(NOISE_RESPONDER, (const uint8_t *)pro_r, strlen(pro_r),
                     psk_r, rs)};
    if (responder_alt)
        noise_hs_accept_psk(h[1], responder_alt);
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        size_t ml, gl;
        rc = noise_hs_write(h[i == 1], NULL, 0, msg, sizeof(msg), &ml);
        if (rc == 0 && i == flip_msg)
            msg[ml - 1] ^= 0x01;
        if (rc == 0)
            rc = noise_hs_read(h[i != 1], msg, ml, got, sizeof(got), &gl);
    }
    struct noise_cipher a, b;
    used_alt = noise_hs_used_alt(h[1]);
    if (rc == 0)
        rc = noise_hs_split(h[0], itx, &a, rst);
    if (rc == 0)
        rc = noise_hs_split(h[1], &b, rrx, rst);
    noise_hs_free(h[0]);
    noise_hs_free(h[1]);
    return rc;
}

static void test_noise_wrong_psk_fails_at_third_message(void **state)
{
    (void)state;
    uint8_t p1[32], p2[32];
    randombytes_buf(p1, 32);
    memcpy(p2, p1, 32);
    p2[31] ^= 0x80;
    struct noise_cipher tx, rx;
    assert_int_equal(
        handshake(p1, p2, "essaim/1 client", "essaim/1 client", &tx, &rx, -1),
        KV_ERR_AUTH);
    assert_int_equal(
        handshake(p1, p1, "essaim/1 client", "essaim/1 client", &tx, &rx, -1),
        0);
}

/* A responder in the middle of a cluster-secret rotation accepts either
 * secret, and nothing else; an initiator never falls back. */
static void test_noise_responder_accepts_a_second_psk(void **state)
{
    (void)state;
    uint8_t cur[32], other[32], wrong[32], msg[64] = "over the channel";
    randombytes_buf(cur, 32);
    randombytes_buf(other, 32);
    randombytes_buf(wrong, 32);
    struct noise_cipher tx, rx;
    responder_alt = other;
    assert_int_equal(
        handshake(cur, cur, "essaim/1 peer", "essaim/1 peer", &tx, &rx, -1), 0);
    assert_false(used_alt);
    assert_int_equal(
        handshake(other, cur, "essaim/1 peer", "essaim/1 peer", &tx, &rx, -1),
        0);
    assert_true(used_alt);
    /* The channel keyed under the second secret works both ways round. */
    uint8_t ct[64 + NOISE_TAG_BYTES], pt[64];
    assert_int_equal(noise_cipher_encrypt(&tx, msg, sizeof(msg), ct), 0);
    assert_int_equal(noise_cipher_decrypt(&rx, ct, sizeof(ct), pt), 0);
    assert_memory_equal(pt, msg, sizeof(msg));
    assert_int_equal(
        handshake(wrong, cur, "essaim/1 peer", "essaim/1 peer", &tx, &rx, -1),
        KV_ERR_AUTH);
    /* A flipped bit in message 3 fails under both. */
    assert_int_equal(
        handshake(other, cur, "essaim/1 peer", "essaim/1 peer", &tx, &rx, 2),
        KV_ERR_AUTH);
    responder_alt = NULL;
    assert_int_equal(
        handshake(other, cur, "essaim/1 peer", "essaim/1 peer", &tx, &rx, -1),
        KV_ERR_AUTH);
}

static void test_noise_prologue_separates_peer_and_client(void **state)
{
    (void)state;
    uint8_t psk[32];
    randombytes_buf(psk, 32);
    struct noise_cipher tx, rx;
    assert_int_equal(
        handshake(psk, psk, "essaim/1 peer", "essaim/1 client", &tx, &rx, -1),
        KV_ERR_AUTH);
}

static void test_noise_flipped_handshake_bit_is_refused(void **state)
{
    (void)state;
    uint8_t psk[32];
    randombytes_buf(psk, 32);
    struct noise_cipher tx, rx;
    for (int m = 0; m < 3; m++)
        assert_int_equal(
            handshake(psk, psk, "essaim/1 peer", "essaim/1 peer", &tx, &rx, m),
            KV_ERR_AUTH);
}

static void test_transport_refuses_flip_replay_and_reorder(void **state)
{
    (void)state;
    uint8_t psk[32];
    randombytes_buf(psk, 32);
    struct noise_cipher tx, rx;
    assert_int_equal(
        handshake(psk, psk, "essaim/1 peer", "essaim/1 peer", &tx, &rx, -1), 0);
    uint8_t m1[32], m2[32], out[32];
    const uint8_t a[16] = "first message..", b[16] = "second message.";
    assert_int_equal(noise_cipher_encrypt(&tx, a, 16, m1), 0);
    assert_int_equal(noise_cipher_encrypt(&tx, b, 16, m2), 0);
    /* Reordered: the second message arrives first. */
    assert_int_equal(noise_cipher_decrypt(&rx, m2, 32, out), KV_ERR_AUTH);
    assert_int_equal(noise_cipher_decrypt(&rx, m1, 32, out), 0);
    assert_memory_equal(out, a, 16);
    /* Replayed. */
    assert_int_equal(noise_cipher_decrypt(&rx, m1, 32, out), KV_ERR_AUTH);
    /* Flipped bit. */
    m2[3] ^= 0x10;
    assert_int_equal(noise_cipher_decrypt(&rx, m2, 32, out), KV_ERR_AUTH);
    m2[3] ^= 0x10;
    assert_int_equal(noise_cipher_decrypt(&rx, m2, 32, out), 0);
    assert_int_equal(noise_cipher_decrypt(&rx, m2, 15, out), KV_ERR_TRUNCATED);
}

static void test_transport_counter_never_wraps(void **state)
{
    (void)state;
    struct noise_cipher c = {.n = UINT64_MAX - 2, .limit = UINT64_MAX - 1};
    uint8_t pt[4] = {0}, ct[20];
    assert_int_equal(noise_cipher_encrypt(&c, pt, 4, ct), 0);
    assert_int_equal(noise_cipher_encrypt(&c, pt, 4, ct), KV_ERR_NONCE);
    assert_int_equal(noise_cipher_decrypt(&c, ct, 20, pt), KV_ERR_NONCE);
}

static void test_handshake_out_of_turn_is_protocol_error(void **state)
{
    (void)state;
    uint8_t psk[32] = {1}, s[32] = {2}, buf[128];
    size_t n;
    struct noise_hs *r =
        noise_hs_new(NOISE_RESPONDER, (const uint8_t *)"x", 1, psk, s);
    assert_false(noise_hs_wants_write(r));
    assert_int_equal(noise_hs_write(r, NULL, 0, buf, sizeof(buf), &n),
                     KV_ERR_PROTO);
    assert_int_equal(noise_hs_read(r, buf, 10, buf, sizeof(buf), &n),
                     KV_ERR_TRUNCATED);
    struct noise_cipher tx, rx;
    assert_int_equal(noise_hs_split(r, &tx, &rx, buf), KV_ERR_PROTO);
    noise_hs_free(r);
}

/* ---- sealed gossip datagrams ---- */

static struct sealer sa, sb;

static void test_seal_roundtrip_and_counters(void **state)
{
    (void)state;
    uint8_t secret[32], pkt[256], out[256];
    randombytes_buf(secret, 32);
    seal_init(&sa, secret);
    seal_init(&sb, secret);
    const uint8_t msg[] = "ping with updates";
    seal_packet(&sa, 1000000, msg, sizeof(msg), pkt);
    size_t n;
    assert_int_equal(
        seal_open(&sb, 1000100, pkt, sizeof(msg) + SEAL_OVERHEAD, out, &n), 0);
    assert_int_equal(n, sizeof(msg));
    assert_memory_equal(out, msg, n);
    assert_int_equal(sb.counters.opened, 1);
    /* The same datagram again (a duplicate or a replay) is dropped. */
    assert_int_equal(
        seal_open(&sb, 1000200, pkt, sizeof(msg) + SEAL_OVERHEAD, out, &n),
        KV_ERR_TIMEOUT);
    assert_int_equal(sb.counters.replayed, 1);
}

/* The replay cache ages by the monotonic clock, so a wall clock stepping
 * back expires nothing; and a nonce whose chain had an earlier entry
 * expire is still found (security review L1). */
static void test_seal_replay_cache_survives_clock_steps_and_expiry(void **state)
{
    (void)state;
    uint8_t secret[32], out[64];
    randombytes_buf(secret, 32);
    seal_init(&sa, secret);
    seal_init(&sb, secret);
    size_t n, len = 1 + SEAL_OVERHEAD;
    uint8_t pkt[64];
    seal_packet(&sa, 9000000, (const uint8_t *)"x", 1, pkt);
    assert_int_equal(seal_open_at(&sb, 9000000, 100, pkt, len, out, &n), 0);
    /* The wall clock steps back 10 s (the packet is still in the window):
     * the same nonce is still a replay. */
    assert_int_equal(seal_open_at(&sb, 8990000, 200, pkt, len, out, &n),
                     KV_ERR_TIMEOUT);

    /* Two packets with one home slot: the first expires, the second was
     * placed after it in the chain and must still be found. */
    static uint8_t pkts[4096][64];
    size_t home[4096], a = 0, b = 0;
    bool found = false;
    for (size_t i = 0; i < 4096 && !found; i++) {
        seal_packet(&sa, 9000000, (const uint8_t *)"y", 1, pkts[i]);
        const uint8_t *nonce = pkts[i] + 1 + SEAL_KEY_ID_BYTES;
        home[i] = (size_t)(be64_get(nonce + 8) % SEAL_SEEN_SLOTS);
        for (size_t k = 0; k < i && !found; k++)
            if (home[k] == home[i]) {
                a = k;
                b = i;
                found = true;
            }
    }
    assert_true(found);
    seal_init(&sb, secret);
    assert_int_equal(seal_open_at(&sb, 9000000, 1000, pkts[a], len, out, &n),
                     0);
    assert_int_equal(seal_open_at(&sb, 9000000, 1000 + 2 * SEAL_WINDOW_MS - 10,
                                  pkts[b], len, out, &n),
                     0);
    /* a's entry has expired; b's, behind it in the chain, has not. */
    assert_int_equal(seal_open_at(&sb, 9000000, 1000 + 2 * SEAL_WINDOW_MS + 5,
                                  pkts[b], len, out, &n),
                     KV_ERR_TIMEOUT);
}

static void test_seal_refuses_wrong_key_flips_and_stale_packets(void **state)
{
    (void)state;
    uint8_t s1[32], s2[32], pkt[128], out[128];
    randombytes_buf(s1, 32);
    randombytes_buf(s2, 32);
    seal_init(&sa, s1);
    seal_init(&sb, s2);
    const uint8_t msg[16] = "0123456789abcdef";
    size_t len = sizeof(msg) + SEAL_OVERHEAD, n;
    seal_packet(&sa, 5000000, msg, sizeof(msg), pkt);
    assert_int_equal(seal_open(&sb, 5000000, pkt, len, out, &n), KV_ERR_AUTH);
    assert_int_equal(sb.counters.bad_auth, 1);
    seal_init(&sb, s1);
    for (size_t i = 0; i < len; i++) { /* every single flipped bit */
        pkt[i] ^= 0x04;
        int rc = seal_open(&sb, 5000000, pkt, len, out, &n);
        assert_true(rc == KV_ERR_AUTH || rc == KV_ERR_VERSION);
        pkt[i] ^= 0x04;
    }
    assert_int_equal(sb.counters.opened, 0);
    assert_int_equal(
        seal_open(&sb, 5000000 + SEAL_WINDOW_MS + 1, pkt, len, out, &n),
        KV_ERR_TIMEOUT);
    assert_int_equal(seal_open(&sb, 5000000, pkt, 20, out, &n),
                     KV_ERR_TRUNCATED);
    /* One from the truncated packet, one from the flip in the version. */
    assert_int_equal(sb.counters.malformed, 2);
    assert_int_equal(seal_open(&sb, 5000000, pkt, len, out, &n), 0);
}

static void test_seal_keyring_accepts_old_key_during_rotation(void **state)
{
    (void)state;
    uint8_t old[32], new_[32], pkt[64], out[64];
    randombytes_buf(old, 32);
    randombytes_buf(new_, 32);
    seal_init(&sa, old);  /* a node not yet rotated */
    seal_init(&sb, new_); /* a rotated node that still accepts old */
    assert_int_equal(seal_add_old_key(&sb, old), 0);
    size_t n;
    seal_packet(&sa, 1, (const uint8_t *)"x", 1, pkt);
    assert_int_equal(seal_open(&sb, 1, pkt, 1 + SEAL_OVERHEAD, out, &n), 0);
    seal_packet(&sb, 2, (const uint8_t *)"y", 1, pkt); /* sealed with new */
    assert_int_equal(seal_open(&sa, 2, pkt, 1 + SEAL_OVERHEAD, out, &n),
                     KV_ERR_AUTH);
    for (int i = 0; i < SEAL_MAX_KEYS - 2; i++)
        assert_int_equal(seal_add_old_key(&sb, old), 0);
    assert_int_equal(seal_add_old_key(&sb, old), KV_ERR_FULL);
    seal_wipe(&sb);
}

int main(void)
{
    assert_int_equal(crypto_init(), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keyfile_roundtrip_has_mode_0600),
        cmocka_unit_test(test_keyfile_readable_by_others_is_refused),
        cmocka_unit_test(test_keyfile_malformed_is_invalid),
        cmocka_unit_test(test_node_key_created_once_and_stable),
        cmocka_unit_test(test_noise_xxpsk3_matches_published_vector),
        cmocka_unit_test(test_noise_wrong_psk_fails_at_third_message),
        cmocka_unit_test(test_noise_responder_accepts_a_second_psk),
        cmocka_unit_test(test_noise_prologue_separates_peer_and_client),
        cmocka_unit_test(test_noise_flipped_handshake_bit_is_refused),
        cmocka_unit_test(test_transport_refuses_flip_replay_and_reorder),
        cmocka_unit_test(test_transport_counter_never_wraps),
        cmocka_unit_test(test_handshake_out_of_turn_is_protocol_error),
        cmocka_unit_test(test_seal_roundtrip_and_counters),
        cmocka_unit_test(test_seal_refuses_wrong_key_flips_and_stale_packets),
        cmocka_unit_test(
            test_seal_replay_cache_survives_clock_steps_and_expiry),
        cmocka_unit_test(test_seal_keyring_accepts_old_key_during_rotation),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
