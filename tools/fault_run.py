#!/usr/bin/python3
"""essaim's fault-injection runner: real kvnode processes on loopback, a
concurrent workload, a seeded schedule of faults, then a checker.

The workload: one client per node, each with its own connection to its node
(so every node coordinates), doing unique-key writes ("u-CLIENT-SEQ", each
written once), writes to its own register ("r-CLIENT", a counter that only
grows) and reads of that register, and writes and reads of registers that
every client shares ("s-0", "s-1": values "CLIENT:N", ordered by version
alone, so no client's session clock can hide a clock that runs behind).

The faults: kill -9 and restart, SIGSTOP/SIGCONT, majority/minority and
bridge partitions, 20% datagram loss with delayed TCP, duplicated and
corrupted datagrams and frames, clock skew (within and far beyond
--max-clock-offset-ms, with anti-entropy rounds every 2 s), and a node whose
LMDB map fills up. Nodes start with --fault-injection; `kvcli fault` applies the rest.

After the schedule everything heals, the runner waits for convergence, and
checks that:
  - every acknowledged write reads back, or a later acknowledged write to the
    same key superseded it (lost writes: 0);
  - no read returned a value never written, nor one whose write was
    answered "it was not applied" (phantom values: 0);
  - no register read went backwards for the client that wrote it, and no
    read of a shared register returned a version older than a write to it
    acknowledged before the read began (stale reads: 0); the final version
    of a shared register is at least every acknowledged one (lost: 0);
  - all replicas of every key hold the same newest version;
  - no kvnode exited except those the schedule killed;
  - corrupted and duplicated traffic was refused by authentication, never
    taken as a message.

The report goes to stdout and OUT/report.json, the full history to
OUT/history.jsonl. The seed and the schedule replay a run:
  tools/fault_run.py --seed N [--duration S]

Exit status: 0 when every check holds, 1 when one fails, 2 on a usage or
set-up error.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import free_port  # noqa: E402
from noise_client import NoiseClient, Closed, read_key  # noqa: E402

MSG_PUT, MSG_GET, MSG_WHERE = 1, 2, 7
MSG_RESULT, MSG_WHERE_RESULT = 16, 21
CONS = {"one": 1, "quorum": 2, "all": 3}
ERR_NAMES = {
    -4: "not found", -9: "storage full", -11: "timeout", -12: "unavailable",
    -21: "closed", -22: "busy", -23: "clock offset", -3: "invalid",
    -10: "read-only", -2: "io",
}
ERR_NOT_FOUND, ERR_TIMEOUT = -4, -11
WHERE_ANSWERED = 0


class Client:
    """One session with one node: the session clock goes with every request,
    so this client's later writes always beat its earlier ones (DESIGN 4)."""

    def __init__(self, addr, psk, timeout):
        self.addr, self.psk, self.timeout = addr, psk, timeout
        self.conn = None
        self.hlc = 0

    def _connect(self):
        if self.conn is None:
            c = NoiseClient(self.addr, self.psk, timeout=self.timeout)
            try:
                welcome = c.handshake()
            except Exception:
                c.close()
                raise
            self.hlc = max(self.hlc, welcome[3])
            self.conn = c
        return self.conn

    def drop(self):
        if self.conn:
            self.conn.close()
        self.conn = None

    def request(self, mtype, *fields):
        """Returns the answer, or raises OSError/Closed (outcome unknown)."""
        try:
            c = self._connect()
            rid = c.next_id
            c.next_id += 1
            c.send([1, mtype, rid, self.hlc] + list(fields))
            ans = c.recv()
            if ans[2] != rid:
                raise Closed()
            self.hlc = max(self.hlc, ans[3])
            return ans
        except Exception:
            self.drop()
            raise


