"""What the README promises and no other test checked, each run as a user
would: request timeouts end to end (the coordinator's and kvcli's), kvcli
ring, repair of one range and repair's exit 3, the scheduled scrub and a
record whose header is damaged on disk, --dead-reap-ms, --config with the
command line winning, --accel auto, --max-key-size, kvnode --help, --region,
and SIGTERM finishing the writes in flight."""

import json
import os
import signal
import subprocess
import time

import harness
from harness import Cluster, wait_for
from test_antientropy import (flip_at_each, start_three, status,
                              wait_held_by_all)
from test_membership import FAST


def members(n):
    r = n.kvcli("--json", "members")
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def test_a_request_past_its_deadline_times_out_clearly():
    c = Cluster()
    try:
        # Default failure detection (seconds): the paused replica is still
        # "alive" when the 500 ms deadline passes.
        first = c.node("n1", ["--request-timeout-ms", "500"])
        nodes = [first] + [c.node(n, ["--request-timeout-ms", "500", "--join",
                                      first.addr]) for n in ("n2", "n3")]
        wait_for(lambda: all(status(n)["members_alive"] == 3 and
                             len([m for m in members(n)
                                  if m["ring"] == "normal"]) == 3 and
                             n.kvcli("--consistency", "all", "put", "w",
                                     "x").returncode == 0 for n in nodes),
                 30, "three writable nodes")
        before = status(nodes[0])["request_timeouts"]
        nodes[2].proc.send_signal(signal.SIGSTOP)
        try:
            # The coordinator's deadline: every replica was asked for.
            r = nodes[0].kvcli("--consistency", "all", "put", "late", "x")
            assert r.returncode == 3, r
            assert b"timed out" in r.stderr, r.stderr
            assert status(nodes[0])["request_timeouts"] == before + 1
            # kvcli's own deadline: the node it talks to does not answer.
            r = nodes[2].kvcli("get", "w", extra=["--timeout", "300"])
            assert r.returncode == 3, r
            assert b"did not answer within 300 ms" in r.stderr, r.stderr
        finally:
            nodes[2].proc.send_signal(signal.SIGCONT)
        # A quorum was there all along.
        assert nodes[0].kvcli("get", "late").returncode in (0, 1)
        assert nodes[1].kvcli("put", "after", "y").returncode == 0
    finally:
        c.close()


def test_ring_repair_of_one_range_and_repair_exit_3():
    c = Cluster()
    try:
        nodes = start_three(c)
        r = nodes[0].kvcli("--json", "ring")
        assert r.returncode == 0, r
        rows = json.loads(r.stdout)
        rows = rows["nodes"] if isinstance(rows, dict) else rows
        assert len(rows) == 3, rows
        assert abs(sum(row["share"] for row in rows) - 1.0) < 0.001, rows
        assert all(len(row["tokens"]) > 0 for row in rows), rows
        text = nodes[0].kvcli("ring")
        assert text.returncode == 0 and text.stdout.count(b"%") >= 3, text
        # One range only.
        r = nodes[0].kvcli("--json", "repair", "--range", "5")
        assert r.returncode == 0, r
        out = json.loads(r.stdout)
        assert out["code"] == 0 and out["exchanges"] == 2, out
        r = nodes[0].kvcli("repair", "--range", "16")
        assert r.returncode == 2, r
        # A replica down: the round cannot finish, and says so.
        nodes[2].kill()
        r = nodes[0].kvcli("repair")
        assert r.returncode == 3, r
        assert r.stderr, r
    finally:
        c.close()


def damage_header(path, key, value):
    """Flips the format byte of the record that holds key and value (the
    44-byte header precedes the key, which precedes the value)."""
    return flip_at_each(path, key + value, -44, 0x5a)


def test_the_scheduled_scrub_finds_a_damaged_record_header():
    c = Cluster()
    try:
        nodes = start_three(c)
        key, value = b"header-damage", b"kept safe elsewhere " * 6
        assert nodes[0].kvcli("put", key.decode(),
                              stdin=value).returncode == 0
        wait_held_by_all(nodes[0], key.decode())
        n3 = nodes[2]
        assert n3.stop() == 0
        assert damage_header(os.path.join(n3.data, "data.mdb"), key,
                             value) >= 1
        # Only this node scrubs (were its peers to scrub too, their
        # anti-entropy could push it the record before its own scrub ran).
        n3.extra = n3.extra + ["--scrub-interval-ms", "1000"]
        n3.start()
        # No repair asked for: the scrub on its schedule finds and replaces
        # it from a replica.
        wait_for(lambda: status(n3)["scrub_repaired"] >= 1, 30,
                 "the scheduled scrub to repair the record")
        assert status(n3)["scrub_corrupt"] >= 1
        nodes[0].kill()
        nodes[1].kill()
        r = n3.kvcli("--consistency", "one", "get", key.decode())
        assert r.returncode == 0 and r.stdout == value, r
    finally:
        c.close()


