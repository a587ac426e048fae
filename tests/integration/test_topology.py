"""Ownership changes with real processes on loopback (DESIGN §7b): nodes
join a cluster that holds data and stream the ranges they take, kvcli
decommission streams a node's ranges away before it leaves, kvcli removenode
re-homes a dead node's ranges, a SIGTERM restart moves nothing, and writes
made while nodes' views differ stay readable at quorum. Anti-entropy is off
throughout: only streams, hints and read repair move data."""

import json
import os
import random
import threading
import time

from geo import serving_everywhere
from harness import Cluster, wait_for
from noise_client import NoiseClient, read_key
from test_antientropy import status
from test_membership import FAST, members

NO_AE = FAST + ["--ae-interval-ms", "0"]
MSG_PUT, MSG_GET = 1, 2
ONE, QUORUM, ALL = 1, 2, 3


def client(node):
    cl = NoiseClient(node.addr, read_key(node.cluster.client_key), timeout=10)
    cl.handshake()
    return cl


def start_nodes(c, n, zones=3):
    """n nodes, n0 first and the others joining it, zones z0.. round
    robin; returns them once every one serves in every view."""
    first = c.node("n0", NO_AE + ["--zone", "z0"])
    nodes = [first] + [c.node("n%d" % i, NO_AE + [
        "--zone", "z%d" % (i % zones), "--join", first.addr])
        for i in range(1, n)]
    wait_for(lambda: serving_everywhere(nodes), 40, "%d nodes" % n)
    return nodes


def put_all(node, items, consistency):
    """Puts every (key, value) through node; each must be acknowledged."""
    cl = client(node)
    for k, v in items:
        assert cl.request(MSG_PUT, k.encode(), v, consistency, 5000)[4] == 0
    cl.close()


KV_ERR_UNAVAILABLE, KV_ERR_TIMEOUT = -12, -11


def read_back(nodes, acked, consistency, patience=60):
    """Reads every acknowledged key through the nodes in turn; returns the
    keys that did not read back with their value. A read that finds too
    few replicas up (the ring still settling after a kill) is asked again,
    for up to `patience` seconds; one that answers, wrongly, is not."""
    cls = [client(n) for n in nodes]
    wrong, left = [], sorted(acked.items())
    deadline = time.time() + patience
    while left:
        again = []
        for i, (k, v) in enumerate(left):
            ans = cls[i % len(cls)].request(MSG_GET, k.encode(), consistency,
                                            10000)
            if ans[4] in (KV_ERR_UNAVAILABLE, KV_ERR_TIMEOUT) and \
                    time.time() < deadline:
                again.append((k, v))
            elif ans[4] != 0 or ans[6] != v:
                wrong.append((k, ans[4], ans[7]))
        left = again
        if left:
            time.sleep(0.5)
    for cl in cls:
        cl.close()
    return wrong


class Writer:
    """Unique-key quorum writes through whichever of `nodes` are up, one
    connection per node, until stop(); acked maps key to value."""

    def __init__(self, nodes, prefix):
        self.nodes, self.prefix = nodes, prefix
        self.acked, self.tried, self.lat = {}, 0, []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run)
        self._t.start()

    def _run(self):
        cls, i = {}, 0
        while not self._stop.is_set():
            live = [n for n in list(self.nodes) if n.alive()]
            if not live:
                time.sleep(0.05)
                continue
            n = live[i % len(live)]
            k, v = "%s-%06d" % (self.prefix, i), b"v%d" % i
            i += 1
            self.tried += 1
            try:
                if n.name not in cls:
                    cls[n.name] = client(n)
                t0 = time.time()
                ans = cls[n.name].request(MSG_PUT, k.encode(), v, QUORUM, 5000)
                self.lat.append(time.time() - t0)
                if ans[4] == 0:
                    self.acked[k] = v
            except Exception:  # the node went away: another one next
                cl = cls.pop(n.name, None)
                if cl:
                    try:
                        cl.close()
                    except OSError:
                        pass
                time.sleep(0.05)
        for cl in cls.values():
            try:
                cl.close()
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        self._t.join()


