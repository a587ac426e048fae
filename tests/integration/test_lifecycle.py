"""node/server.c end to end — starting, limits and stopping: SIGTERM and SIGINT exit 0, loose key file
permissions are refused, the connection limit holds, and idle connections
are dropped."""

import os
import signal
import time

from harness import Cluster, Node, wait_for


def test_sigterm_and_sigint_exit_zero_and_keep_data():
    c = Cluster()
    try:
        n = c.node()
        assert n.kvcli("put", "k", "v").returncode == 0
        assert n.stop() == 0
        assert "stopped cleanly" in n.log_text()
        n.start()
        assert n.kvcli("get", "k").stdout == b"v"
        n.down_on_purpose = True
        n.proc.send_signal(signal.SIGINT)
        assert n.proc.wait(timeout=30) == 0
    finally:
        c.close()


def test_a_second_node_on_a_data_directory_in_use_exits_1():
    """One kvnode per data directory: a second one, on another port, would
    share the node's identity and its LMDB environment."""
    c = Cluster()
    try:
        n = c.node()
        assert n.kvcli("put", "k", "v").returncode == 0
        twin = Node(c, "twin", [])
        twin.data = n.data
        c.nodes.append(twin)
        twin.start(wait=False)
        assert twin.proc.wait(timeout=30) == 1
        twin.down_on_purpose = True
        text = twin.log_text()
        assert "data directory %s is in use by another kvnode (pid %d)" % (
            n.data, n.proc.pid) in text, text
        # The first one serves on, and once it stops the directory is free.
        assert n.kvcli("get", "k").stdout == b"v"
        assert n.stop() == 0
        twin.start()
        assert twin.kvcli("get", "k").stdout == b"v"
    finally:
        c.close()


def test_a_client_key_equal_to_the_cluster_key_is_refused():
    c = Cluster()
    try:
        n = Node(c, "same", [], cluster_key=c.client_key)
        n.start(wait=False)
        assert n.proc.wait(timeout=30) == 2
        n.down_on_purpose = True
        assert "holds the cluster secret" in n.log_text(), n.log_text()
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
        n.down_on_purpose = True
        assert n.proc.wait(timeout=10) == 1
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
        from noise_client import NoiseClient, read_key, Closed

        def one_more():
            # A finished handshake proves the node counts the connection
            # (one refused while a closed probe is still counted retries).
            cl = NoiseClient(n.addr, read_key(c.client_key))
            try:
                cl.handshake()
            except (Closed, OSError):
                cl.close()
                return None
            held.append(cl)
            return cl
        held = []
        for _ in range(2):
            wait_for(one_more, 10, "a held connection")
        # Refused at accept, before any handshake: not a refused secret.
        r = n.kvcli("get", "x")
        assert r.returncode == 5, r
        assert b"closed the connection before the handshake" in r.stderr, r
        wait_for(lambda: "every connection slot is taken" in n.log_text(), 10,
                 "the refusal in the log")
        for cl in held:
            cl.close()
        wait_for(lambda: n.kvcli("put", "x", "1").returncode == 0, 10,
                 "a put once the held connections closed")
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
