"""Restarts never split a cluster: a node that was part of one rejoins it
through the members it remembers (DATA/members), whatever --join says."""

import json
import time

from harness import Cluster
from test_membership import FAST, serving, statuses
from test_replication import wait_writable


def wait_all_alive(nodes, n, timeout=20):
    deadline = time.time() + timeout
    while True:
        views = [statuses(x) for x in nodes]
        if all(serving(v.values()) == n for v in views):
            return
        assert time.time() < deadline, views
        time.sleep(0.2)


def test_a_node_restarted_without_join_rejoins_its_cluster():
    c = Cluster()
    try:
        # The first node starts without --join, as the README shows.
        n0 = c.node("n0", FAST)
        n1 = c.node("n1", FAST + ["--join", n0.addr, "--zone", "b"])
        n2 = c.node("n2", FAST + ["--join", n0.addr, "--zone", "c"])
        nodes = [n0, n1, n2]
        wait_writable(nodes)
        wait_all_alive(nodes, 3)
        # SIGTERM, then the same command line again: still no --join.
        assert n0.stop() == 0
        deadline = time.time() + 10
        while statuses(n1)[n0.addr]["status"] != "dead":
            assert time.time() < deadline, statuses(n1)
            time.sleep(0.2)
        n0.start()
        wait_all_alive(nodes, 3)
        wait_writable([n0])
        r = n0.kvcli("put", "after-restart", "through n0")
        assert r.returncode == 0, r
        for n in (n1, n2):
            r = n.kvcli("get", "after-restart")
            assert r.returncode == 0 and r.stdout == b"through n0", (n.name, r)
        # Every replica holds it: the write went to the whole ring.
        deadline = time.time() + 10
        while True:
            r = n1.kvcli("--json", "where", "after-restart")
            assert r.returncode == 0, r
            if r.stdout.count(b'"found":true') == 3:
                break
            assert time.time() < deadline, r.stdout
            time.sleep(0.2)
        assert "rejoining the cluster" in n0.log_text()
    finally:
        c.close()


def test_a_node_that_never_joined_a_cluster_starts_one_of_its_own():
    c = Cluster()
    try:
        n0 = c.node("n0", FAST)
        assert n0.kvcli("put", "k", "v").returncode == 0
        assert n0.stop() == 0
        n0.start()
        # It knew nobody, so it coordinates alone at once, as before.
        r = n0.kvcli("get", "k")
        assert r.returncode == 0 and r.stdout == b"v", r
        assert "a cluster of one" in n0.log_text()
    finally:
        c.close()


def test_a_node_restarted_with_its_clock_behind_stamps_above_its_old_writes():
    c = Cluster()
    try:
        n0 = c.node("n0", ["--fault-injection"])
        r = n0.kvcli("--json", "put", "k", "before")
        assert r.returncode == 0, r
        v1 = json.loads(r.stdout)["version"]
        assert n0.stop() == 0
        n0.start()
        # The clock now reads 10 s behind the time of the first write.
        assert n0.kvcli("fault", "clock", "-10000").returncode == 0
        r = n0.kvcli("--json", "put", "k", "after")
        assert r.returncode == 0, r
        v2 = json.loads(r.stdout)["version"]
        assert v2 > v1, (v1, v2)
        r = n0.kvcli("get", "k")
        assert r.returncode == 0 and r.stdout == b"after", r
    finally:
        c.close()
