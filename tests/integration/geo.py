"""Regions on loopback, for the geodistribution tests (test_geo.py) and the
`make geo` report (tools/geo_run.py): kvnodes started with --region, --zone
and --replicas, one-way WAN delays between regions set with each node's
fault layer (kvcli fault set PEER --delay MS --jitter MS, out direction, so
a round trip is the sum of both ways), region cuts with kvcli fault block,
kvbench runs parsed into figures, and the bytes each node exchanged with
remote regions (kvcli status: wan_REGION_bytes_out and _in)."""

import json
import os
import re
import subprocess

import harness
from harness import wait_for


def serving_everywhere(nodes):
    """Every node lists every one of them alive and on the ring."""
    want = set(n.addr for n in nodes)
    for n in nodes:
        r = n.kvcli("--json", "members")
        if r.returncode != 0:
            return False
        ok = set(m["address"] for m in json.loads(r.stdout)
                 if m["status"] == "alive" and m["ring"] == "normal")
        if not want <= ok:
            return False
    return True


def start_regions(c, layout, replicas, extra=()):
    """layout: [(region, [zone, ...]), ...], one node per zone; the first
    node forms the cluster and the others join it. Returns {region: [node,
    ...]} once every node serves in every view."""
    nodes, first = {}, None
    for region, zones in layout:
        for z in zones:
            args = ["--region", region, "--zone", z, "--replicas", replicas,
                    "--fault-injection"] + list(extra)
            if first:
                args += ["--join", first.addr]
            n = c.node("%s-%s" % (region, z), args)
            first = first or n
            nodes.setdefault(region, []).append(n)
    every = all_nodes(nodes)
    wait_for(lambda: serving_everywhere(every), 90,
             "%d nodes in %d regions" % (len(every), len(nodes)))
    return nodes


def all_nodes(nodes):
    return [n for ns in nodes.values() for n in ns]


def one_way(delays, a, b):
    return delays.get((a, b), delays.get((b, a), 0))


def set_wan(nodes, delays, jitter_pct=0):
    """delays: {(region_a, region_b): one-way ms}. Every node delays what it
    sends to each node of another region by that much, plus up to
    jitter_pct percent."""
    for a, ns in nodes.items():
        for b, peers in nodes.items():
            ms = one_way(delays, a, b)
            if a == b or not ms:
                continue
            jitter = ms * jitter_pct // 100
            for n in ns:
                for p in peers:
                    r = n.kvcli("fault", "set", p.addr, "--delay", str(ms),
                                "--jitter", str(jitter))
                    assert r.returncode == 0, r.stderr


def cut(nodes, region):
    """Cuts region off from every other: each side blocks the other."""
    inside = nodes[region]
    outside = [n for r, ns in nodes.items() if r != region for n in ns]
    for n in inside:
        assert n.kvcli("fault", "block", *[p.addr for p in outside]) \
            .returncode == 0
    for n in outside:
        assert n.kvcli("fault", "block", *[p.addr for p in inside]) \
            .returncode == 0


def heal(nodes):
    for n in all_nodes(nodes):
        assert n.kvcli("fault", "block").returncode == 0


LINE = re.compile(r"^(\S+)\s+(put|get)\s+(\d+) ops\s+([\d.]+) s\s+(\d+) "
                  r"ops/s\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms\s+p999\s+"
                  r"([\d.]+) ms\s+errors (\d+)")


def kvbench(node, consistency, keys=200, conns=4, value_size=100,
            prefix="bench-"):
    """Runs kvbench through node on keys PREFIX00000000..; returns {"put":
    {...}, "get": {...}} with ops, ops_s, p50, p99 (ms) and errors."""
    r = subprocess.run(
        [os.path.join(harness.BIN, "kvbench"), "--node", node.addr, "--key",
         node.cluster.client_key, "--connections", str(conns), "--keys",
         str(keys), "--value-size", str(value_size), "--consistency",
         consistency, "--label", consistency, "--key-prefix", prefix],
        capture_output=True, timeout=600)
    out = {}
    for line in r.stdout.decode().splitlines():
        m = LINE.match(line)
        if m:
            out[m.group(2)] = {"ops": int(m.group(3)),
                               "ops_s": int(m.group(5)),
                               "p50": float(m.group(6)),
                               "p99": float(m.group(7)),
                               "errors": int(m.group(9))}
    assert r.returncode == 0 and "put" in out and "get" in out, \
        "kvbench: exit %d: %s %s" % (r.returncode, r.stdout.decode(),
                                     r.stderr.decode())
    return out


def status(node):
    r = node.kvcli("--json", "status")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wan_bytes(nodes):
    """Bytes every node sent to other regions, in all."""
    total = 0
    for n in all_nodes(nodes):
        for k, v in status(n).items():
            if k.startswith("wan_") and k.endswith("_bytes_out"):
                total += v
    return total
