/* Published Noise test vector for Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b,
 * copied as data from the cacophony test-vector file (vectors/cacophony.txt,
 * haskell-cryptography/cacophony). Messages 0-2 are the handshake; 3-5 are
 * transport messages; turns keep alternating, so 3 and 5 go responder ->
 * initiator and 4 initiator -> responder. */
#ifndef NOISE_VECTORS_H
#define NOISE_VECTORS_H

static const char *const nv_prologue = "4a6f686e2047616c74";
static const char *const nv_psk =
    "54686973206973206d7920417573747269616e20706572737065637469766521";
static const char *const nv_init_static =
    "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1";
static const char *const nv_init_ephemeral =
    "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a";
static const char *const nv_resp_static =
    "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893";
static const char *const nv_resp_ephemeral =
    "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b";

static const struct {
    const char *payload;
    const char *ciphertext;
} nv_messages[6] = {
    {"4c756477696720766f6e204d69736573",
     "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79440aa831d1"
     "e3bbd16bd7ffda87e9f7b6eeca2510006499a573ac27af3392ed1b69"},
    {"4d757272617920526f746862617264",
     "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f14480884381a78489"
     "d56c9e2ac962826f25684980b25244dbfd505b7d903a94d4f4fd84004a1c7fbe94d686bc"
     "4c1f67259364f6f2a41cb40bf5198b9b3975be2cdd49d3e065a554e12c477d82029fabc6"
     "555bc1"},
    {"462e20412e20486179656b",
     "291dfeff6eff386e29adb0bdbd5a1ae9e09de4449c8695d109adcb63e80e489555792a3e"
     "9150eff75d6d45571f824ed231173cb66e31e7da914241f86d0cbb678335ffe768a7445d"
     "2f5bc1"},
    {"4361726c204d656e676572",
     "6579dd60eb5e6a8b29dd60004289f5d3c2f69fcdbf683a869f59a8"},
    {"4a65616e2d426170746973746520536179",
     "24715fd39c3c7606e81b26e69e47b54d043d9d87c512f9417bae51ab48ebb17722"},
    {"457567656e2042f6686d20766f6e2042617765726b",
     "e49194a013d873712318643acbf0e3851086326bb168c500a766439ff543a7a1e2deb321"
     "5c"},
};

#endif