def test_grow_three_to_six_then_decommission_the_first_three():
    c = Cluster()
    try:
        nodes = start_nodes(c, 3)
        first = nodes[0]
        # 1,500 keys, then a writer that never stops while the ring moves.
        acked = {"base-%05d" % i: os.urandom(100) for i in range(1500)}
        put_all(first, acked.items(), QUORUM)
        live = list(nodes)
        w = Writer(live, "w")
        t0 = time.time()
        for i in (3, 4, 5):
            n = c.node("n%d" % i, NO_AE + ["--zone", "z%d" % (i % 3),
                                           "--join", first.addr])
            live.append(n)
            nodes.append(n)
        wait_for(lambda: serving_everywhere(nodes), 60, "six nodes")
        grew = time.time() - t0
        took = []
        for n in nodes[:3]:
            t1 = time.time()
            r = n.kvcli("decommission")
            assert r.returncode == 0, (n.name, r)
            assert b"decommission of" in r.stdout, r
            assert n.proc.wait(timeout=30) == 0
            n.down_on_purpose = True
            live.remove(n)
            took.append(time.time() - t1)
        time.sleep(0.5)
        w.stop()
        acked.update(w.acked)
        left = nodes[3:]
        for n in left:
            st = status(n)
            assert st["stream_ranges_done"] == st["stream_ranges_total"], st
        wrong = read_back(left, acked, ALL)
        print("      3 -> 6 in %.1f s, then 3 decommissions in %s s; %d of "
              "%d writes acknowledged during the moves; %d keys read back "
              "at all from the 3 left" %
              (grew, ", ".join("%.1f" % t for t in took), len(w.acked),
               w.tried, len(acked)))
        assert not wrong, wrong[:10]
        assert len(w.acked) > 100, (len(w.acked), w.tried)
        for n in left:
            view = members(n)
            gone = [m for m in view if m["status"] == "left"]
            assert len(gone) == 3 or len(view) == 3, view
    finally:
        c.close()


def five_at_once_then_kill(c, rng, writes):
    """Five nodes started together; quorum writes through all five from the
    moment any node lists five members; a node killed 1 s later. Returns
    (acknowledged, wrong) from a quorum read through the four left."""
    first = c.node("n0", NO_AE + ["--zone", "z0"])
    nodes = [first] + [c.node("n%d" % i, NO_AE + [
        "--zone", "z%d" % (i % 3), "--join", first.addr], ) for i in (1, 2, 3, 4)]
    wait_for(lambda: any(len(members(n)) == 5 for n in nodes), 30,
             "a node listing 5 members")
    cls = [client(n) for n in nodes]
    acked = {}
    for i in range(writes):
        k, v = "k-%05d" % i, b"v%d" % i
        ans = cls[i % 5].request(MSG_PUT, k.encode(), v, QUORUM, 5000)
        if ans[4] == 0:
            acked[k] = v
    for cl in cls:
        cl.close()
    time.sleep(1)
    victim = nodes[rng.randrange(5)]
    victim.kill()
    left = [n for n in nodes if n is not victim]
    return acked, read_back(left, acked, QUORUM)


def test_writes_while_five_nodes_start_survive_a_kill():
    rng = random.Random(14)
    repeat = int(os.environ.get("TOPO_REPEAT", "20"))
    total = 0
    for r in range(repeat):
        c = Cluster()
        try:
            acked, wrong = five_at_once_then_kill(c, rng, 200)
            assert not wrong, (r, wrong[:10])
            assert len(acked) >= 100, (r, len(acked))
            total += len(acked)
        finally:
            c.close()
    print("      %d runs: %d writes acknowledged while the ring formed, all "
          "read back at quorum after a kill" % (repeat, total))


def ring_of(node):
    r = node.kvcli("--json", "ring")
    assert r.returncode == 0, r
    return sorted((n["id"], tuple(n["tokens"])) for n in
                  json.loads(r.stdout)["nodes"])