class Node:
    def __init__(self, run, i):
        self.run, self.i = run, i
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.data = os.path.join(run.dir, "n%d" % i)
        self.log = os.path.join(run.dir, "n%d.log" % i)
        self.proc = None
        self.map_mb = None  # a small map while the "full" fault lasts
        self.killed = False  # by the schedule: may be down
        self.exits = []  # unexpected exit codes

    def start(self):
        args = [os.path.join(self.run.bin, "kvnode"), "--data", self.data,
                "--listen", self.addr, "--cluster-key", self.run.cluster_key,
                "--client-key", self.run.client_key, "--fault-injection",
                "--zone", "z%d" % (self.i % 3),
                "--replicas", str(self.run.args.replicas),
                "--join", ",".join(n.addr for n in self.run.nodes),
                "--join-timeout-ms", "2000", "--gossip-period-ms", "200",
                "--gossip-ack-timeout-ms", "100", "--push-pull-ms", "2000",
                "--request-timeout-ms", "2000",
                # Anti-entropy rounds every 2 s, so that repairs run while
                # faults do (a fast clock among them).
                "--ae-interval-ms", "2000"]
        if self.map_mb:
            args += ["--map-size-mb", str(self.map_mb)]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=logf, stderr=logf)
        logf.close()
        self.killed = False
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("n%d exited at start (%d); see %s" %
                                   (self.i, self.proc.returncode, self.log))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("n%d did not start listening" % self.i)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL, snapshot=True):
        self.killed = True
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            if snapshot:  # counters restart with the process
                self.run.snapshots.setdefault(self.i, []).append(
                    (self.json("fault", "show") or {},
                     self.json("status") or {}))
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def kvcli(self, *args, check=True):
        r = subprocess.run(
            [os.path.join(self.run.bin, "kvcli"), "--node", self.addr,
             "--key", self.run.client_key, "--timeout", "3000"] + list(args),
            capture_output=True, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError("n%d: kvcli %s: %s" %
                               (self.i, " ".join(args), r.stderr.decode()))
        return r

    def json(self, *args):
        r = self.kvcli("--json", *args, check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None


class Run:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.dir = tempfile.mkdtemp(prefix="essaim-fault-")
        self.out = os.path.abspath(args.out or self.dir)
        os.makedirs(self.out, exist_ok=True)
        self.rng = random.Random(args.seed)
        self.cluster_key = os.path.join(self.dir, "cluster.key")
        self.client_key = os.path.join(self.dir, "client.key")
        for k in (self.cluster_key, self.client_key):
            subprocess.run([os.path.join(self.bin, "kvcli"), "keygen", k],
                           check=True, capture_output=True)
        self.psk = read_key(self.client_key)
        self.nodes = []
        self.nodes = [Node(self, i) for i in range(args.nodes)]
        self.snapshots = {}  # node -> counters read just before each kill
        self.t0 = time.time()
        self.lock = threading.Lock()
        self.history = []
        self.faults = []
        self.stop = threading.Event()

    def now(self):
        return round(time.time() - self.t0, 3)

    def note(self, what, **kw):
        ev = dict(t=self.now(), fault=what, **kw)
        self.faults.append(ev)
        print("  %7.2fs  %s %s" % (ev["t"], what,
                                    " ".join("%s=%s" % i for i in kw.items())),
              flush=True)

    # ---- workload ----

    def record(self, **ev):
        with self.lock:
            self.history.append(ev)

    def client_loop(self, c):
        node = self.nodes[c % len(self.nodes)]
        if self.args.clients_on is not None:
            node = self.nodes[self.args.clients_on]
        cl = Client(node.addr, self.psk, 3.0)
        rng = random.Random(self.args.seed * 1000 + c)
        cons = CONS[self.args.consistency]
        seq = counter = shared = 0
        reg = b"r-%d" % c
        while not self.stop.is_set():
            r = rng.random()
            if r < 0.45:
                seq += 1
                key, value, op = b"u-%d-%d" % (c, seq), b"%d:%d" % (c, seq), \
                    "put"
            elif r < 0.7:
                counter += 1
                key, value, op = reg, b"%d" % counter, "put"
            elif r < 0.8:
                shared += 1
                key, value, op = b"s-%d" % rng.randrange(2), \
                    b"%d:%d" % (c, shared), "put"
            elif r < 0.9:
                key, value, op = reg, None, "get"
            else:
                key, value, op = b"s-%d" % rng.randrange(2), None, "get"
            t1 = self.now()
            try:
                if op == "put":
                    ans = cl.request(MSG_PUT, key, value, cons, 2000)
                else:
                    ans = cl.request(MSG_GET, key, CONS["quorum"], 2000)
                code = ans[4]
                ev = dict(client=c, op=op, key=key.decode(), t1=t1,
                          t2=self.now(), code=code, version=ans[5])
                if op == "put":
                    ev["value"] = value.decode()
                elif code == 0:
                    ev["value"] = ans[6].decode(errors="replace")
                # A failed write is a definite failure only when the node
                # says nothing took it; a timed-out one, or one that "may
                # still have been applied", has an unknown outcome.
                text = ans[7] if len(ans) > 7 else ""
                if isinstance(text, bytes):
                    text = text.decode(errors="replace")
                ev["outcome"] = ("ok" if code == 0 else
                                 "not found" if code == ERR_NOT_FOUND else
                                 "fail" if op == "get" or
                                 "not applied" in text else
                                 "unknown")
            except (OSError, Closed, Exception) as e:  # noqa: B014
                ev = dict(client=c, op=op, key=key.decode(), t1=t1,
                          t2=self.now(), code=None,
                          outcome="unknown" if op == "put" else "fail",
                          error=type(e).__name__)
                if op == "put":
                    ev["value"] = value.decode()
            self.record(**ev)
            # A steady pace (about 50 operations a second per client) keeps
            # the history checkable; failures back off a little more.
            time.sleep(0.02 if ev["outcome"] in ("ok", "not found") else 0.1)
        cl.drop()

    # ---- faults ----

    def fault_all(self, *args):
        for n in self.nodes:
            if n.alive():
                n.kvcli("fault", *args, check=False)

    def block(self, groups):
        """Partitions: nodes in different groups cannot reach each other;
        a node in two groups (a bridge) reaches both."""
        for n in self.nodes:
            mine = [g for g in groups if n.i in g]
            reach = set(j for g in mine for j in g)
            cut = [m.addr for m in self.nodes if m.i not in reach]
            if n.alive():
                n.kvcli("fault", "block", *cut, check=False)

    def heal_node(self, n):
        if not n.alive():
            n.start()
        else:
            n.proc.send_signal(signal.SIGCONT)

    def apply(self, kind, hold):
        rng, nodes = self.rng, self.nodes
        n = rng.choice(nodes)
        ids = [m.i for m in nodes]
        if kind == "kill":
            self.note("kill -9", node=n.i, restart_after=hold)
            n.kill()
            time.sleep(hold)
            n.start()
            self.note("restarted", node=n.i)
        elif kind == "pause":
            self.note("SIGSTOP", node=n.i, for_s=hold)
            n.proc.send_signal(signal.SIGSTOP)
            time.sleep(hold)
            n.proc.send_signal(signal.SIGCONT)
            self.note("SIGCONT", node=n.i)
        elif kind == "partition":
            rng.shuffle(ids)
            k = len(ids) // 2
            groups = [ids[:k], ids[k:]]
            self.note("partition", minority=sorted(groups[0]),
                      majority=sorted(groups[1]))
            self.block(groups)
            time.sleep(hold)
            self.fault_all("block")
            self.note("partition healed")
        elif kind == "bridge":
            rng.shuffle(ids)
            mid = len(ids) // 2
            groups = [ids[:mid + 1], ids[mid:]]
            self.note("bridge partition", bridge=ids[mid],
                      sides=[sorted(groups[0]), sorted(groups[1])])
            self.block(groups)
            time.sleep(hold)
            self.fault_all("block")
            self.note("bridge healed")
        elif kind == "loss":
            self.note("20% datagram loss and 20+-30 ms TCP delay, all nodes")
            self.fault_all("set", "*", "--drop", "20", "--dir", "both",
                           "--transport", "udp")
            self.fault_all("set", "*", "--delay", "20", "--jitter", "30",
                           "--transport", "tcp")
            time.sleep(hold)
            self.fault_all("clear")
            self.note("loss cleared")
        elif kind == "corrupt":
            self.note("5% duplicated, 5% corrupted, 5% reordered datagrams; "
                      "0.5% corrupted and 0.5% duplicated frames", node=n.i)
            n.kvcli("fault", "set", "*", "--dup", "5", "--corrupt", "5",
                    "--reorder", "5", "--dir", "both", "--transport", "udp",
                    check=False)
            n.kvcli("fault", "set", "*", "--dup", "0.5", "--corrupt", "0.5",
                    "--transport", "tcp", check=False)
            time.sleep(hold)
            n.kvcli("fault", "clear", check=False)
            self.note("corruption cleared", node=n.i)
        elif kind == "clock":
            skew = rng.choice([-3000, -800, 300, 2000])
            self.note("clock skew", node=n.i, offset_ms=skew)
            n.kvcli("fault", "clock", str(skew), check=False)
            time.sleep(hold)
            n.kvcli("fault", "clock", "0", check=False)
            self.note("clock restored", node=n.i)
        elif kind == "fast-clock":
            # Far beyond --max-clock-offset-ms (500): the node's peers refuse
            # its messages and records, anti-entropy included, while the
            # clients keep writing through it.
            self.note("clock 5 s fast while anti-entropy runs", node=n.i)
            n.kvcli("fault", "clock", "5000", check=False)
            time.sleep(hold)
            n.kvcli("fault", "clock", "0", check=False)
            self.note("clock restored", node=n.i)
        elif kind == "full":
            size = os.path.getsize(os.path.join(n.data, "data.mdb"))
            n.map_mb = max(1, size // (1 << 20) + 1)
            self.note("restart with a full LMDB map", node=n.i,
                      map_mb=n.map_mb)
            n.kill()
            n.start()
            time.sleep(hold)
            n.kill(signal.SIGTERM)
            n.map_mb = None
            n.start()
            self.note("map size restored", node=n.i)

    def schedule(self):
        kinds = ["kill", "pause", "partition", "bridge", "loss", "corrupt",
                 "clock", "fast-clock", "full"]
        end = self.t0 + self.args.duration
        first = True
        while time.time() < end:
            order = kinds[:]
            self.rng.shuffle(order)
            for kind in order:
                if time.time() >= end:
                    break
                hold = self.rng.uniform(*self.args.hold)
                self.apply(kind, hold)
                time.sleep(self.rng.uniform(0.5, 2.0))
            if first and self.args.once:
                break
            first = False

    def lossy_w1_schedule(self):
        """For the checker's negative test: node 0 is cut off while the
        clients write through it, then loses its disk (kill -9, data gone
        but its key), and comes back."""
        n0 = self.nodes[0]
        self.note("partition", minority=[0],
                  majority=[m.i for m in self.nodes[1:]])
        self.block([[0], [m.i for m in self.nodes[1:]]])
        time.sleep(self.args.hold[1])
        self.note("kill -9 and lose the data directory (node key kept)",
                  node=0)
        n0.kill()
        for f in os.listdir(n0.data):
            if f != "node.key":
                os.remove(os.path.join(n0.data, f))
        self.fault_all("block")
        n0.start()
        self.note("restarted", node=0)

    # ---- heal, converge, check ----

    def heal(self):
        for n in self.nodes:
            if n.map_mb:
                n.kill(signal.SIGTERM)
                n.map_mb = None
            self.heal_node(n)
        self.fault_all("clear")
        self.note("healed everything")

    def wait_converged(self, deadline_s):
        """Until every node sees every member alive and holds no hints."""
        t = time.time()
        while time.time() - t < deadline_s:
            ok = True
            for n in self.nodes:
                s = n.json("status")
                if (not s or s["members_alive"] != len(self.nodes) or
                        s["hints"] != 0):
                    ok = False
                    break
            if ok:
                return time.time() - t
            time.sleep(0.5)
        return None

    def check(self):
        hist = self.history
        report = {"lost": [], "stale": [], "phantom": [], "diverged": [],
                  "unexpected_exits": [], "protocol_errors": []}
        # What each key may hold: values attempted (acked or not), and the
        # newest acknowledged one.
        attempted, acked, not_applied, puts = {}, {}, {}, {}
        for ev in hist:
            if ev["op"] != "put":
                continue
            puts.setdefault(ev["key"], []).append(ev)
            if ev["outcome"] == "fail":
                not_applied.setdefault(ev["key"], set()).add(ev["value"])
                continue
            attempted.setdefault(ev["key"], set()).add(ev["value"])
            if ev["outcome"] == "ok":
                acked.setdefault(ev["key"], []).append(ev)
        # Reads: a value never written, or a register read older than the
        # client's own last write acknowledged before the read began.
        for ev in hist:
            if ev["op"] != "get" or ev["outcome"] != "ok":
                continue
            key = ev["key"]
            if ev["value"] not in attempted.get(key, ()):
                report["phantom"].append(ev)
                continue
            if key.startswith("s-"):
                # Shared: by version, the only order several writers have.
                before = [w["version"] for w in acked.get(key, [])
                          if w["t2"] < ev["t1"]]
                if before and ev["version"] < max(before):
                    report["stale"].append(
                        dict(ev, expected_version_at_least=max(before)))
                continue
            before = [int(w["value"]) for w in acked.get(key, [])
                      if w["t2"] < ev["t1"]]
            if before and int(ev["value"]) < max(before):
                report["stale"].append(dict(ev, expected_at_least=max(before)))
        # How far apart the replicas are before the checker reads anything
        # (its reads repair what they find).
        cl = Client(self.nodes[0].addr, self.psk, 5.0)
        keys = sorted(set(attempted) | set(not_applied))
        pending = self.diverged(cl, keys)
        report["diverged_first"] = len(pending)
        # Final state: every key read at quorum through a node.
        final = {}
        for key in keys:
            for _ in range(5):
                try:
                    ans = cl.request(MSG_GET, key.encode(), CONS["quorum"],
                                     3000)
                    if ans[4] in (0, ERR_NOT_FOUND):
                        final[key] = (ans[6].decode() if ans[4] == 0
                                      else None, ans[5])
                        break
                except Exception:  # noqa: B902
                    time.sleep(0.2)
            else:
                final[key] = ("<unreadable>", 0)
        for key, writes in acked.items():
            value, version = final[key]
            if key.startswith("s-"):
                newest = max(w["version"] for w in writes)
                if value in (None, "<unreadable>") or version < newest:
                    report["lost"].append(dict(key=key, acked_version=newest,
                                               final=value,
                                               final_version=version))
                    continue
                # In real time too: the final value's write must not have
                # been answered before an acknowledged write began (that
                # one would have had to win; a clock running fast can stamp
                # an older write above it).
                src = [w for w in puts.get(key, ()) if w["value"] == value]
                later = [w for w in writes
                         if src and w["t1"] > src[0]["t2"]]
                if later:
                    report["lost"].append(dict(key=key, final=value,
                                               final_written=src[0],
                                               superseded_by=later[0]))
            elif key.startswith("u-"):
                if value != writes[0]["value"]:
                    report["lost"].append(dict(key=key, acked=writes[0],
                                               final=value))
            else:
                newest = max(int(w["value"]) for w in writes)
                if value is None or value == "<unreadable>" or \
                        int(value) < newest:
                    report["lost"].append(dict(key=key, acked_value=newest,
                                               final=value))
        for key, (value, _) in final.items():
            if value not in (None, "<unreadable>") and \
                    value not in attempted.get(key, ()):
                report["phantom"].append(dict(key=key, final=value))
        # Every replica holds the same newest version (hints and read repair
        # may still be landing: try for a while, reading at "all", which
        # reads every replica and repairs the stale ones).
        t = time.time()
        pending = self.diverged(cl, pending)
        while pending and time.time() - t < 60:
            for key in pending:
                try:
                    cl.request(MSG_GET, key.encode(), CONS["all"], 3000)
                except Exception:  # noqa: B902
                    pass
            time.sleep(1)
            pending = self.diverged(cl, pending)
        report["diverged"] = pending
        report["replicas_converged_s"] = round(time.time() - t, 1)
        cl.drop()
        for n in self.nodes:
            if n.exits:
                report["unexpected_exits"].append(dict(node=n.i,
                                                       codes=n.exits))
            text = open(n.log, "rb").read().decode(errors="replace")
            for bad in ("malformed replica message", "AddressSanitizer",
                        "runtime error:", "LeakSanitizer"):
                if bad in text:
                    report["protocol_errors"].append(dict(node=n.i, text=bad))
        return report

    def diverged(self, cl, keys):
        """The keys whose replicas do not all answer with one version."""
        out = []
        for key in keys:
            try:
                ans = cl.request(MSG_WHERE, key.encode())
            except Exception:  # noqa: B902
                out.append(key)
                continue
            rows = ans[5] if ans[1] == MSG_WHERE_RESULT else []
            versions = set(r[5] if r[3] else 0 for r in rows)
            if (len(rows) < min(self.args.replicas, len(self.nodes)) or
                    any(r[1] != WHERE_ANSWERED for r in rows) or
                    len(versions) != 1):
                out.append(key)
        return out

    def watch_exits(self):
        """Notes any kvnode that exits without the schedule killing it."""
        while not self.stop.is_set():
            for n in self.nodes:
                if n.proc and not n.killed and n.proc.poll() is not None:
                    n.exits.append(n.proc.returncode)
                    self.note("UNEXPECTED EXIT", node=n.i,
                              code=n.proc.returncode)
                    n.killed = True
            time.sleep(0.2)

    def counters(self):
        tot = {"corrupted": 0, "duplicated": 0, "dropped": 0, "reordered": 0,
               "delayed": 0, "blocked_count": 0, "gossip_rejected": 0,
               "gossip_replayed": 0, "frames_rejected": 0,
               "peer_rejected": 0}
        # Counters restart with a node; the runner sums what each node
        # reported last before it was killed (see snapshot()) and now.
        for n in self.nodes:
            for src in (self.snapshots.get(n.i, []) +
                        [(n.json("fault", "show") or {},
                          n.json("status") or {})]):
                f, s = src
                for k in tot:
                    tot[k] += f.get(k, 0) + s.get(k, 0)
        return tot


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--duration", type=float, default=600,
                    help="seconds of faults (default 600)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", help="where report.json and history.jsonl go")
    ap.add_argument("--consistency", default="quorum",
                    choices=["one", "quorum", "all"],
                    help="of the workload's writes")
    ap.add_argument("--once", action="store_true",
                    help="each kind of fault once, then stop")
    ap.add_argument("--hold", type=float, nargs=2, default=(3.0, 8.0),
                    metavar=("MIN", "MAX"), help="seconds a fault lasts")
    ap.add_argument("--scenario", default="mixed",
                    choices=["mixed", "lossy-w1"],
                    help="lossy-w1: the checker's negative test")
    ap.add_argument("--clients-on", type=int, default=None,
                    help="every client talks to this node")
    ap.add_argument("--keep", action="store_true",
                    help="keep the nodes' directories")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    if args.nodes < 3:
        ap.error("--nodes: at least 3")
    run = Run(args)
    print("essaim fault run: seed %d, %d nodes, N=%d, writes at %s, "
          "scenario %s%s" %
          (args.seed, args.nodes, args.replicas, args.consistency,
           args.scenario, "" if args.once else
           ", %.0f s of faults" % args.duration), flush=True)
    print("replay: %s --seed %d --duration %g%s%s" %
          (sys.argv[0], args.seed, args.duration,
           " --once" if args.once else "",
           " --scenario %s --consistency %s --clients-on %s" %
           (args.scenario, args.consistency, args.clients_on)
           if args.scenario != "mixed" else ""), flush=True)
    ok = False
    try:
        for n in run.nodes:
            n.start()
        time.sleep(3)  # all joined
        run.t0 = time.time()
        watcher = threading.Thread(target=run.watch_exits, daemon=True)
        watcher.start()
        clients = [threading.Thread(target=run.client_loop, args=(c,))
                   for c in range(args.nodes)]
        for t in clients:
            t.start()
        time.sleep(2)
        if args.scenario == "lossy-w1":
            run.lossy_w1_schedule()
        else:
            run.schedule()
        time.sleep(1)
        run.stop.set()
        for t in clients:
            t.join()
        run.stop.clear()
        heal_t = time.time()
        run.heal()
        conv = run.wait_converged(120)
        run.note("converged" if conv is not None else "NOT CONVERGED",
                 seconds=round(conv, 1) if conv is not None else None)
        report = run.check()
        run.stop.set()
        report["heal_to_convergence_s"] = (round(conv, 1) if conv is not None
                                           else None)
        report["heal_to_checked_s"] = round(time.time() - heal_t, 1)
        report["counters"] = run.counters()
        ok = print_report(run, report)
    finally:
        run.stop.set()
        for n in run.nodes:
            n.kill(snapshot=False)
        if not args.keep:
            shutil.rmtree(run.dir, ignore_errors=True)
        else:
            print("node directories kept in %s" % run.dir)
    sys.exit(0 if ok else 1)


def print_report(run, report):
    hist = run.history
    ops = {}
    for ev in hist:
        o = ops.setdefault(ev["op"], {"tried": 0, "ok": 0, "unknown": 0,
                                      "failed": {}})
        o["tried"] += 1
        if ev["outcome"] in ("ok", "not found"):
            o["ok"] += 1
        elif ev["outcome"] == "unknown":
            o["unknown"] += 1
        else:
            why = ERR_NAMES.get(ev["code"], ev.get("error") or
                                str(ev["code"]))
            o["failed"][why] = o["failed"].get(why, 0) + 1
    c = report["counters"]
    corrupt_in = c["corrupted"] + c["duplicated"]
    refused = c["gossip_rejected"] + c["gossip_replayed"] + \
        c["frames_rejected"]
    auth_ok = corrupt_in == 0 or refused > 0
    ok = (not report["lost"] and not report["stale"] and
          not report["phantom"] and not report["diverged"] and
          not report["unexpected_exits"] and not report["protocol_errors"] and
          report["heal_to_convergence_s"] is not None and auth_ok)
    out = dict(seed=run.args.seed, nodes=len(run.nodes),
               replicas=run.args.replicas, consistency=run.args.consistency,
               scenario=run.args.scenario, duration_s=run.args.duration,
               operations=ops, faults=run.faults,
               lost=len(report["lost"]), stale=len(report["stale"]),
               phantom=len(report["phantom"]),
               diverged=len(report["diverged"]),
               unexpected_exits=report["unexpected_exits"],
               protocol_errors=report["protocol_errors"],
               heal_to_convergence_s=report["heal_to_convergence_s"],
               replicas_converged_s=report["replicas_converged_s"],
               diverged_at_first_look=report.get("diverged_first", 0),
               heal_to_checked_s=report["heal_to_checked_s"],
               counters=c, passed=ok,
               examples=dict(lost=report["lost"][:5],
                             stale=report["stale"][:5],
                             phantom=report["phantom"][:5],
                             diverged=report["diverged"][:5]))
    with open(os.path.join(run.out, "report.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(run.out, "history.jsonl"), "w") as f:
        for ev in sorted(hist, key=lambda e: e["t1"]):
            f.write(json.dumps(ev) + "\n")
    print("\n== report (seed %d)" % run.args.seed)
    for op, o in sorted(ops.items()):
        print("  %-4s tried %6d  acknowledged %6d  unknown outcome %4d  "
              "failed %s" % (op, o["tried"], o["ok"], o["unknown"],
                             o["failed"] or 0))
    print("  faults applied: %d" % len(run.faults))
    print("  lost writes %d, stale reads %d, phantom values %d, keys whose "
          "replicas diverge %d" % (out["lost"], out["stale"], out["phantom"],
                                   out["diverged"]))
    print("  heal to convergence: %s s (members alive, no hints); replicas "
          "equal %s s later (%d keys differed before the checker read, "
          "which repairs)" % (out["heal_to_convergence_s"],
                              out["replicas_converged_s"],
                              out["diverged_at_first_look"]))
    print("  unexpected exits: %s; protocol errors in logs: %s" %
          (report["unexpected_exits"] or "none",
           report["protocol_errors"] or "none"))
    print("  injected: %d corrupted, %d duplicated, %d dropped, %d "
          "reordered, %d delayed, %d blocked" %
          (c["corrupted"], c["duplicated"], c["dropped"], c["reordered"],
           c["delayed"], c["blocked_count"]))
    print("  refused by authentication: %d datagrams (bad tag), %d replayed "
          "datagrams, %d stream frames" %
          (c["gossip_rejected"], c["gossip_replayed"], c["frames_rejected"]))
    for k in ("lost", "stale", "phantom", "diverged"):
        for ex in report[k][:3]:
            print("  %s: %s" % (k, json.dumps(ex)))
    print("  history: %s" % os.path.join(run.out, "history.jsonl"))
    print("  %s" % ("PASS" if ok else "FAIL"))
    return ok


if __name__ == "__main__":
    main()
