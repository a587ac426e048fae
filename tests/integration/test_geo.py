"""Geodistribution with real processes (DESIGN §6): replicas per region,
local and per-region consistency levels over a WAN made with the fault
layer's delays, a region cut off and healed, raising a region's replica
count, bad settings, and nodes in network namespaces that bind a wildcard
and advertise their own address."""

import json
import os
import signal
import subprocess
import time

import harness
from geo import (cut, heal, kvbench, serving_everywhere, set_wan,
                 start_regions, status)
from harness import Cluster, wait_for

TWO_REGIONS = [("eu", ["a", "b", "c"]), ("us", ["a", "b", "c"])]
# The cut and its heal are found by gossip: a faster push-pull brings the
# sides together sooner; probing keeps its defaults (1 s, 500 ms).
HEAL_FAST = ["--push-pull-ms", "5000"]


def test_geo_local_quorum_stays_in_its_region():
    """Six nodes, eu and us 80 ms apart (40 ms each way), --replicas
    eu:3,us:3: through an eu node, local_quorum puts wait for eu alone
    (p99 under 25 ms) while quorum puts wait for the WAN (p50 over 70 ms)."""
    c = Cluster()
    nodes = start_regions(c, TWO_REGIONS, "eu:3,us:3")
    set_wan(nodes, {("eu", "us"): 40})
    eu = nodes["eu"][0]
    local = kvbench(eu, "local_quorum", keys=400, conns=4)
    quorum = kvbench(eu, "quorum", keys=100, conns=4)
    print("      local_quorum put p50 %.1f p99 %.1f ms; quorum put p50 %.1f "
          "p99 %.1f ms" % (local["put"]["p50"], local["put"]["p99"],
                           quorum["put"]["p50"], quorum["put"]["p99"]))
    for r in (local, quorum):
        assert r["put"]["errors"] == 0 and r["get"]["errors"] == 0, r
    assert local["put"]["p99"] < 25, local
    assert quorum["put"]["p50"] > 70, quorum
    # Reads asked the other replicas for digests, not records.
    assert status(eu)["digest_reads"] > 0
    # kvcli status counts what crossed to us, and members show regions and
    # the setting each node holds.
    s = status(eu)
    assert s["wan_us_bytes_out"] > 0 and s["wan_us_bytes_in"] > 0, s
    ms = json.loads(eu.kvcli("--json", "members").stdout)
    assert sorted(m["region"] for m in ms) == ["eu"] * 3 + ["us"] * 3
    assert all(m["replicas"] == "eu:3,us:3" for m in ms)


def put(node, key, value, level):
    return node.kvcli("--consistency", level, "put", key, value)


def test_geo_a_cut_region_keeps_local_writes_and_catches_up():
    """With eu and us cut apart, local_quorum writes succeed on both sides
    and each_quorum is refused with a clear error; after the heal each
    region reads the other's writes at local_one within 90 s, without
    kvcli repair."""
    c = Cluster()
    nodes = start_regions(c, TWO_REGIONS, "eu:3,us:3", HEAL_FAST)
    set_wan(nodes, {("eu", "us"): 40})
    cut(nodes, "us")
    written = {"eu": [], "us": []}
    for region in ("eu", "us"):
        for i in range(20):
            node = nodes[region][i % 3]
            key = "cut-%s-%d" % (region, i)
            r = put(node, key, "v" + key, "local_quorum")
            assert r.returncode == 0, (key, r.stderr)
            written[region].append(key)
    r = put(nodes["eu"][1], "cut-each", "x", "each_quorum")
    assert r.returncode == 3, (r.returncode, r.stderr)
    err = r.stderr.decode()
    assert "replicas in us needed" in err, err
    r = put(nodes["us"][1], "cut-each", "x", "each_quorum")
    assert r.returncode == 3 and "replicas in eu needed" in \
        r.stderr.decode(), r.stderr
    healed = time.time()
    heal(nodes)

    def caught_up():
        for here, there in (("eu", "us"), ("us", "eu")):
            for n in nodes[here]:
                for key in written[there]:
                    g = n.kvcli("--consistency", "local_one", "get", key)
                    if g.returncode != 0 or g.stdout != ("v" + key).encode():
                        return False
        return True

    wait_for(caught_up, 90, "each region reading the other's writes",
             poll=1)
    print("      every region read every write %.1f s after the heal" %
          (time.time() - healed))


def test_geo_raising_a_regions_count_and_repair_fill_new_replicas():
    """eu:2 on three eu nodes, then every node restarted with eu:3 (the
    README's procedure): kvcli repair on each puts every key on all
    three."""
    c = Cluster()
    nodes = start_regions(c, [("eu", ["a", "b", "c"])], "eu:2",
                          ["--ae-interval-ms", "0"])
    eu = nodes["eu"]
    keys = ["grow-%d" % i for i in range(30)]
    for k in keys:
        assert put(eu[0], k, "v", "quorum").returncode == 0

    def found(key):
        r = eu[0].kvcli("--json", "where", key)
        assert r.returncode == 0, r.stderr
        return sum(1 for x in json.loads(r.stdout)["replicas"]
                   if x.get("found"))

    assert all(found(k) == 2 for k in keys)
    for n in eu:
        n.extra[n.extra.index("--replicas") + 1] = "eu:3"
        assert n.stop() == 0
        n.start()
    wait_for(lambda: serving_everywhere(eu), 60, "restarted nodes")

    def agreed():
        return all(m["replicas"] == "eu:3" for n in eu
                   for m in json.loads(n.kvcli("--json", "members").stdout)) \
            and all(status(n)["replicas_mismatch"] == 0 for n in eu)

    wait_for(agreed, 60, "every node holding every member's eu:3")
    # Until repaired, a new replica may lack a key: where says so.
    assert any(found(k) < 3 for k in keys)
    for n in eu:
        r = n.kvcli("repair")
        assert r.returncode == 0, r.stderr
    missing = [k for k in keys if found(k) != 3]
    assert not missing, missing


