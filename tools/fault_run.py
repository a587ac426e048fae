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

The run proves itself too: every fault command must succeed, and every
fault window must show its effect in the nodes' own counters (blocked
traffic for a partition, dropped and delayed traffic for loss, corrupted
traffic refused by authentication, the clock offset read back, local writes
refused by the full map, a process that died of SIGKILL or sat stopped);
every client must get ACKS acknowledged operations and every window at least
one; nodes stop with SIGTERM and must exit 0. A window without its effect
fails the run and is named (--ineffective KIND applies KIND as a no-op, to
show that it does).

The report goes to stdout and OUT/report.json, the full history to
OUT/history.jsonl, the nodes' logs to OUT/logs when the run fails. The seed
and the schedule replay a run:
  tools/fault_run.py --seed N [--duration S]

Exit status: 0 when every check holds, 1 when one fails, 2 on a usage or
set-up error, or a bug in the runner itself.
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


KINDS = ["kill", "pause", "partition", "bridge", "loss", "corrupt", "clock",
         "fast-clock", "full", "membership"]
# Where an authenticated message that fails to decode, or a sanitizer or a
# crash, shows in a node's log.
LOG_REPORTS = ("malformed replica message", "AddressSanitizer",
               "runtime error:", "LeakSanitizer", "Segmentation fault")
# Outcomes of a request the runner could not finish: the node may or may
# not have applied it. Anything else raised in a client is a runner bug.
UNKNOWN_ERRORS = (OSError, Closed, socket.timeout)


