"""Replication with real processes on loopback (DESIGN §5, §6): five kvnodes
in three zones, keys written at quorum through different coordinators, a
replica killed with kill -9, reads and writes going on without it, and
hinted handoff bringing it up to date once it is back."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

from harness import Cluster
from test_membership import members, start_five

KEYS = 1000


def pool_map(fn, items):
    with ThreadPoolExecutor(max_workers=8) as ex:
        return list(ex.map(fn, items))


def wait_writable(nodes, timeout=20):
    """Until every node coordinates (each has joined the cluster) and each
    one's view has every one of them alive on the ring (a node that joins
    owns ranges only once it has streamed them, DESIGN §7b)."""
    deadline = time.time() + timeout
    for n in nodes:
        while n.kvcli("put", "probe-" + n.name, "x").returncode != 0:
            assert time.time() < deadline, "%s never took a write" % n.name
            time.sleep(0.2)
    want = set(n.addr for n in nodes)
    for n in nodes:
        while True:
            view = members(n)
            ready = set(m["address"] for m in view
                        if m["status"] == "alive" and m["ring"] == "normal")
            if want <= ready:
                break
            assert time.time() < deadline, (n.name, view)
            time.sleep(0.2)


def put_all(nodes, prefix):
    """Puts KEYS keys at quorum, key i through node i % len(nodes); returns
    the version each write got."""
    def put(i):
        r = nodes[i % len(nodes)].kvcli("--json", "put", "key-%d" % i,
                                        "%s-%d" % (prefix, i))
        assert r.returncode == 0, (i, r)
        return json.loads(r.stdout)["version"]
    return pool_map(put, range(KEYS))


def where(node, key):
    r = node.kvcli("--json", "where", key)
    assert r.returncode == 0, r
    return json.loads(r.stdout)["replicas"]


def test_five_nodes_keep_every_write_through_a_kill_and_a_restart():
    c = Cluster()
    try:
        nodes = start_five(c)
        wait_writable(nodes)
        # Zone-aware placement: every key's three replicas span the zones.
        for key in ("key-1", "key-2", "key-3"):
            zones = {r["zone"] for r in where(nodes[0], key)}
            assert len(zones) == 3, (key, zones)

        put_all(nodes, "one")
        victim = nodes[2]
        others = [n for n in nodes if n is not victim]
        victim.kill()

        def read(i, prefix="one"):
            r = others[i % 4].kvcli("get", "key-%d" % i)
            assert r.returncode == 0, (i, r)
            assert r.stdout == ("%s-%d" % (prefix, i)).encode(), (i, r.stdout)
        pool_map(read, range(KEYS))

        versions = put_all(others, "two")
        held = sum(json.loads(n.kvcli("--json", "status").stdout)["hints"]
                   for n in others)
        assert held > 0, "no hints were written for the killed replica"

        victim.start()
        t0 = time.time()
        pending = set(range(KEYS))
        while pending and time.time() - t0 < 30:
            def stale(i):
                reps = where(others[i % 4], "key-%d" % i)
                mine = [r for r in reps if r["address"] == victim.addr]
                if not mine:
                    return None  # the victim is no replica of this key
                r = mine[0]
                ok = (r["answer"] == "answered" and r.get("found") and
                      r["version"] == versions[i])
                return None if ok else i
            pending = {i for i in pool_map(stale, sorted(pending))
                       if i is not None}
            if pending:
                time.sleep(0.5)
        took = time.time() - t0
        assert not pending, ("after %.0f s the restarted node lacks the "
                             "newest version of %d keys it owns" %
                             (took, len(pending)))
        owned = sum(1 for i in range(0, KEYS, 10)
                    if any(r["address"] == victim.addr
                           for r in where(nodes[0], "key-%d" % i)))
        assert owned > 0
        print("      restarted replica up to date %.1f s after restart "
              "(%d hints were held)" % (took, held))
        pool_map(lambda i: read(i, "two"), range(KEYS))
        for n in nodes:
            assert n.alive(), n.name
    finally:
        c.close()
