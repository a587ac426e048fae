#!/usr/bin/python3
"""essaim's geodistribution report (`make geo`): real kvnodes on loopback in
three regions of three nodes (zones a, b, c), --replicas eu:3,us:3,ap:3, and
one-way WAN delays set with the fault layer: eu-us 40 ms, us-ap 80 ms, eu-ap
110 ms, each with 10% jitter. It prints:

  - per consistency level and region, p50 and p99 of put and get, from a
    kvbench client in each region talking to a node of its own region (the
    three regions run at once, each on keys of its own);
  - per level, the bytes that crossed between regions per operation (every
    node's wan_REGION_bytes_out, summed, over the operations of all three
    clients);
  - a region outage: ap cut off for --outage-s seconds (60) while a client in
    every region writes unique keys at local_quorum: the availability of
    local_quorum in each region, each_quorum refused everywhere, then after
    the heal the time until every region holds every acknowledged write (read
    at local_one through every node; the writers go on for 5 s past the
    heal, and the first full pass of reads is counted in), and the
    acknowledged writes lost (must be 0).

The report goes to stdout and OUT/report.json. Exit status: 0 when no
acknowledged write was lost and each_quorum was refused during the cut, 1
otherwise, 2 on a set-up error."""

import argparse
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import harness  # noqa: E402
from geo import (all_nodes, cut, heal, kvbench, set_wan,  # noqa: E402
                 start_regions, wan_bytes)
from harness import Cluster  # noqa: E402
from noise_client import NoiseClient, read_key  # noqa: E402

LAYOUT = [("eu", ["a", "b", "c"]), ("us", ["a", "b", "c"]),
          ("ap", ["a", "b", "c"])]
DELAYS = {("eu", "us"): 40, ("us", "ap"): 80, ("eu", "ap"): 110}
LEVELS = ["local_one", "local_quorum", "one", "quorum", "each_quorum", "all"]
CODE = {"local_one": 4, "local_quorum": 5, "each_quorum": 6}
MSG_PUT, MSG_GET = 1, 2


def client(node):
    cl = NoiseClient(node.addr, read_key(node.cluster.client_key), timeout=15)
    cl.handshake()
    return cl