class RunnerError(Exception):
    """A set-up step or a fault command failed: the run proves nothing."""


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
                raise RunnerError("n%d exited at start (%d); see %s" %
                                  (self.i, self.proc.returncode, self.log))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RunnerError("n%d did not start listening" % self.i)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL, snapshot=True):
        """Stops the node on purpose; returns its exit status. A node that
        does not exit 0 on SIGTERM is an unexpected exit."""
        self.killed = True
        if not self.alive():
            return None
        self.proc.send_signal(signal.SIGCONT)
        if snapshot:  # counters restart with the process
            self.run.snapshots.setdefault(self.i, []).append(self.counters())
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            self.exits.append("no exit 30 s after signal %d" % sig)
        if sig == signal.SIGTERM and rc != 0:
            self.exits.append(rc)
        return rc

    def kvcli(self, *args, check=True):
        r = subprocess.run(
            [os.path.join(self.run.bin, "kvcli"), "--node", self.addr,
             "--key", self.run.client_key, "--timeout", "3000"] + list(args),
            capture_output=True, timeout=30)
        if check and r.returncode != 0:
            raise RunnerError("n%d: kvcli %s: %s" %
                              (self.i, " ".join(args), r.stderr.decode()))
        return r

    def json(self, *args):
        r = self.kvcli("--json", *args, check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def counters(self):
        """Fault and status counters in one map ({} when not answering)."""
        out = {}
        for src in (self.json("fault", "show"), self.json("status")):
            for k, v in (src or {}).items():
                if isinstance(v, int) and not isinstance(v, bool):
                    out[k] = out.get(k, 0) + v
        return out


def add_counters(tot, counters):
    for k, v in counters.items():
        tot[k] = tot.get(k, 0) + v
    return tot


def counters_sum(nodes):
    """What the nodes running now report, summed."""
    tot = {}
    for n in nodes:
        if n.alive():
            add_counters(tot, n.counters())
    return tot


def grew(before, after, *names):
    return {k: after.get(k, 0) - before.get(k, 0) for k in names}


def process_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"


class Run:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.abspath(args.bin)
        self.dir = tempfile.mkdtemp(prefix="essaim-fault-")
        self.out = os.path.abspath(args.out or os.path.join(
            ROOT, "build", "fault-runs", "seed-%d" % args.seed))
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
        self.windows = []  # one per fault applied, with its evidence
        self.runner_errors = []
        self.stop = threading.Event()  # the clients stop
        self.done = threading.Event()  # the exit watcher stops

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
        try:
            self.client_ops(c)
        except Exception as e:  # noqa: B902 - a bug here fails the run
            import traceback
            self.runner_errors.append("client %d: %s" % (
                c, traceback.format_exc()))
            print("  RUNNER ERROR in client %d: %r" % (c, e), flush=True)

    def client_ops(self, c):
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
            except UNKNOWN_ERRORS as e:
                ev = dict(client=c, op=op, key=key.decode(), t1=t1,
                          t2=self.now(), code=None,
                          outcome="unknown" if op == "put" else "fail",
                          error=type(e).__name__)
                if op == "put":
                    ev["value"] = value.decode()
            else:
                ev = answer_event(c, op, key, value, t1, self.now(), ans)
            self.record(**ev)
            # A steady pace (about 50 operations a second per client) keeps
            # the history checkable; failures back off a little more.
            time.sleep(0.02 if ev["outcome"] in ("ok", "not found") else 0.1)
        cl.drop()

    # ---- faults ----

    def fault_all(self, *args):
        for n in self.nodes:
            if n.alive():
                n.kvcli("fault", *args)

    def block(self, groups, ineffective=False):
        """Partitions: nodes in different groups cannot reach each other;
        a node in two groups (a bridge) reaches both."""
        for n in self.nodes:
            mine = [g for g in groups if n.i in g]
            reach = set(j for g in mine for j in g)
            cut = [m.addr for m in self.nodes if m.i not in reach]
            if n.alive():
                n.kvcli("fault", "block", *([] if ineffective else cut))

    def heal_node(self, n):
        if not n.alive():
            n.start()
        else:
            n.proc.send_signal(signal.SIGCONT)

    def fill(self, n):
        """Big writes through n until its full map refuses one."""
        big = os.urandom(100000)
        for i in range(40):
            if i % 5 == 4 and n.counters().get("store_full", 0):
                return
            r = subprocess.run(
                [os.path.join(self.bin, "kvcli"), "--node", n.addr, "--key",
                 self.client_key, "--timeout", "3000", "--consistency", "one",
                 "put", "fill-%d-%d" % (n.i, i), "-"], input=big,
                capture_output=True, timeout=30)
            if b"storage full" in r.stderr:
                return

    def apply(self, kind, hold):
        """Applies one fault for hold seconds; returns what the nodes say
        happened (the window's evidence) and whether that proves it."""
        rng, nodes = self.rng, self.nodes
        n = rng.choice(nodes)
        ids = [m.i for m in nodes]
        noop = kind == self.args.ineffective
        if noop:
            self.note("(applied as a no-op: --ineffective %s)" % kind)
        if kind == "kill":
            self.note("kill -9", node=n.i, restart_after=hold)
            rc = None if noop else n.kill(signal.SIGKILL)
            time.sleep(hold)
            if not n.alive():
                n.start()
            self.note("restarted", node=n.i)
            return dict(exit_status=rc), rc == -signal.SIGKILL
        if kind == "pause":
            self.note("SIGSTOP", node=n.i, for_s=hold)
            n.proc.send_signal(signal.SIGCONT if noop else signal.SIGSTOP)
            time.sleep(min(hold, 0.5))
            state = process_state(n.proc.pid)
            time.sleep(max(0, hold - 0.5))
            n.proc.send_signal(signal.SIGCONT)
            self.note("SIGCONT", node=n.i)
            return dict(process_state=state), state == "T"
        if kind in ("partition", "bridge"):
            rng.shuffle(ids)
            if kind == "partition":
                k = len(ids) // 2
                groups = [ids[:k], ids[k:]]
                self.note("partition", minority=sorted(groups[0]),
                          majority=sorted(groups[1]))
            else:
                mid = len(ids) // 2
                groups = [ids[:mid + 1], ids[mid:]]
                self.note("bridge partition", bridge=ids[mid],
                          sides=[sorted(groups[0]), sorted(groups[1])])
            before = counters_sum(nodes)
            self.block(groups, noop)
            time.sleep(hold)
            ev = grew(before, counters_sum(nodes), "blocked_count")
            self.fault_all("block")
            self.note("%s healed" % kind)
            return ev, ev["blocked_count"] > 0
        if kind == "loss":
            self.note("20% datagram loss and 20+-30 ms TCP delay, all nodes")
            before = counters_sum(nodes)
            self.fault_all("set", "*", "--drop", "0" if noop else "20",
                           "--dir", "both", "--transport", "udp")
            self.fault_all("set", "*", "--delay", "0" if noop else "20",
                           "--jitter", "0" if noop else "30",
                           "--transport", "tcp")
            ev = self.hold_until(hold, lambda: grew(
                before, counters_sum(nodes), "dropped", "delayed"),
                lambda e: e["dropped"] > 0 and e["delayed"] > 0, noop)
            self.fault_all("clear")
            self.note("loss cleared")
            return ev, ev["dropped"] > 0 and ev["delayed"] > 0
        if kind == "corrupt":
            self.note("5% duplicated, 5% corrupted, 5% reordered datagrams; "
                      "0.5% corrupted and 0.5% duplicated frames", node=n.i)
            pct = ("0", "0") if noop else ("5", "0.5")
            before = counters_sum(nodes)
            n.kvcli("fault", "set", "*", "--dup", pct[0], "--corrupt", pct[0],
                    "--reorder", pct[0], "--dir", "both", "--transport", "udp")
            n.kvcli("fault", "set", "*", "--dup", pct[1], "--corrupt", pct[1],
                    "--transport", "tcp")
            def shown(e):
                refused = e["gossip_bad_auth"] + e["gossip_replayed"] + \
                    e["frames_rejected"]
                return (e["corrupted"] > 0 and e["duplicated"] > 0 and
                        refused > 0)
            ev = self.hold_until(hold, lambda: grew(
                before, counters_sum(nodes), "corrupted", "duplicated",
                "gossip_bad_auth", "gossip_replayed", "frames_rejected",
                "gossip_undecodable"), shown, noop)
            n.kvcli("fault", "clear")
            self.note("corruption cleared", node=n.i)
            return ev, shown(ev)
        if kind in ("clock", "fast-clock"):
            # fast-clock: far beyond --max-clock-offset-ms (500): the node's
            # peers refuse its messages and records, anti-entropy included,
            # while the clients keep writing through it.
            skew = (5000 if kind == "fast-clock" else
                    rng.choice([-3000, -800, 300, 2000]))
            self.note("clock skew", node=n.i, offset_ms=skew)
            n.kvcli("fault", "clock", "0" if noop else str(skew))
            shown = (n.json("fault", "show") or {}).get("clock_offset_ms")
            time.sleep(hold)
            n.kvcli("fault", "clock", "0")
            self.note("clock restored", node=n.i)
            return dict(clock_offset_ms=shown), shown == skew
        if kind == "membership":
            return self.membership(noop)
        if kind == "full":
            n.map_mb = None if noop else 1  # the least: the data it holds
            self.note("restart with a full LMDB map", node=n.i)
            n.kill()
            n.start()
            self.fill(n)
            time.sleep(hold)
            ev = {"store_full": n.counters().get("store_full", 0)}
            n.kill(signal.SIGTERM)
            n.map_mb = None
            n.start()
            self.note("map size restored", node=n.i)
            return ev, ev["store_full"] > 0
        raise RunnerError("unknown fault kind %s" % kind)

    def member_view(self, viewer, addr):
        """(status, ring phase, id) of the member at addr in viewer's view,
        newest incarnation first; None when it lists none there."""
        rows = [m for m in (viewer.json("members") or [])
                if m["address"] == addr]
        rows.sort(key=lambda m: m["status"] != "left")
        return rows[-1] if rows else None

    def membership(self, noop):
        """The membership nemesis (DESIGN 7b): one node leaves for good,
        either by kvcli decommission or killed and then kvcli removenode;
        then a node with a new identity joins in its slot (same address, a
        new data directory) and streams its ranges. Evidence: the command
        succeeded, the old member is gone in every view, the new one serves."""
        rng = self.rng
        slots = [n for n in self.nodes if n.alive() and
                 n.i != self.args.clients_on]
        n = rng.choice(slots)
        others = [m for m in self.nodes if m is not n]
        how = rng.choice(["decommission", "removenode"])
        old = self.member_view(others[0], n.addr)
        old_id = old["id"] if old else None
        self.snapshots.setdefault(n.i, []).append(n.counters())
        n.killed = True  # it goes away on purpose
        t0 = time.time()
        if noop:
            self.note("(membership change skipped)", node=n.i, how=how)
            ev = dict(how=how, code=None, gone=False, serving=False)
            n.killed = False
            return ev, False
        if how == "decommission":
            self.note("kvcli decommission", node=n.i)
            r = n.kvcli("decommission", check=False)
            code = r.returncode
            try:
                rc = n.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                rc = None
            if rc != 0:
                n.exits.append("decommissioned, then exit %s" % rc)
        else:
            self.note("kill -9, then kvcli removenode", node=n.i)
            n.kill(signal.SIGKILL, snapshot=False)
            deadline = time.time() + 30
            while time.time() < deadline and not all(
                    (self.member_view(m, n.addr) or {}).get("status") == "dead"
                    for m in others if m.alive()):
                time.sleep(0.3)
            r = others[0].kvcli("removenode", old_id or "-", check=False)
            code = r.returncode
        deadline = time.time() + 30
        while time.time() < deadline and not all(
                (self.member_view(m, n.addr) or {}).get("status") == "left"
                for m in others if m.alive()):
            time.sleep(0.3)
        gone = all((self.member_view(m, n.addr) or {}).get("status") == "left"
                   for m in others if m.alive())
        # A new node in the slot: new identity, same address.
        shutil.rmtree(n.data, ignore_errors=True)
        n.start()
        self.note("a new node joins in the slot", node=n.i)
        deadline = time.time() + 60
        def serving():
            for m in self.nodes:
                v = self.member_view(m, n.addr)
                if not v or v["status"] != "alive" or v["ring"] != "normal" \
                        or v["id"] == old_id:
                    return False
            return True
        while time.time() < deadline and not serving():
            time.sleep(0.3)
        ok = serving()
        self.note("membership change done", node=n.i, how=how, code=code,
                  gone=gone, serving=ok, seconds=round(time.time() - t0, 1))
        return dict(how=how, code=code, gone=gone, serving=ok), \
            code == 0 and gone and ok

    def hold_until(self, hold, evidence, shown, noop, extra=15):
        """Holds a fault for hold seconds; then, while its evidence does not
        show yet (a 5% rate on a few datagrams may take a while), up to extra
        seconds more. Returns the evidence. A no-op fault is held for hold
        only: it will never show."""
        time.sleep(hold)
        ev = evidence()
        deadline = time.time() + (0 if noop else extra)
        while not shown(ev) and time.time() < deadline:
            time.sleep(0.5)
            ev = evidence()
        return ev

    def window(self, kind, hold):
        t1 = self.now()
        evidence, ok = self.apply(kind, hold)
        self.windows.append(dict(kind=kind, t1=t1, t2=self.now(),
                                 evidence=evidence, took_effect=ok))
        if not ok:
            self.note("NO EFFECT", kind=kind, evidence=evidence)

    def schedule(self):
        kinds = self.args.kinds
        end = self.t0 + self.args.duration
        first = True
        while time.time() < end:
            order = kinds[:]
            self.rng.shuffle(order)
            for kind in order:
                if time.time() >= end or self.runner_errors:
                    break
                hold = self.rng.uniform(*self.args.hold)
                self.window(kind, hold)
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
        t1 = self.now()
        before = counters_sum(self.nodes)
        self.block([[0], [m.i for m in self.nodes[1:]]])
        time.sleep(self.args.hold[1])
        ev = grew(before, counters_sum(self.nodes), "blocked_count")
        # The clients all talk to node 0, which may serve nothing now.
        self.windows.append(dict(kind="partition", t1=t1, t2=self.now(),
                                 evidence=ev, serves=False,
                                 took_effect=ev["blocked_count"] > 0))
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
        """Until every node sees every member alive and on the ring (phase
        normal: a node that joins owns ranges only once it has streamed
        them), and holds no hints."""
        t = time.time()
        while time.time() - t < deadline_s:
            ok = True
            for n in self.nodes:
                s = n.json("status")
                m = n.json("members")
                if (not s or s["members_alive"] != len(self.nodes) or
                        s["hints"] != 0 or not m or
                        any(x["ring"] != "normal" for x in m
                            if x["status"] != "left")):
                    ok = False
                    break
            if ok:
                return time.time() - t
            time.sleep(0.5)
        return None

    def gather(self):
        """Reads what the checker needs from the nodes: how far apart the
        replicas are, every key's final value, the replicas again after a
        while; then stops every node with SIGTERM and reads their logs."""
        keys = sorted(set(ev["key"] for ev in self.history
                          if ev["op"] == "put"))
        cl = Client(self.nodes[0].addr, self.psk, 5.0)
        # Before the checker reads anything (its reads repair what they
        # find).
        pending = self.diverged(cl, keys)
        diverged_first = len(pending)
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
                except UNKNOWN_ERRORS:
                    time.sleep(0.2)
            else:
                final[key] = ("<unreadable>", 0)
        # Every replica holds the same newest version (hints and read repair
        # may still be landing: try for a while, reading at "all", which
        # reads every replica and repairs the stale ones).
        t = time.time()
        pending = self.diverged(cl, pending)
        while pending and time.time() - t < 60:
            for key in pending:
                try:
                    cl.request(MSG_GET, key.encode(), CONS["all"], 3000)
                except UNKNOWN_ERRORS:
                    pass
            time.sleep(1)
            pending = self.diverged(cl, pending)
        converged_s = round(time.time() - t, 1)
        cl.drop()
        counters = self.counters()
        self.done.set()
        for n in self.nodes:
            n.kill(signal.SIGTERM, snapshot=False)
        logs = {n.i: open(n.log, "rb").read().decode(errors="replace")
                for n in self.nodes}
        return dict(final=final, diverged=pending,
                    diverged_first=diverged_first,
                    replicas_converged_s=converged_s, counters=counters,
                    exits={n.i: n.exits for n in self.nodes if n.exits},
                    logs=logs)

    def diverged(self, cl, keys):
        """The keys whose replicas do not all answer with one version."""
        out = []
        want = min(self.args.replicas, len(self.nodes))
        for key in keys:
            try:
                ans = cl.request(MSG_WHERE, key.encode())
            except UNKNOWN_ERRORS:
                out.append(key)
                continue
            rows = ans[5] if ans[1] == MSG_WHERE_RESULT else []
            if rows_diverge(rows, want):
                out.append(key)
        return out

    def watch_exits(self):
        """Notes any kvnode that exits without the schedule killing it,
        until the nodes are stopped after the checks."""
        while not self.done.is_set():
            for n in self.nodes:
                if n.proc and not n.killed and n.proc.poll() is not None:
                    n.exits.append(n.proc.returncode)
                    self.note("UNEXPECTED EXIT", node=n.i,
                              code=n.proc.returncode)
                    n.killed = True
            time.sleep(0.2)

    def counters(self):
        # Counters restart with a node; the runner sums what each node
        # reported last before it was killed (see Node.kill) and now.
        tot = {}
        for n in self.nodes:
            for c in self.snapshots.get(n.i, []) + [n.counters()]:
                add_counters(tot, c)
        return tot


def answer_event(c, op, key, value, t1, t2, ans):
    """One history event from a node's answer."""
    code = ans[4]
    ev = dict(client=c, op=op, key=key.decode(), t1=t1, t2=t2, code=code,
              version=ans[5])
    if op == "put":
        ev["value"] = value.decode()
    elif code == 0:
        ev["value"] = ans[6].decode(errors="replace")
    # A failed write is a definite failure only when the node says nothing
    # took it; a timed-out one, or one that "may still have been applied",
    # has an unknown outcome.
    text = ans[7] if len(ans) > 7 else ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    ev["outcome"] = ("ok" if code == 0 else
                     "not found" if code == ERR_NOT_FOUND else
                     "fail" if op == "get" or "not applied" in text else
                     "unknown")
    return ev


def rows_diverge(rows, want):
    """Whether a key's `where` rows show replicas apart: fewer rows than
    replicas, one that did not answer, or more than one version."""
    versions = set(r[5] if r[3] else 0 for r in rows)
    return (len(rows) < want or any(r[1] != WHERE_ANSWERED for r in rows) or
            len(versions) != 1)


def analyze(history, seen, windows=(), clients=0, min_acked=0,
            converged_s=0.0):
    """The checker, a pure function: the history of client operations and
    what gather() saw afterwards (final values, diverged keys, counters,
    unexpected exits, logs) in; every violation out, by kind."""
    report = {"lost": [], "stale": [], "phantom": [], "diverged": [],
              "unexpected_exits": [], "protocol_errors": [], "auth": [],
              "no_convergence": [], "ineffective_faults": [],
              "too_few_acked": []}
    final = seen["final"]
    # What each key may hold: values attempted (acked or not), and the
    # acknowledged writes; a write answered "not applied" may never be read.
    attempted, acked, puts = {}, {}, {}
    for ev in history:
        if ev["op"] != "put":
            continue
        puts.setdefault(ev["key"], []).append(ev)
        if ev["outcome"] == "fail":
            continue
        attempted.setdefault(ev["key"], set()).add(ev["value"])
        if ev["outcome"] == "ok":
            acked.setdefault(ev["key"], []).append(ev)
    # Reads: a value never written, or a register read older than the
    # client's own last write acknowledged before the read began.
    for ev in history:
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
    for key, writes in acked.items():
        value, version = final.get(key, ("<unreadable>", 0))
        if key.startswith("s-"):
            newest = max(w["version"] for w in writes)
            if value in (None, "<unreadable>") or version < newest:
                report["lost"].append(dict(key=key, acked_version=newest,
                                           final=value,
                                           final_version=version))
                continue
            # In real time too: the final value's write must not have been
            # answered before an acknowledged write began (that one would
            # have had to win; a clock running fast can stamp an older
            # write above it).
            src = [w for w in puts.get(key, ()) if w["value"] == value]
            later = [w for w in writes if src and w["t1"] > src[0]["t2"]]
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
            if value in (None, "<unreadable>") or int(value) < newest:
                report["lost"].append(dict(key=key, acked_value=newest,
                                           final=value))
    for key, (value, _) in final.items():
        if value not in (None, "<unreadable>") and \
                value not in attempted.get(key, ()):
            report["phantom"].append(dict(key=key, final=value))
    report["diverged"] = list(seen.get("diverged", []))
    for node, codes in sorted(seen.get("exits", {}).items()):
        report["unexpected_exits"].append(dict(node=node, codes=codes))
    for node, text in sorted(seen.get("logs", {}).items()):
        for bad in LOG_REPORTS:
            if bad in text:
                report["protocol_errors"].append(dict(node=node, text=bad))
    c = seen.get("counters", {})
    # Corrupted traffic must be refused by authentication, and nothing
    # damaged may authenticate and then fail to decode.
    corrupt_in = c.get("corrupted", 0) + c.get("duplicated", 0)
    refused = c.get("gossip_bad_auth", 0) + c.get("gossip_replayed", 0) + \
        c.get("frames_rejected", 0)
    if corrupt_in and not refused:
        report["auth"].append(dict(injected=corrupt_in, refused=0))
    if c.get("gossip_undecodable", 0):
        report["auth"].append(dict(undecodable=c["gossip_undecodable"]))
    if converged_s is None:
        report["no_convergence"].append("members and hints did not settle")
    for w in windows:
        if not w["took_effect"]:
            report["ineffective_faults"].append(w)
    # Floors: every client got work done, and the cluster served during
    # every fault window.
    per_client = {}
    for ev in history:
        if ev["outcome"] in ("ok", "not found"):
            per_client[ev["client"]] = per_client.get(ev["client"], 0) + 1
    for cl in range(clients):
        if per_client.get(cl, 0) < min_acked:
            report["too_few_acked"].append(dict(client=cl,
                                                acked=per_client.get(cl, 0),
                                                floor=min_acked))
    for w in windows:
        served = sum(1 for ev in history
                     if ev["outcome"] in ("ok", "not found") and
                     w["t1"] <= ev["t1"] and ev["t2"] <= w["t2"])
        if w["took_effect"] and w.get("serves", True) and not served:
            report["too_few_acked"].append(dict(window=w["kind"],
                                                t1=w["t1"], acked=0))
    return report


VERDICTS = ("lost", "stale", "phantom", "diverged", "unexpected_exits",
            "protocol_errors", "auth", "no_convergence",
            "ineffective_faults", "too_few_acked")


def passed(report):
    return not any(report[k] for k in VERDICTS)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "release"))
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--duration", type=float, default=600,
                    help="seconds of faults (default 600)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", help="where report.json, history.jsonl and, "
                    "when the run fails, logs/ go (default "
                    "build/fault-runs/seed-N)")
    ap.add_argument("--consistency", default="quorum",
                    choices=["one", "quorum", "all"],
                    help="of the workload's writes")
    ap.add_argument("--once", action="store_true",
                    help="each kind of fault once, then stop")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="the kinds of fault to apply (default: all of %s)" %
                    ",".join(KINDS))
    ap.add_argument("--ineffective", choices=KINDS,
                    help="apply this kind as a no-op: the run must fail "
                    "and name it")
    ap.add_argument("--min-acked", type=int, default=20,
                    help="acknowledged operations each client must get")
    ap.add_argument("--hold", type=float, nargs=2, default=(3.0, 8.0),
                    metavar=("MIN", "MAX"), help="seconds a fault lasts")
    ap.add_argument("--scenario", default="mixed",
                    choices=["mixed", "lossy-w1"],
                    help="lossy-w1: the checker's negative test")
    ap.add_argument("--clients-on", type=int, default=None,
                    help="every client talks to this node")
    ap.add_argument("--keep", action="store_true",
                    help="keep the nodes' directories")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    if args.nodes < 3:
        ap.error("--nodes: at least 3")
    args.kinds = [k for k in args.kinds.split(",") if k]
    for k in args.kinds:
        if k not in KINDS:
            ap.error("--kinds: unknown kind %s" % k)
    return args


