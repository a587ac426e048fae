"""Membership with real processes on loopback (DESIGN §7), through
node/gossip_io.c (sealed UDP, Noise peer channels): five kvnodes
find each other through one seed, a kill -9 is noticed by all within the
bound the configured timeouts give, a restart comes back with a higher
incarnation, a graceful stop is seen as down (dead, keeping its ranges),
and a node with another
cluster secret can neither join nor appear anywhere."""

import json
import os
import socket
import time

import harness
from harness import Cluster
from harness import wait_for as hwait

PERIOD_MS, ACK_MS = 200, 100
FAST = ["--gossip-period-ms", str(PERIOD_MS), "--gossip-ack-timeout-ms",
        str(ACK_MS), "--push-pull-ms", "2000"]


def bound_s(n):
    """(N+1) periods for a probe round, the longest suspicion (β·α·log10 N
    periods, at least β·α), the last-chance ping at the worst local health,
    and λ·4 periods for the news to spread (node/membership.h)."""
    import math
    periods = (n + 1) + 6 * 4 * max(1.0, math.log10(n)) + 4 * 4
    return (periods * PERIOD_MS + 8 * ACK_MS) / 1000.0


def members(node):
    r = node.kvcli("--json", "members")
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def statuses(node):
    return {m["address"]: m for m in members(node)}


def serving(view):
    """Members alive and on the ring (phase normal) in one node's view: a
    node that joins is listed at once but owns ranges only once it has
    streamed them (DESIGN §7b)."""
    return len([m for m in view if m["status"] == "alive" and
                m["ring"] == "normal"])


def start_five(c):
    first = c.node("n0", FAST)
    nodes = [first] + [c.node("n%d" % i, FAST + ["--join", first.addr,
                                                 "--zone", "z%d" % (i % 3)])
                       for i in range(1, 5)]
    deadline = time.time() + 20
    while time.time() < deadline:
        if all(serving(members(n)) == 5 for n in nodes):
            return nodes
        time.sleep(0.2)
    raise AssertionError("5 nodes did not all list 5 serving members: %s" %
                         [members(n) for n in nodes])


def wait_for(pred, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        time.sleep(0.1)
    return None


def test_five_nodes_detect_a_crash_and_a_restart():
    c = Cluster()
    try:
        nodes = start_five(c)
        m = statuses(nodes[0])
        assert m[nodes[3].addr]["zone"] == "z0", m
        assert all(x["ring"] == "normal" for x in m.values()), m
        victim = nodes[2]
        victim.kill()  # kill -9
        others = [n for n in nodes if n is not victim]
        took = wait_for(lambda: all(
            statuses(n)[victim.addr]["status"] == "dead" for n in others),
            bound_s(5) + 5)
        print("      crash known dead by all 4 in %.1f s (bound %.1f s)" %
              (took or -1, bound_s(5)))
        assert took is not None, took
        # The bound is on the protocol; under the sanitizers every step is
        # slower, so it is checked in release builds only.
        if "asan" not in harness.BIN:
            assert took <= bound_s(5), took
        # The incarnation it died with; the restart refutes it.
        inc = statuses(others[0])[victim.addr]["incarnation"]
        victim.start()  # same data directory, same key
        took = wait_for(lambda: all(
            statuses(n)[victim.addr]["status"] == "alive" and
            statuses(n)[victim.addr]["incarnation"] > inc and
            statuses(n)[victim.addr]["ring"] == "normal" for n in others), 15)
        assert took is not None, [statuses(n) for n in others]
        # A graceful stop is announced: the others see it down at once
        # (dead, long before they would suspect it), still on the ring.
        assert nodes[4].stop() == 0
        took = wait_for(lambda: all(
            statuses(n)[nodes[4].addr]["status"] == "dead" and
            statuses(n)[nodes[4].addr]["ring"] == "normal"
            for n in nodes[:4]), 2)
        assert took is not None, [statuses(n) for n in nodes[:4]]
        st = json.loads(nodes[0].kvcli("--json", "status").stdout)
        assert st["members_total"] == 5 and st["gossip_opened"] > 0, st
    finally:
        c.close()


def test_peer_must_be_the_member_its_key_names():
    """A process holding the cluster secret still cannot speak for another
    member: the sender id of pushed state must hash from the key its
    handshake proved (dissononce plays the impostor)."""
    from noise_client import NoiseClient, read_key
    c = Cluster()
    try:
        n = c.node("n0", FAST)
        cl = NoiseClient(n.addr, read_key(c.cluster_key),
                         prologue=b"essaim/1 peer")
        cl.open()  # a node's link: no welcome
        forged_id = os.urandom(16)
        member = [forged_id, os.urandom(32), "127.0.0.1:1", "r", "z", 9, 0,
                  1, bytes(16), 0, "3"]
        cl.send([1, 5, 0, forged_id, bytes(16), "", [member]])  # SYNC
        st = hwait(lambda: (lambda s: s if s["peer_rejected"] >= 1 else None)(
            json.loads(n.kvcli("--json", "status").stdout)), 10,
            "the forged state refused")
        cl.close()
        assert st["members_total"] == 1, st
        assert "does not match its key" in n.log_text()
    finally:
        c.close()


def test_node_with_another_cluster_secret_cannot_join():
    c = Cluster()
    try:
        nodes = start_five(c)
        rogue_key = os.path.join(c.dir, "other-cluster.key")
        c.kvcli_raw(["keygen", rogue_key], check=True)
        # Same client key (so kvcli can ask it), another cluster key.
        rogue = c.node("rogue", FAST + ["--join", nodes[0].addr],
                       cluster_key=rogue_key)
        hwait(lambda: "handshake refused" in nodes[0].log_text(), 15,
              "the rogue's push-pull refused")
        for n in nodes:
            assert rogue.addr not in statuses(n), statuses(n)
        assert [m["address"] for m in members(rogue)] == [rogue.addr]
        st = json.loads(nodes[0].kvcli("--json", "status").stdout)
        assert st["peer_rejected"] > 0, st  # its push-pulls were refused
        assert "handshake refused" in nodes[0].log_text()
        # Datagrams sealed under another key, and plain garbage, are dropped
        # before parsing and counted.
        before = st["gossip_rejected"]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(30):
            s.sendto(bytes([1]) + os.urandom(60 + i), ("127.0.0.1",
                                                       nodes[0].port))
        s.close()
        st = hwait(lambda: (lambda s: s if s["gossip_rejected"] >= before + 30
                            else None)(
            json.loads(nodes[0].kvcli("--json", "status").stdout)), 10,
            "30 more datagrams refused")
        assert st["members_alive"] == 5, st
    finally:
        c.close()
