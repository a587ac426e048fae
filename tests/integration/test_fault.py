"""Fault injection with real processes: kvcli fault is refused unless the
node runs with --fault-injection; corrupted and duplicated traffic is
refused by authentication and counted, never taken as a message; partitions
and clock skew fail requests with clear errors and heal; and the fault
runner (tools/fault_run.py) passes a short schedule and catches the loss that
W = 1 allows."""

import json
import os
import re
import shutil
import subprocess
import time

import harness
from harness import Cluster
from test_membership import FAST
from test_replication import wait_writable

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "tools", "fault_run.py")


def start_three(c, extra=()):
    first = c.node("n0", FAST + ["--fault-injection"] + list(extra))
    nodes = [first] + [
        c.node("n%d" % i, FAST + ["--fault-injection", "--join", first.addr,
                                  "--zone", "z%d" % i] + list(extra))
        for i in (1, 2)]
    wait_writable(nodes)
    # A node takes writes as soon as it has joined, maybe before it knows the
    # third node: wait until every view holds all three, so that each key
    # has its three replicas everywhere.
    deadline = time.time() + 20
    while any(status(n)["members_alive"] != 3 for n in nodes):
        assert time.time() < deadline, [status(n) for n in nodes]
        time.sleep(0.2)
    return nodes


def status(n):
    r = n.kvcli("--json", "status")
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def fault_show(n):
    r = n.kvcli("--json", "fault", "show")
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def test_fault_commands_are_refused_without_the_flag():
    c = Cluster()
    try:
        n = c.node()
        r = n.kvcli("fault", "set", "*", "--drop", "50")
        assert r.returncode == 5, r
        assert b"fault injection is off" in r.stderr, r.stderr
        for args in (("block", "127.0.0.1:1"), ("clock", "1000"),
                     ("clear",)):
            assert n.kvcli("fault", *args).returncode == 5
        assert fault_show(n)["enabled"] is False
        # Bad usage never reaches the node.
        assert n.kvcli("fault", "set", "*", "--drop", "150").returncode == 2
        assert n.kvcli("fault", "clock", "soon").returncode == 2
        assert n.kvcli("put", "k", "v").returncode == 0
        assert "FAULT INJECTION" not in n.log_text()
    finally:
        c.close()


def test_corrupt_and_duplicated_traffic_is_refused_by_authentication():
    c = Cluster()
    try:
        nodes = start_three(c)
        n0 = nodes[0]
        assert "FAULT INJECTION IS ON" in n0.log_text()
        # Stream faults only where the bytes are sent.
        r = n0.kvcli("fault", "set", "*", "--corrupt", "5", "--dir", "in",
                     "--transport", "tcp")
        assert r.returncode == 5 and b"sending side" in r.stderr, r
        for args in (("--dup", "30", "--corrupt", "30", "--dir", "both",
                      "--transport", "udp"),
                     ("--dup", "10", "--corrupt", "10", "--transport",
                      "tcp")):
            assert n0.kvcli("fault", "set", "*", *args).returncode == 0
        shown = fault_show(n0)
        assert len(shown["rules"]) == 2, shown
        acked = []
        for i in range(300):
            if nodes[i % 3].kvcli("put", "k%d" % i, "v%d" % i).returncode \
                    == 0:
                acked.append(i)
        # What the peers refuse: corrupted datagrams (their tag fails
        # authentication), duplicated datagrams (seen before), frames that
        # broke a stream. Gossip goes on meanwhile: until each kind has
        # been refused at least once.
        def refused():
            st = [status(n) for n in nodes]
            return {k: sum(s[k] for s in st)
                    for k in ("gossip_bad_auth", "gossip_replayed",
                              "frames_rejected")}
        harness.wait_for(lambda: all(v > 0 for v in refused().values()), 30,
                         "each kind of damaged traffic refused")
        f = fault_show(n0)
        assert f["corrupted"] > 0 and f["duplicated"] > 0, f
        assert n0.kvcli("fault", "clear").returncode == 0
        st = [status(n) for n in nodes]
        for n, s in zip(nodes, st):
            assert n.alive()
            # Nothing damaged authenticated and then failed to decode.
            assert s["gossip_undecodable"] == 0, (n.name, s)
            for text in ("malformed replica message", "malformed request"):
                assert text not in n.log_text(), (n.name, text)
        # Every acknowledged write is there (most of them were).
        assert len(acked) > 150, len(acked)
        for i in acked:
            r = nodes[(i + 1) % 3].kvcli("get", "k%d" % i)
            assert r.stdout == b"v%d" % i, (i, r)
    finally:
        c.close()