def main():
    args = parse_args()
    run = Run(args)
    print("essaim fault run: seed %d, %d nodes, N=%d, writes at %s, "
          "scenario %s%s" %
          (args.seed, args.nodes, args.replicas, args.consistency,
           args.scenario, "" if args.once else
           ", %.0f s of faults" % args.duration), flush=True)
    print("replay: %s %s" % (sys.argv[0], " ".join(
        a for a in sys.argv[1:] if not a.startswith("--seed")) +
        ("" if "--seed" in sys.argv else " --seed %d" % args.seed)),
        flush=True)
    ok = False
    code = 2
    try:
        for n in run.nodes:
            n.start()
        # Every node sees every other before the clients start.
        if run.wait_converged(30) is None:
            raise RunnerError("the nodes did not all join within 30 s")
        run.t0 = time.time()
        watcher = threading.Thread(target=run.watch_exits, daemon=True)
        watcher.start()
        clients = [threading.Thread(target=run.client_loop, args=(c,))
                   for c in range(args.nodes)]
        for t in clients:
            t.start()
        time.sleep(2)
        try:
            if args.scenario == "lossy-w1":
                run.lossy_w1_schedule()
            else:
                run.schedule()
            time.sleep(1)
        finally:
            run.stop.set()
            for t in clients:
                t.join()
        if run.runner_errors:
            raise RunnerError(run.runner_errors[0])
        heal_t = time.time()
        run.heal()
        conv = run.wait_converged(120)
        run.note("converged" if conv is not None else "NOT CONVERGED",
                 seconds=round(conv, 1) if conv is not None else None)
        seen = run.gather()
        report = analyze(run.history, seen, run.windows, args.nodes,
                         args.min_acked, conv)
        report["heal_to_convergence_s"] = (round(conv, 1) if conv is not None
                                           else None)
        report["heal_to_checked_s"] = round(time.time() - heal_t, 1)
        ok = print_report(run, report, seen)
        code = 0 if ok else 1
    except RunnerError as e:
        print("RUNNER ERROR (the run proves nothing): %s" % e, flush=True)
    finally:
        run.stop.set()
        run.done.set()
        for n in run.nodes:
            n.kill(snapshot=False)
        if code != 0:
            logs = os.path.join(run.out, "logs")
            os.makedirs(logs, exist_ok=True)
            for n in run.nodes:
                if os.path.exists(n.log):
                    shutil.copy(n.log, logs)
            print("node logs kept in %s" % logs)
        if not args.keep:
            shutil.rmtree(run.dir, ignore_errors=True)
        else:
            print("node directories kept in %s" % run.dir)
    sys.exit(code)


