/* BLAKE2b (RFC 7693) without a key, one work-item per item: the batch hash
 * of accel/ (DESIGN §10). Digests are bit-identical to libsodium's
 * crypto_generichash with the same output length.
 *
 * data holds the items back to back; item i is data[off[i] .. off[i + 1]).
 * Its digest of outlen bytes (1..64) goes to out + i * outlen. */

__constant ulong blake2b_iv[8] = {
    0x6a09e667f3bcc908UL, 0xbb67ae8584caa73bUL, 0x3c6ef372fe94f82bUL,
    0xa54ff53a5f1d36f1UL, 0x510e527fade682d1UL, 0x9b05688c2b3e6c1fUL,
    0x1f83d9abfb41bd6bUL, 0x5be0cd19137e2179UL};

__constant uchar blake2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

/* Rotate right by n: OpenCL's rotate() turns left. */
#define ROTR(x, n) rotate((x), (ulong)(64 - (n)))

#define G(r, i, a, b, c, d)                                                    \
    do {                                                                       \
        a = a + b + m[blake2b_sigma[r][2 * i]];                                \
        d = ROTR(d ^ a, 32);                                                   \
        c = c + d;                                                             \
        b = ROTR(b ^ c, 24);                                                   \
        a = a + b + m[blake2b_sigma[r][2 * i + 1]];                            \
        d = ROTR(d ^ a, 16);                                                   \
        c = c + d;                                                             \
        b = ROTR(b ^ c, 63);                                                   \
    } while (0)

static void compress(ulong h[8], const ulong m[16], ulong t, int last)
{
    ulong v[16];
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = blake2b_iv[i];
    }
    v[12] ^= t; /* items are far below 2^64 bytes: the high word stays 0 */
    if (last)
        v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        G(r, 0, v[0], v[4], v[8], v[12]);
        G(r, 1, v[1], v[5], v[9], v[13]);
        G(r, 2, v[2], v[6], v[10], v[14]);
        G(r, 3, v[3], v[7], v[11], v[15]);
        G(r, 4, v[0], v[5], v[10], v[15]);
        G(r, 5, v[1], v[6], v[11], v[12]);
        G(r, 6, v[2], v[7], v[8], v[13]);
        G(r, 7, v[3], v[4], v[9], v[14]);
    }
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* Loads up to 128 bytes from p as 16 little-endian words, zero-padded. */
static void load_block(ulong m[16], __global const uchar *p, ulong len)
{
    for (int w = 0; w < 16; w++) {
        ulong x = 0;
        for (int b = 7; b >= 0; b--) {
            ulong at = (ulong)(w * 8 + b);
            x = (x << 8) | (at < len ? (ulong)p[at] : 0UL);
        }
        m[w] = x;
    }
}

__kernel void blake2b_batch(__global const uchar *data,
                            __global const ulong *off, uint n, uint outlen,
                            __global uchar *out)
{
    size_t i = get_global_id(0);
    if (i >= n)
        return;
    ulong start = off[i], len = off[i + 1] - off[i];
    ulong h[8], m[16];
    for (int k = 0; k < 8; k++)
        h[k] = blake2b_iv[k];
    h[0] ^= 0x01010000UL ^ (ulong)outlen;
    ulong done = 0;
    /* Every full block but the last is compressed without the final flag. */
    while (len - done > 128) {
        load_block(m, data + start + done, 128);
        done += 128;
        compress(h, m, done, 0);
    }
    load_block(m, data + start + done, len - done);
    compress(h, m, len, 1);
    __global uchar *o = out + i * outlen;
    for (uint b = 0; b < outlen; b++)
        o[b] = (uchar)(h[b / 8] >> (8 * (b % 8)));
}