def test_geo_bad_settings_get_clear_errors():
    c = Cluster()
    for i, (bad, says) in enumerate((("eu", "expected N or REGION:N"),
                                     ("eu:0", "count of 0"),
                                     ("eu:3,eu:2", "named twice"),
                                     ("eu:3;us:3", "expected N or REGION:N"))):
        n = harness.Node(c, "bad%d" % i, ["--replicas", bad])
        n.start(wait=False)
        assert n.proc.wait(timeout=10) == 2, bad
        assert says in n.log_text(), (bad, n.log_text())
        n.down_on_purpose = True
    # A wildcard --listen without --advertise is refused.
    n = harness.Node(c, "wild", [])
    n.addr = "0.0.0.0:%d" % n.port
    n.start(wait=False)
    assert n.proc.wait(timeout=10) == 2
    assert "--advertise" in n.log_text()
    n.down_on_purpose = True
    # A region with fewer nodes than its count: allowed, and a warning says
    # so.
    node = c.node("short", ["--region", "eu", "--replicas", "eu:3"])
    wait_for(lambda: "region eu has 1 node for 3 replicas" in
             node.log_text(), 10, "the warning")
    assert node.kvcli("put", "k", "v").returncode == 0
    # An unknown consistency level: exit 2 with the list of levels.
    r = node.kvcli("--consistency", "local", "get", "k")
    assert r.returncode == 2
    assert b"local_quorum" in r.stderr and b"each_quorum" in r.stderr
    r = subprocess.run([os.path.join(harness.BIN, "kvbench"), "--node",
                        node.addr, "--key", c.client_key, "--consistency",
                        "most"], capture_output=True, timeout=30)
    assert r.returncode == 2 and b"local_one" in r.stderr, r.stderr


def netns(*args):
    return subprocess.run(["ip"] + list(args), capture_output=True,
                          timeout=30)


def test_geo_nodes_in_namespaces_bind_a_wildcard_and_advertise():
    """Three hosts as three network namespaces on one bridge, each node with
    --listen 0.0.0.0:7400 --advertise ITS_ADDRESS:7400: they form a cluster
    and serve a put at all."""
    tag = "es%d" % os.getpid()
    hub, hosts = tag + "h", [tag + "n%d" % i for i in range(3)]
    made = []
    try:
        if netns("netns", "add", hub).returncode != 0:
            print("      skip: cannot create network namespaces here (needs "
                  "root and iproute2)")
            return
        made.append(hub)
        setup = [("-n", hub, "link", "add", "br0", "type", "bridge"),
                 ("-n", hub, "link", "set", "br0", "up")]
        for i, h in enumerate(hosts):
            assert netns("netns", "add", h).returncode == 0
            made.append(h)
            a, b = "%se%d" % (tag, i), "%sp%d" % (tag, i)
            setup += [("link", "add", a, "type", "veth", "peer", "name", b),
                      ("link", "set", a, "netns", h),
                      ("link", "set", b, "netns", hub),
                      ("-n", hub, "link", "set", b, "master", "br0"),
                      ("-n", hub, "link", "set", b, "up"),
                      ("-n", h, "addr", "add", "10.77.0.%d/24" % (i + 1),
                       "dev", a),
                      ("-n", h, "link", "set", a, "up"),
                      ("-n", h, "link", "set", "lo", "up")]
        for cmd in setup:
            r = netns(*cmd)
            assert r.returncode == 0, (cmd, r.stderr)
        run_three_hosts(hosts)
    finally:
        for h in made:
            netns("netns", "del", h)


def run_three_hosts(hosts):
    c = Cluster()
    procs = []
    addrs = ["10.77.0.%d:7400" % (i + 1) for i in range(3)]

    def kvcli(i, *args):
        return subprocess.run(
            ["ip", "netns", "exec", hosts[i],
             os.path.join(harness.BIN, "kvcli"), "--node", addrs[i], "--key",
             c.client_key] + list(args), capture_output=True, timeout=30)

    try:
        for i, h in enumerate(hosts):
            log = open(os.path.join(c.dir, "host%d.log" % i), "wb")
            args = ["ip", "netns", "exec", h,
                    os.path.join(harness.BIN, "kvnode"), "--data",
                    os.path.join(c.dir, "host%d" % i), "--listen",
                    "0.0.0.0:7400", "--advertise", addrs[i],
                    "--cluster-key", c.cluster_key, "--client-key",
                    c.client_key, "--zone", "z%d" % i]
            if i:
                args += ["--join", addrs[0]]
            procs.append(subprocess.Popen(args, stdout=log, stderr=log))
            log.close()

        def formed():
            r = kvcli(2, "--json", "members")
            if r.returncode != 0:
                return False
            ms = json.loads(r.stdout)
            return sorted(m["address"] for m in ms
                          if m["status"] == "alive" and
                          m["ring"] == "normal") == addrs

        wait_for(formed, 60, "three hosts in one cluster")
        r = kvcli(1, "--consistency", "all", "put", "across", "hosts")
        assert r.returncode == 0, r.stderr
        r = kvcli(2, "--consistency", "all", "get", "across")
        assert r.returncode == 0 and r.stdout == b"hosts", r
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for i, p in enumerate(procs):
            try:
                rc = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            assert rc == 0, "host %d exited %s" % (i, rc)