def test_partition_and_clock_skew_fail_clearly_and_heal():
    c = Cluster()
    try:
        nodes = start_three(c)
        n0 = nodes[0]
        others = [n.addr for n in nodes[1:]]
        assert n0.kvcli("fault", "block", *others).returncode == 0
        for n in nodes[1:]:
            assert n.kvcli("fault", "block", n0.addr).returncode == 0
        r = n0.kvcli("put", "cut", "off")
        assert r.returncode == 3 and b"replicas" in r.stderr, r
        # The majority side goes on.
        r = nodes[1].kvcli("put", "majority", "yes")
        assert r.returncode == 0, r
        for n in nodes:
            assert n.kvcli("fault", "block").returncode == 0
        deadline = time.time() + 20
        while n0.kvcli("get", "majority").stdout != b"yes":
            assert time.time() < deadline, "the partition never healed"
            time.sleep(0.2)
        # A clock 5 s ahead: its peers refuse it, clearly.
        assert n0.kvcli("fault", "clock", "5000").returncode == 0
        assert fault_show(n0)["clock_offset_ms"] == 5000
        r = n0.kvcli("put", "skewed", "x")
        assert r.returncode != 0 and b"clock" in r.stderr, r
        assert n0.kvcli("fault", "clock", "0").returncode == 0
        deadline = time.time() + 10
        while n0.kvcli("put", "skewed", "y").returncode != 0:
            assert time.time() < deadline, "writes never resumed"
            time.sleep(0.2)
        assert nodes[2].kvcli("get", "skewed").stdout == b"y"
    finally:
        c.close()


OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                   "build", "test-fault")


def run_runner(*args):
    """Runs tools/fault_run.py; returns its exit status, its output and its
    report (None when it wrote none)."""
    out = os.path.join(OUT, "-".join(a.strip("-") for a in args
                                     if not a[0].isdigit()))
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run(["/usr/bin/python3", RUNNER, "--bin", harness.BIN,
                        "--out", out] + list(args),
                       capture_output=True, timeout=600)
    path = os.path.join(out, "report.json")
    report = json.load(open(path)) if os.path.exists(path) else None
    return r.returncode, r.stdout.decode() + r.stderr.decode(), report


def test_short_fault_schedule_loses_nothing():
    code, out, rep = run_runner("--once", "--hold", "2", "4", "--seed", "7")
    print("      " + "\n      ".join(
        l.strip() for l in out.splitlines()
        if re.search(r"tried|lost writes|windows|injected|refused by", l)))
    assert code == 0 and rep and rep["passed"], out
    for k in ("lost", "stale", "phantom", "diverged", "ineffective_faults",
              "too_few_acked", "auth"):
        assert rep[k] == 0, (k, rep[k], out)
    # Every kind of fault ran once, and each showed its effect.
    kinds = sorted(w["kind"] for w in rep["windows"])
    assert kinds == sorted(["kill", "pause", "partition", "bridge", "loss",
                            "corrupt", "clock", "fast-clock", "full",
                            "membership"]), kinds
    assert all(w["took_effect"] for w in rep["windows"]), rep["windows"]
    assert rep["operations"]["put"]["ok"] > 1000, rep["operations"]


def test_a_fault_that_never_takes_effect_fails_the_run_and_is_named():
    # Blocks that are never applied: the partition window shows no blocked
    # traffic, and the run fails naming it (the loss window still counts).
    code, out, rep = run_runner("--once", "--kinds", "partition,loss",
                                "--ineffective", "partition", "--hold", "2",
                                "3", "--seed", "5")
    assert code == 1 and rep and not rep["passed"], out
    bad = rep["examples"]["ineffective_faults"]
    assert [w["kind"] for w in bad] == ["partition"], bad
    assert "NO EFFECT kind=partition" in out, out
    assert rep["lost"] == 0 and rep["stale"] == 0, out


def test_checker_catches_the_loss_that_w1_allows():
    # Node 0 is cut off while every client writes through it, then loses its
    # disk. At W = 1 its lone copies were acknowledged and are gone...
    args = ["--scenario", "lossy-w1", "--clients-on", "0", "--hold", "2",
            "3", "--seed", "11"]
    code, out, rep = run_runner(*(args + ["--consistency", "one"]))
    assert code == 1 and rep and rep["lost"] > 0, out
    print("      W=1: lost writes %d (the checker failed the run)" %
          rep["lost"])
    # ...at quorum the same schedule loses nothing.
    code, out, rep = run_runner(*(args + ["--consistency", "quorum"]))
    assert code == 0 and rep["lost"] == 0 and rep["passed"], out