def test_members_that_left_are_forgotten_after_dead_reap_ms():
    c = Cluster()
    try:
        opts = FAST + ["--dead-reap-ms", "1500"]
        first = c.node("n1", opts)
        nodes = [first] + [c.node(n, opts + ["--join", first.addr])
                           for n in ("n2", "n3")]
        wait_for(lambda: all(len([m for m in members(n)
                                  if m["ring"] == "normal"]) == 3
                             for n in nodes), 20, "three members")
        # A decommission leaves for good (SIGTERM would only stop it); with
        # 3 replicas per key it needs --force to leave 2 nodes.
        r = nodes[2].kvcli("decommission")
        assert r.returncode == 5 and b"fewer than the replication factor" \
            in r.stderr, r
        r = nodes[2].kvcli("decommission", "--force")
        assert r.returncode == 0, r
        assert nodes[2].proc.wait(timeout=10) == 0
        nodes[2].down_on_purpose = True
        wait_for(lambda: any(m["status"] == "left"
                             for m in members(nodes[0])), 10, "left")
        wait_for(lambda: all(len(members(n)) == 2 for n in nodes[:2]), 15,
                 "the left member forgotten")
        # One killed is dead, and dead members are kept.
        nodes[1].kill()
        wait_for(lambda: any(m["status"] == "dead"
                             for m in members(nodes[0])), 15, "dead")
        dead_at = time.time()
        # Twice --dead-reap-ms later it is still listed.
        while time.time() - dead_at < 3:
            assert len(members(nodes[0])) == 2, members(nodes[0])
            time.sleep(0.5)
    finally:
        c.close()


def test_config_file_with_the_command_line_winning():
    c = Cluster()
    try:
        n = harness.Node(c, "cfg", [])
        c.nodes.append(n)
        conf = os.path.join(c.dir, "node.ini")
        with open(conf, "w") as f:
            f.write("# essaim node\nlisten = %s\ndata = %s\ncluster-key = %s\n"
                    "client-key = %s\nmax-key-size = 16\nzone = from-file\n" %
                    (n.addr, n.data, c.cluster_key, c.client_key))
        env = dict(os.environ)
        n.proc = subprocess.Popen(
            [os.path.join(harness.BIN, "kvnode"), "--config", conf, "--zone",
             "from-command-line"], stdout=open(n.log, "ab"),
            stderr=subprocess.STDOUT, env=env)
        n.wait_ready()
        assert n.kvcli("put", "k" * 16, "v").returncode == 0
        r = n.kvcli("put", "k" * 17, "v")  # over the file's --max-key-size
        assert r.returncode == 2, r
        assert b"key of 17 bytes is over the node's limit of 16" in \
            r.stderr, r
        zones = [m["zone"] for m in members(n)]
        assert zones == ["from-command-line"], zones
        # An unknown setting in the file is refused, by name.
        with open(conf, "a") as f:
            f.write("no-such-setting = 1\n")
        r = subprocess.run([os.path.join(harness.BIN, "kvnode"), "--config",
                            conf], capture_output=True, timeout=30)
        assert r.returncode == 2 and b"no-such-setting" in r.stderr, r
    finally:
        c.close()


def test_help_accel_auto_and_region():
    r = subprocess.run([os.path.join(harness.BIN, "kvnode"), "--help"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r
    for opt in (b"--listen", b"--config", b"--max-key-size", b"--region",
                b"--accel", b"--dead-reap-ms", b"--old-cluster-key",
                b"--access", b"--stall-timeout-ms"):
        assert opt in r.stdout + r.stderr, opt
    c = Cluster()
    try:
        # Two regions: each key's three replicas span both (new regions
        # first), whatever node coordinates.
        first = c.node("a1", FAST + ["--accel", "auto", "--region", "eu",
                                     "--zone", "z1"])
        assert "accel auto:" in first.log_text()
        nodes = [first] + [
            c.node(name, FAST + ["--region", reg, "--zone", z, "--join",
                                 first.addr])
            for name, reg, z in (("a2", "eu", "z2"), ("b1", "us", "z1"),
                                 ("b2", "us", "z2"))]
        wait_for(lambda: all(len([m for m in members(n)
                                  if m["ring"] == "normal"]) == 4 and
                             n.kvcli("--consistency", "all", "put", "probe",
                                     "x").returncode == 0 for n in nodes),
                 30, "four writable nodes")
        regions = {m["address"]: m["region"] for m in members(first)}
        assert sorted(regions.values()) == ["eu", "eu", "us", "us"], regions
        for i in range(20):
            k = "geo-%d" % i
            assert nodes[i % 4].kvcli("put", k, "v").returncode == 0
            r = first.kvcli("--json", "where", k)
            assert r.returncode == 0, r
            rows = json.loads(r.stdout)
            rows = rows["replicas"] if isinstance(rows, dict) else rows
            assert {regions[row["address"]] for row in rows} == {"eu", "us"}, \
                rows
    finally:
        c.close()


def test_sigterm_finishes_the_writes_in_flight():
    c = Cluster()
    try:
        n = c.node()
        w = harness.Writers(n, 6, lambda w, i: b"x" * 2000)
        wait_for(lambda: len(w.acked) >= 100, 60, "100 acknowledged puts")
        assert n.stop() == 0  # while six writers are at it
        w.stop()
        acked = w.acked
        n.start()
        for k in acked:
            assert n.kvcli("get", k).returncode == 0, k
    finally:
        c.close()
