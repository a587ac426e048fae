"""Rotating the cluster secret on a running cluster (README, "rotate the
cluster secret"): three rolling restarts over three nodes, with quorum writes
running throughout. First every node accepts the new secret while still
sending the old one, then every node sends the new one and still accepts
the old, then the old one goes. In every mixed state each pair of nodes
talks both ways (gossip and replica links): a write at consistency all
through any node succeeds, and no acknowledged write is lost. At the end a
node that knows only the old secret can no longer join."""

import json
import threading

from harness import Cluster, wait_for
from test_membership import FAST, serving


def status(n):
    r = n.kvcli("--json", "status")
    return json.loads(r.stdout) if r.returncode == 0 else None


def all_alive(nodes):
    """Every node sees every member alive and on the ring, and has joined
    (it coordinates: a read of a missing key is answered "not found")."""
    for n in nodes:
        s = status(n)
        if not s or s["members_alive"] != len(nodes):
            return False
        r = n.kvcli("--json", "members")
        if r.returncode != 0 or serving(json.loads(r.stdout)) != len(nodes):
            return False
        if n.kvcli("get", "no-such-key").returncode != 1:
            return False
    return True


def test_rolling_cluster_key_rotation_keeps_replication_running():
    c = Cluster()
    try:
        old, new = c.cluster_key, c.dir + "/new-cluster.key"
        c.kvcli_raw(["keygen", new], check=True)
        nodes = [c.node("n0", FAST + ["--zone", "z0"])]
        for i in (1, 2):
            nodes.append(c.node("n%d" % i, FAST + ["--zone", "z%d" % i,
                                                   "--join", nodes[0].addr]))
        wait_for(lambda: all_alive(nodes), 20, "three members alive")
        acked, stop = [], threading.Event()
        phase = ["start"]
        per_phase = {}

        def writer():
            i = 0
            while not stop.is_set():
                n = nodes[i % 3]
                if n.alive():
                    k = "rot-%05d" % i
                    r = n.kvcli("put", k, "v%d" % i)
                    if r.returncode == 0:
                        acked.append((k, b"v%d" % i))
                        per_phase[phase[0]] = per_phase.get(phase[0], 0) + 1
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        steps = [("accept the new secret", old, [new]),
                 ("send the new secret", new, [old]),
                 ("drop the old secret", new, [])]
        try:
            for what, key, accepted in steps:
                for n in nodes:
                    phase[0] = "%s: n%s" % (what, n.name[1:])
                    assert n.stop() == 0
                    n.cluster_key = key
                    n.extra = [a for a in n.extra if a != old and a != new
                               and a != "--old-cluster-key"]
                    for extra in accepted:
                        n.extra += ["--old-cluster-key", extra]
                    n.start()
                    wait_for(lambda: all_alive(nodes), 30,
                             "every member alive after %s" % phase[0])
                    # Each node reaches every replica, both ways.
                    for i, via in enumerate(nodes):
                        r = via.kvcli("--consistency", "all", "put",
                                      "all-%s-%d" % (n.name, i), "x")
                        assert r.returncode == 0, (phase[0], via.name, r)
        finally:
            stop.set()
            t.join()
        # Writes went on in every step.
        for what, _, _ in steps:
            done = sum(v for k, v in per_phase.items() if k.startswith(what))
            assert done > 0, (what, per_phase)
        for k, v in acked:
            r = nodes[0].kvcli("get", k)
            assert r.returncode == 0 and r.stdout == v, (k, r)
        print("      %d quorum writes acknowledged during the rotation, all "
              "read back" % len(acked))
        # The old secret no longer gets a node in.
        stale = c.node("stale", FAST + ["--join", nodes[0].addr],
                       cluster_key=old)
        wait_for(lambda: sum(status(n)["peer_rejected"] for n in nodes) > 0,
                 20, "the old secret refused")
        assert status(nodes[0])["members_alive"] == 3
        assert stale.alive()
    finally:
        c.close()
