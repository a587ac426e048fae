"""Fault injection with real processes: kvcli fault is refused unless the
node runs with --fault-injection; corrupted and duplicated traffic is
refused by authentication and counted, never taken as a message; partitions
and clock skew fail requests with clear errors and heal; and the fault
runner (tools/fault_run.py) passes a short schedule and catches the loss that
W = 1 allows."""

import json
import os
import re
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
        time.sleep(1)  # gossip goes on meanwhile
        f = fault_show(n0)
        assert f["corrupted"] > 0 and f["duplicated"] > 0, f
        assert n0.kvcli("fault", "clear").returncode == 0
        # What the peers refused: corrupted datagrams (bad tag), duplicated
        # datagrams (seen before), frames that broke a stream.
        st = [status(n) for n in nodes]
        refused = {k: sum(s[k] for s in st)
                   for k in ("gossip_rejected", "gossip_replayed",
                             "frames_rejected")}
        assert all(v > 0 for v in refused.values()), (refused, f)
        for n in nodes:
            assert n.alive()
            # Nothing damaged was ever decoded as a message.
            for text in ("malformed replica message", "malformed request",
                         "undecodable"):
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


def run_runner(*args):
    r = subprocess.run(["/usr/bin/python3", RUNNER, "--bin", harness.BIN] +
                       list(args), capture_output=True, timeout=600)
    return r.returncode, r.stdout.decode() + r.stderr.decode()


def test_short_fault_schedule_loses_nothing():
    code, out = run_runner("--once", "--hold", "2", "4", "--seed", "7")
    print("      " + "\n      ".join(
        l.strip() for l in out.splitlines()
        if re.search(r"tried|lost writes|heal to|injected|refused by", l)))
    assert code == 0, out
    assert "lost writes 0, stale reads 0" in out, out


def test_checker_catches_the_loss_that_w1_allows():
    # Node 0 is cut off while every client writes through it, then loses its
    # disk. At W = 1 its lone copies were acknowledged and are gone...
    args = ["--scenario", "lossy-w1", "--clients-on", "0", "--hold", "2",
            "3", "--seed", "11"]
    code, out = run_runner(*(args + ["--consistency", "one"]))
    m = re.search(r"lost writes (\d+)", out)
    assert code == 1 and m and int(m.group(1)) > 0, out
    print("      W=1: lost writes %s (the checker failed the run)" %
          m.group(1))
    # ...at quorum the same schedule loses nothing.
    code, out = run_runner(*(args + ["--consistency", "quorum"]))
    assert code == 0 and "lost writes 0" in out, out
