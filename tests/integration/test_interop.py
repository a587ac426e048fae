"""Interoperability with an independent Noise implementation: Debian's
python3-dissononce completes Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b with a
running kvnode and exchanges messages with it."""

import os

from harness import Cluster
from noise_client import (MSG_DEL, MSG_GET, MSG_PUT, MSG_RESULT,
                          MSG_STATUS, MSG_STATUS_RESULT, MSG_WELCOME,
                          Closed, NoiseClient, read_key)


def test_dissononce_client_talks_to_kvnode():
    c = Cluster()
    try:
        n = c.node()
        cl = NoiseClient(n.addr, read_key(c.client_key))
        welcome = cl.handshake()
        assert welcome[1] == MSG_WELCOME and welcome[0] == 1, welcome
        assert len(welcome[4]) == 16 and welcome[6] == 1 << 20
        big = os.urandom(200000)  # spans several Noise messages each way
        ans = cl.request(MSG_PUT, b"interop", big, 2, 0)
        assert ans[1] == MSG_RESULT and ans[4] == 0, ans
        ans = cl.request(MSG_GET, b"interop", 2, 0)
        assert ans[4] == 0 and ans[6] == big
        ans = cl.request(MSG_STATUS)
        # The counters are a map from name to value.
        assert ans[1] == MSG_STATUS_RESULT and ans[6]["keys"] == 1, ans
        ans = cl.request(MSG_DEL, b"interop", 2, 0)
        assert ans[4] == 0
        cl.close()
        # And what dissononce wrote, essaim's own client reads.
        cl = NoiseClient(n.addr, read_key(c.client_key))
        cl.handshake()
        cl.request(MSG_PUT, b"from-python", b"hi", 2, 0)
        cl.close()
        r = n.kvcli("get", "from-python")
        assert r.returncode == 0 and r.stdout == b"hi"
    finally:
        c.close()


def test_dissononce_with_wrong_secret_is_refused():
    c = Cluster()
    try:
        n = c.node()
        cl = NoiseClient(n.addr, os.urandom(32))
        try:
            cl.handshake()
            raise AssertionError("handshake with a wrong secret succeeded")
        except (Closed, ConnectionResetError):
            pass
        cl.close()
        # The peer prologue with the right secret is refused on the client
        # port as well: a handshake is never taken for the other kind.
        cl = NoiseClient(n.addr, read_key(c.client_key),
                         prologue=b"essaim/1 peer")
        try:
            cl.handshake()
            raise AssertionError("peer prologue accepted on client channel")
        except (Closed, ConnectionResetError):
            pass
        cl.close()
        assert n.alive()
    finally:
        c.close()