def latencies(nodes, keys):
    """kvbench in every region at once, level by level."""
    out, wan = {}, {}
    for level in LEVELS:
        before = wan_bytes(nodes)
        res = {}

        def run(region):
            res[region] = kvbench(nodes[region][0], level, keys=keys, conns=2,
                                  prefix="%s-%s-" % (level, region))

        threads = [threading.Thread(target=run, args=(r,)) for r in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ops = sum(r["put"]["ops"] + r["get"]["ops"] for r in res.values())
        out[level] = res
        wan[level] = (wan_bytes(nodes) - before) / max(ops, 1)
        print("  %-13s %s  %7.0f WAN bytes/op" % (level, "  ".join(
            "%s put %6.1f/%6.1f get %6.1f/%6.1f" % (
                r, res[r]["put"]["p50"], res[r]["put"]["p99"],
                res[r]["get"]["p50"], res[r]["get"]["p99"])
            for r in nodes), wan[level]), flush=True)
    return out, wan


class Writer:
    """A client in one region writing unique keys at local_quorum through
    its region's nodes, and trying each_quorum now and then."""

    def __init__(self, region, nodes):
        self.region, self.nodes = region, nodes
        self.acked, self.tried, self.failed = [], 0, 0
        self.window = None  # (tried, failed) counted during the cut
        self.each_ok = self.each_refused = 0
        self.counting_each = False
        self.stop = False
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        cls = [client(n) for n in self.nodes]
        seq = 0
        while not self.stop:
            seq += 1
            key = ("geo-%s-%d" % (self.region, seq)).encode()
            cl = cls[seq % len(cls)]
            level = CODE["local_quorum"]
            each = self.counting_each and seq % 10 == 0
            if each:
                level = CODE["each_quorum"]
            try:
                ans = cl.request(MSG_PUT, key, b"v" + key, level, 5000)
                code = ans[4]
            except OSError:
                code = -1
                cls[seq % len(cls)] = client(self.nodes[seq % len(cls)])
            if each:
                if code == 0:
                    self.each_ok += 1
                    self.acked.append(key)
                else:
                    self.each_refused += 1
                continue
            self.tried += 1
            if code == 0:
                self.acked.append(key)
            else:
                self.failed += 1
            time.sleep(0.05)
        for cl in cls:
            cl.close()


def missing(pairs):
    """Of (node, key) pairs, those whose key does not read back at
    local_one through that node; the nodes are read in parallel."""
    by_node, left = {}, []
    for n, k in pairs:
        by_node.setdefault(n, []).append(k)

    def check(n, keys):
        cl = client(n)
        for k in keys:
            ans = cl.request(MSG_GET, k, CODE["local_one"], 5000)
            if ans[4] != 0 or ans[6] != b"v" + k:
                left.append((n, k))
        cl.close()

    threads = [threading.Thread(target=check, args=x)
               for x in by_node.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return left


def outage(nodes, seconds):
    writers = {r: Writer(r, ns) for r, ns in nodes.items()}
    time.sleep(5)
    marks = {r: (w.tried, w.failed) for r, w in writers.items()}
    for w in writers.values():
        w.counting_each = True
    print("  cutting ap off for %d s" % seconds, flush=True)
    cut(nodes, "ap")
    time.sleep(seconds)
    for w in writers.values():
        w.counting_each = False
    during = {r: (w.tried - marks[r][0], w.failed - marks[r][1])
              for r, w in writers.items()}
    heal(nodes)
    healed = time.time()
    time.sleep(5)
    for w in writers.values():
        w.stop = True
    for w in writers.values():
        w.thread.join()
    acked = [k for w in writers.values() for k in w.acked]
    left = [(n, k) for n in all_nodes(nodes) for k in acked]
    deadline = healed + 300
    while left and time.time() < deadline:
        left = missing(left)
        if left:
            time.sleep(0.5)
    caught_up = time.time() - healed
    lost = len(set(k for _, k in missing(
        [(n, k) for n in all_nodes(nodes) for k in acked])))
    rep = {"seconds": seconds, "acked": len(acked), "lost": lost,
           "caught_up_s": round(caught_up, 1) if not left else None,
           "regions": {}}
    for r, w in writers.items():
        tried, failed = during[r]
        rep["regions"][r] = {
            "local_quorum_tried": tried, "local_quorum_failed": failed,
            "local_quorum_availability": round(
                100.0 * (tried - failed) / tried, 1) if tried else None,
            "each_quorum_acked": w.each_ok,
            "each_quorum_refused": w.each_refused}
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="build/release")
    ap.add_argument("--out", default="build/geo")
    ap.add_argument("--keys", type=int, default=60)
    ap.add_argument("--outage-s", type=int, default=60)
    args = ap.parse_args()
    harness.BIN = os.path.abspath(args.bin)
    os.makedirs(args.out, exist_ok=True)
    c = Cluster()
    try:
        print("geo: 3 regions x 3 nodes, --replicas eu:3,us:3,ap:3, one-way "
              "eu-us 40 ms, us-ap 80 ms, eu-ap 110 ms, 10% jitter",
              flush=True)
        nodes = start_regions(c, LAYOUT, "eu:3,us:3,ap:3",
                              ["--push-pull-ms", "5000"])
        set_wan(nodes, DELAYS, 10)
        time.sleep(5)  # a few probes measure the round trips
        print("latency in ms, p50/p99, a client per region:", flush=True)
        lat, wan = latencies(nodes, args.keys)
        print("region outage:", flush=True)
        out = outage(nodes, args.outage_s)
        for r, x in out["regions"].items():
            print("  %s: local_quorum available %s%% (%d of %d failed); "
                  "each_quorum %d refused, %d acknowledged" % (
                      r, x["local_quorum_availability"],
                      x["local_quorum_failed"], x["local_quorum_tried"],
                      x["each_quorum_refused"], x["each_quorum_acked"]))
        print("  after the heal every region held every write in %s s; "
              "acknowledged writes %d, lost %d" % (
                  out["caught_up_s"], out["acked"], out["lost"]), flush=True)
        report = {"layout": LAYOUT, "delays_one_way_ms": {
            "%s-%s" % k: v for k, v in DELAYS.items()}, "jitter_pct": 10,
            "latency_ms": lat, "wan_bytes_per_op": wan, "outage": out}
        with open(os.path.join(args.out, "report.json"), "w") as f:
            json.dump(report, f, indent=1)
        ok = out["lost"] == 0 and out["caught_up_s"] is not None and all(
            x["each_quorum_acked"] == 0 for x in out["regions"].values())
        print("geo: %s" % ("PASS" if ok else "FAIL"))
        c.close()
        return 0 if ok else 1
    except Exception:
        for n in c.nodes:
            if n.alive():
                n.proc.kill()
        raise


if __name__ == "__main__":
    sys.exit(main())
