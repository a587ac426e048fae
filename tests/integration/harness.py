"""Real-process test harness for essaim: starts kvnode on loopback ports with
fresh secrets, runs kvcli, and cleans up. Every address is 127.0.0.1.

Teardown is a check too: Cluster.close() stops every node with SIGTERM and
fails the test when a node the test did not stop has died, when a node does
not exit 0, or when a log holds a sanitizer report (a leak among them) or a
secret. run.py keeps the logs of a failed test under build/test-logs."""

import base64
import os
import random
import signal
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("ESSAIM_BIN", "build/release")
# kvcli pins the key of every node it reaches (known nodes). Test clusters
# come and go on reused ports with new keys, so kvcli run by the tests, the
# fault run and the geo run pins nothing (/dev/null, as ssh's
# UserKnownHostsFile); test_identities.py gives its own file where pinning
# is what it tests.
os.environ["KV_KNOWN_NODES"] = os.devnull

# Every cluster made since run.py last looked: it keeps their logs when a
# test fails and removes their directories otherwise.
CLUSTERS = []

_used_ports = set()

# Words that only a sanitizer report or a crash puts in a node's log.
REPORTS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
           "UndefinedBehaviorSanitizer", "Segmentation fault", "core dumped")


def free_port():
    """A port free for TCP and UDP alike, below the kernel's ephemeral range
    (so no outgoing connection takes it while its node is down for a
    restart), and never handed out twice in one run."""
    rng = random.Random(os.getpid() * 7919 + time.monotonic_ns())
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        if port in _used_ports:
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port for TCP and UDP")


def wait_for(pred, timeout=20, what="condition", poll=0.1):
    """Polls pred() until it returns something true, and returns that;
    fails the test after timeout seconds."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out after %g s waiting for %s" %
                                 (timeout, what))
        time.sleep(poll)


class Writers:
    """count threads putting keys "wW-I" with value_of(w, i) through node
    (one kvcli each) until stop(); acked and tried map key to value."""

    def __init__(self, node, count, value_of):
        import threading
        self.acked, self.tried = {}, {}
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run,
                                          args=(node, w, value_of))
                         for w in range(count)]
        for t in self._threads:
            t.start()

    def _run(self, node, w, value_of):
        i = 0
        while not self._stop.is_set():
            k, v = "w%d-%05d" % (w, i), value_of(w, i)
            with self._lock:
                self.tried[k] = v
            if node.kvcli("put", k, stdin=v).returncode == 0:
                with self._lock:
                    self.acked[k] = v
            i += 1

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join()


class Cluster:
    """A working directory with a cluster key, a client key and nodes."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="essaim-it-")
        self.cluster_key = os.path.join(self.dir, "cluster.key")
        self.client_key = os.path.join(self.dir, "client.key")
        self.nodes = []
        self.closed = False
        CLUSTERS.append(self)
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

    def secrets(self):
        """Every secret key file's content in the forms a log could show."""
        out = []
        for f in os.listdir(self.dir):
            p = os.path.join(self.dir, f)
            if f.endswith(".key") and os.path.isfile(p):
                raw = open(p, "rb").read().strip()
                out.append(raw.decode(errors="replace"))
                try:
                    out.append(base64.b64decode(raw).hex())
                except ValueError:
                    pass
        return [s for s in out if len(s) >= 16]

    def close(self):
        """Stops every node with SIGTERM and checks how each one ended."""
        if self.closed:
            return
        self.closed = True
        problems = []
        for n in self.nodes:
            if n.proc is None:
                continue
            if not n.down_on_purpose and n.proc.poll() is not None:
                problems.append("%s died during the test (exit %d)" %
                                (n.name, n.proc.returncode))
            elif n.alive():
                n.proc.send_signal(signal.SIGCONT)
                n.proc.send_signal(signal.SIGTERM)
                try:
                    rc = n.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
                    rc = None
                if rc != 0:
                    problems.append("%s exited %s on SIGTERM" %
                                    (n.name, "late" if rc is None else rc))
        secrets = self.secrets()
        for n in self.nodes:
            if not os.path.exists(n.log):
                continue
            text = n.log_text()
            for word in REPORTS:
                if word in text:
                    problems.append("%s's log holds a report (%s)" %
                                    (n.name, word))
            if any(s in text for s in secrets):
                problems.append("%s's log holds a secret" % n.name)
        if problems:
            raise AssertionError("at teardown: " + "; ".join(problems))

    def tails(self, lines=50):
        out = []
        for n in self.nodes:
            if os.path.exists(n.log):
                out.append("---- %s (%s), last %d lines\n%s" % (
                    n.name, n.log, lines,
                    "\n".join(n.log_text().splitlines()[-lines:])))
        return "\n".join(out)


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
        self.down_on_purpose = False  # stopped or killed by the test
        self.env = None  # extra environment for kvnode

    def start(self, wait=True):
        logf = open(self.log, "ab")
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "kvnode"), "--data", self.data, "--listen",
             self.addr, "--cluster-key", self.cluster_key,
             "--client-key", self.cluster.client_key] + self.extra,
            stdout=logf, stderr=logf, env=env)
        self.down_on_purpose = False
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
        self.down_on_purpose = True
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self):
        """SIGTERM; returns the exit code."""
        self.down_on_purpose = True
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def log_text(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")
