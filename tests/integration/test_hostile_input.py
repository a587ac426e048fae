"""node/server.c against hostile peers. Bad input never crashes a node: random bytes, a truncated frame, a 4 GiB
length prefix, stalled handshakes, silent connections, tampered and
malformed messages — each is refused, and the node keeps serving others."""

import json
import os
import socket
import struct

from harness import Cluster, wait_for
from noise_client import MSG_GET, MSG_PUT, NoiseClient, read_key


def raw(n):
    s = socket.create_connection(("127.0.0.1", n.port), 5)
    s.settimeout(5)
    return s


def closed_by_node(s, within=5.0):
    """True when the node closes s within the time given."""
    s.settimeout(within)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def only_itself(n):
    """True once the node holds no connection but the one asking."""
    r = n.kvcli("--json", "status")
    return r.returncode == 0 and json.loads(r.stdout)["connections"] == 1


def test_garbage_truncation_and_huge_lengths_leave_node_serving():
    c = Cluster()
    try:
        n = c.node(extra=["--handshake-timeout-ms", "1000"])
        assert n.kvcli("put", "before", "1").returncode == 0

        s = raw(n)
        s.sendall(os.urandom(65536))
        assert closed_by_node(s), "random bytes were not refused"

        s = raw(n)
        s.sendall(b"\xff\xff\xff\xff")  # a 4 GiB length prefix
        assert closed_by_node(s, 2), "4 GiB length prefix was not refused"

        s = raw(n)
        s.sendall(b"\x00\x01\x00\x00" + b"\x00" * 1000)  # 65536 > limit
        assert closed_by_node(s, 2)

        s = raw(n)
        s.sendall(struct.pack(">I", 200) + b"x" * 10)  # truncated frame
        s.close()

        stalled = raw(n)  # a truncated frame left open
        stalled.sendall(struct.pack(">I", 48) + b"y" * 20)
        silent = raw(n)  # a connection that never says anything

        # Meanwhile other clients are served.
        for i in range(5):
            assert n.kvcli("put", "during-%d" % i, "v").returncode == 0
        assert n.kvcli("get", "before").stdout == b"1"

        # The stalled and silent ones are dropped at the handshake deadline.
        assert closed_by_node(stalled, 4), "stalled handshake not dropped"
        assert closed_by_node(silent, 4), "silent connection not dropped"
        assert n.alive()
        log = n.log_text()
        assert "too large" in log and "handshake timed out" in log, log
        # Every hostile connection is gone from the node, none leaked.
        wait_for(lambda: only_itself(n), 10, "the connections to close")
    finally:
        c.close()


def test_authenticated_garbage_is_answered_or_refused():
    c = Cluster()
    try:
        n = c.node()
        cl = NoiseClient(n.addr, read_key(c.client_key))
        cl.handshake()
        # A malformed request inside a good channel: an error answer, and the
        # connection goes on.
        cl.send([1, MSG_PUT, 1])
        ans = cl.recv()
        assert ans[4] < 0 and "malformed" in ans[7], ans
        cl.send({"not": "an array"})
        assert cl.recv()[4] < 0
        cl.send([1, MSG_GET, 5, 0, b"k" * 1025, 2, 0])  # key over 1 KiB
        ans = cl.recv()
        assert ans[4] < 0 and "too large" in ans[7], ans
        assert cl.request(MSG_PUT, b"ok", b"v", 2, 0)[4] == 0
        # A tampered transport frame closes that connection only.
        body = bytearray(cl.tx.encrypt_with_ad(b"", b"\x00" + b"\x90"))
        body[-1] ^= 1
        cl.send_frame(bytes(body))
        assert closed_by_node(cl.sock, 3)
        # A replayed frame: the receiver's counter has moved on.
        cl = NoiseClient(n.addr, read_key(c.client_key))
        cl.handshake()
        frame = cl.tx.encrypt_with_ad(b"", b"\x00" + b"\x90")
        cl.send_frame(frame)
        cl.recv()  # the answer to the empty request
        cl.send_frame(frame)
        assert closed_by_node(cl.sock, 3)
        assert n.alive()
        assert n.kvcli("get", "ok").stdout == b"v"
    finally:
        c.close()


def test_many_hostile_connections_at_once():
    c = Cluster()
    try:
        # A few random bytes may not even make a length prefix: those wait
        # for the handshake deadline.
        n = c.node(extra=["--handshake-timeout-ms", "1000"])
        socks = []
        for i in range(50):
            s = raw(n)
            s.sendall(os.urandom(1 + i * 97))
            socks.append(s)
        # Each one is refused by the node itself, not just left behind.
        for i, s in enumerate(socks):
            assert closed_by_node(s, 5), "connection %d not refused" % i
            s.close()
        assert n.alive()
        wait_for(lambda: only_itself(n), 10, "the connections to close")
        assert n.kvcli("put", "k", "v").returncode == 0
        assert n.kvcli("get", "k").stdout == b"v"
    finally:
        c.close()


def test_clients_vanishing_with_writes_in_flight():
    c = Cluster()
    try:
        n = c.node()
        key = read_key(c.client_key)
        for round_ in range(20):
            cl = NoiseClient(n.addr, key)
            cl.handshake()
            for i in range(30):
                cl.send([1, MSG_PUT, i + 1, 0, b"gone-%d-%d" % (round_, i),
                         b"v" * 500, 2, 0])
            # Reset the connection at once: the node must drop the answers
            # of writes that complete after the client has gone.
            cl.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                               struct.pack("ii", 1, 0))
            cl.close()
        assert n.alive()
        # Every vanished client's connection is released once its writes
        # have finished.
        wait_for(lambda: only_itself(n), 10, "the connections to close")
        assert n.kvcli("put", "after", "ok").returncode == 0
        assert n.kvcli("get", "after").stdout == b"ok"
    finally:
        c.close()
