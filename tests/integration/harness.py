"""Real-process test harness for essaim: starts kvnode on loopback ports with
fresh secrets, runs kvcli, and cleans up. Every address is 127.0.0.1."""

import os
import signal
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("ESSAIM_BIN", "build/release")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A working directory with a cluster key, a client key and nodes."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="essaim-it-")
        self.cluster_key = os.path.join(self.dir, "cluster.key")
        self.client_key = os.path.join(self.dir, "client.key")
        self.nodes = []
        for path in (self.cluster_key, self.client_key):
            self.kvcli_raw(["keygen", path], check=True)

    def kvcli_raw(self, args, check=False, stdin=None, env=None):
        r = subprocess.run([os.path.join(BIN, "kvcli")] + args, input=stdin,
                           capture_output=True, env=env, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError("kvcli %s: exit %d: %s" %
                                 (args, r.returncode, r.stderr.decode()))
        return r

    def node(self, name="n1", extra=(), cluster_key=None):
        n = Node(self, name, list(extra), cluster_key)
        self.nodes.append(n)
        n.start()
        return n

    def close(self):
        for n in self.nodes:
            n.kill()
        # Under `make check` the nodes run with sanitizers: any report in a
        # node's log fails the test, even if the node went on serving.
        reports = [n.name for n in self.nodes if os.path.exists(n.log) and
                   any(s in n.log_text() for s in
                       ("AddressSanitizer", "runtime error:",
                        "LeakSanitizer"))]
        logs = {n.name: n.log_text() for n in self.nodes if n.name in reports}
        subprocess.run(["rm", "-rf", self.dir])
        if reports:
            raise AssertionError("sanitizer report in %s:\n%s" %
                                 (reports, logs))


class Node:
    def __init__(self, cluster, name, extra, cluster_key=None):
        self.cluster = cluster
        self.cluster_key = cluster_key or cluster.cluster_key
        self.name = name
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.data = os.path.join(cluster.dir, name)
        self.log = os.path.join(cluster.dir, name + ".log")
        self.extra = extra
        self.proc = None

    def start(self, wait=True):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "kvnode"), "--data", self.data, "--listen",
             self.addr, "--cluster-key", self.cluster_key,
             "--client-key", self.cluster.client_key] + self.extra,
            stdout=logf, stderr=logf)
        logf.close()
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s exited with %d at start:\n%s" %
                                     (self.name, self.proc.returncode,
                                      self.log_text()))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("%s did not start listening" % self.name)

    def kvcli(self, *args, stdin=None, key=None, extra=()):
        return self.cluster.kvcli_raw(
            ["--node", self.addr, "--key", key or self.cluster.client_key] +
            list(extra) + list(args), stdin=stdin)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self):
        """SIGTERM; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")
