"""node/server.c end to end — starting, limits and stopping: SIGTERM and SIGINT exit 0, loose key file
permissions are refused, the connection limit holds, and idle connections
are dropped."""

import os
import signal
import socket
import time

from harness import Cluster, Node


def test_sigterm_and_sigint_exit_zero_and_keep_data():
    c = Cluster()
    try:
        n = c.node()
        assert n.kvcli("put", "k", "v").returncode == 0
        assert n.stop() == 0
        assert "stopped cleanly" in n.log_text()
        n.start()
        assert n.kvcli("get", "k").stdout == b"v"
        n.proc.send_signal(signal.SIGINT)
        assert n.proc.wait(timeout=30) == 0
    finally:
        c.close()


def test_first_start_creates_data_dir_and_node_key():
    c = Cluster()
    try:
        n = c.node()
        key = os.path.join(n.data, "node.key")
        assert os.stat(key).st_mode & 0o777 == 0o600
        first = open(key).read()
        n.stop()
        n.start()
        assert open(key).read() == first
        assert "existing key" in n.log_text()
    finally:
        c.close()


def test_key_files_readable_by_others_are_refused():
    c = Cluster()
    try:
        os.chmod(c.client_key, 0o644)
        n = Node(c, "loose", [])
        c.nodes.append(n)
        n.start(wait=False)
        assert n.proc.wait(timeout=10) != 0
        assert "readable by group or others" in n.log_text()
        # kvcli refuses it as well, without sending anything.
        os.chmod(c.client_key, 0o600)
        good = c.node("good")
        os.chmod(c.client_key, 0o640)
        r = good.kvcli("get", "x")
        assert r.returncode == 5 and b"chmod 600" in r.stderr, r
    finally:
        c.close()


def test_connection_limit_refuses_extra_clients():
    c = Cluster()
    try:
        n = c.node(extra=["--max-connections", "2"])
        time.sleep(0.3)  # let the node see the readiness probe close
        held = [socket.create_connection(("127.0.0.1", n.port)) for _ in
                range(2)]
        time.sleep(0.2)
        r = n.kvcli("get", "x")
        assert r.returncode != 0 and r.returncode != 1, r
        assert "connections open" in n.log_text()
        for s in held:
            s.close()
        time.sleep(0.2)
        assert n.kvcli("put", "x", "1").returncode == 0
    finally:
        c.close()


def test_idle_connection_is_dropped():
    c = Cluster()
    try:
        n = c.node(extra=["--idle-timeout-ms", "300"])
        from noise_client import NoiseClient, read_key, Closed
        cl = NoiseClient(n.addr, read_key(c.client_key))
        cl.handshake()
        time.sleep(1.5)
        try:
            cl.recv()
            raise AssertionError("idle connection was not closed")
        except (Closed, ConnectionResetError):
            pass
        assert "idle timeout" in n.log_text()
    finally:
        c.close()