def test_a_rolling_restart_moves_no_range_and_replays_hints():
    c = Cluster()
    try:
        nodes = start_nodes(c, 5)
        first = nodes[0]
        before = ring_of(first)
        w = Writer(nodes, "roll")
        replayed = 0
        for n in nodes:
            others = [x for x in nodes if x is not n]
            h0 = sum(status(x)["hints_replayed"] for x in others)
            assert n.stop() == 0
            time.sleep(1.5)  # writes for it become hints
            held = sum(status(x)["hints"] for x in others)
            assert held > 0, "no hint held for the stopped %s" % n.name
            n.start()
            wait_for(lambda: serving_everywhere(nodes), 30,
                     "%s back" % n.name)
            wait_for(lambda: sum(status(x)["hints_replayed"]
                                 for x in others) > h0, 20,
                     "hints replayed to %s" % n.name)
            replayed += sum(status(x)["hints_replayed"] for x in others) - h0
            assert ring_of(others[0]) == before
        w.stop()
        after = ring_of(first)
        assert after == before, "the ring moved"
        for n in nodes:
            assert status(n)["stream_ranges_total"] == 0, status(n)
        wrong = read_back(nodes, w.acked, QUORUM)
        print("      5 restarts under %d acknowledged writes: ring unchanged, "
              "%d hints replayed, all read back at quorum" %
              (len(w.acked), replayed))
        assert not wrong, wrong[:10]
    finally:
        c.close()


def where_found(node, key):
    r = node.kvcli("--json", "where", key)
    assert r.returncode == 0, r
    return [x for x in json.loads(r.stdout)["replicas"] if x["found"]]


def test_removenode_of_a_killed_node_restores_three_replicas():
    c = Cluster()
    try:
        nodes = start_nodes(c, 4)
        first = nodes[0]
        keys = ["r-%04d" % i for i in range(400)]
        put_all(first, [(k, b"x" * 50) for k in keys], ALL)
        victim = nodes[3]
        vid = [m["id"] for m in members(first)
               if m["address"] == victim.addr][0]
        held = [k for k in keys if any(r["address"] == victim.addr
                                       for r in where_found(first, k))]
        assert held, "the victim holds nothing"
        # Refused: a live member, and an id nobody has.
        r = first.kvcli("removenode", vid[:12])
        assert r.returncode == 5 and b"decommission" in r.stderr, r
        r = first.kvcli("removenode", "00" * 16)
        assert r.returncode == 2 and b"no member" in r.stderr, r
        victim.kill()
        wait_for(lambda: all(
            [m["status"] for m in members(n)
             if m["address"] == victim.addr] == ["dead"]
            for n in nodes[:3]), 30, "the victim dead everywhere")
        t0 = time.time()
        r = nodes[1].kvcli("removenode", vid[:12])
        assert r.returncode == 0, r
        took = time.time() - t0
        left = nodes[:3]
        wait_for(lambda: all(
            [m["status"] for m in members(n)
             if m["address"] == victim.addr] in ([], ["left"])
            for n in left), 10, "the victim gone everywhere")
        short = [k for k in held if len(where_found(left[0], k)) != 3]
        print("      removenode: %d keys the dead node held have 3 replicas "
              "again after %.1f s" % (len(held), took))
        assert not short, short[:10]
    finally:
        c.close()


def test_replace_takes_a_dead_nodes_place():
    c = Cluster()
    try:
        nodes = start_nodes(c, 3)
        first = nodes[0]
        keys = ["p-%04d" % i for i in range(300)]
        put_all(first, [(k, k.encode()) for k in keys], QUORUM)
        ids = {m["address"]: m["id"] for m in members(first)}
        # Refused, one line and exit 2: a live member, and an unknown id.
        for name, rid in (("bad1", ids[nodes[1].addr]), ("bad2", "ab" * 16)):
            n = c.node(name, NO_AE + ["--join", first.addr, "--replace",
                                      rid], )
            assert n.proc.wait(timeout=30) == 2, name
            n.down_on_purpose = True
            assert "--replace %s:" % rid in n.log_text(), n.log_text()
        victim = nodes[2]
        victim.kill()
        wait_for(lambda: [m["status"] for m in members(first)
                          if m["address"] == victim.addr] == ["dead"], 30,
                 "the victim dead")
        t0 = time.time()
        new = c.node("n3", NO_AE + ["--zone", "z2", "--join", first.addr,
                                    "--replace", ids[victim.addr]])
        left = [first, nodes[1], new]
        wait_for(lambda: serving_everywhere(left) and all(
            [m["status"] for m in members(n) if m["address"] == victim.addr]
            in ([], ["left"]) for n in left), 40, "the victim replaced")
        took = time.time() - t0
        short = [k for k in keys if len(where_found(first, k)) != 3]
        wrong = read_back([new], {k: k.encode() for k in keys}, ONE)
        print("      --replace: the new node serves and holds every key "
              "after %.1f s" % took)
        assert not short, short[:10]
        assert not wrong, wrong[:10]
    finally:
        c.close()