def print_report(run, report, seen):
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
    c = seen["counters"]
    ok = passed(report)
    out = dict(seed=run.args.seed, nodes=len(run.nodes),
               replicas=run.args.replicas, consistency=run.args.consistency,
               scenario=run.args.scenario, duration_s=run.args.duration,
               operations=ops, faults=run.faults, windows=run.windows,
               heal_to_convergence_s=report["heal_to_convergence_s"],
               replicas_converged_s=seen["replicas_converged_s"],
               diverged_at_first_look=seen["diverged_first"],
               heal_to_checked_s=report["heal_to_checked_s"],
               counters=c, passed=ok,
               examples={k: report[k][:5] for k in VERDICTS})
    for k in VERDICTS:
        out[k] = len(report[k])
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
    print("  fault windows: %d, each with its effect: %s" % (
        len(run.windows), ", ".join(
            "%s %s" % (w["kind"], "yes" if w["took_effect"] else "NO")
            for w in run.windows)))
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
          tuple(c.get(k, 0) for k in ("corrupted", "duplicated", "dropped",
                                      "reordered", "delayed",
                                      "blocked_count")))
    print("  refused by authentication: %d datagrams (bad tag), %d replayed "
          "datagrams, %d stream frames; %d datagrams undecodable" %
          tuple(c.get(k, 0) for k in ("gossip_bad_auth", "gossip_replayed",
                                      "frames_rejected",
                                      "gossip_undecodable")))
    for k in VERDICTS:
        for ex in report[k][:3]:
            print("  %s: %s" % (k, json.dumps(ex)))
    print("  history: %s" % os.path.join(run.out, "history.jsonl"))
    print("  %s" % ("PASS" if ok else "FAIL: " + ", ".join(
        "%s %d" % (k, len(report[k])) for k in VERDICTS if report[k])))
    return ok


if __name__ == "__main__":
    main()
