"""The client library's pipelining and a full storage map, end to end."""

import os
import subprocess

import harness
from harness import Cluster


def test_pipelined_requests_share_one_connection():
    c = Cluster()
    try:
        n = c.node()
        r = subprocess.run(
            [os.path.join(harness.BIN, "kvbench"), "--node", n.addr, "--key",
             c.client_key, "--connections", "4", "--keys", "3000",
             "--pipeline", "32", "--value-size", "64"],
            capture_output=True, timeout=120)
        out = r.stdout.decode()
        assert r.returncode == 0, out + r.stderr.decode()
        lines = [l for l in out.splitlines() if " ops " in l]
        assert len(lines) == 2 and all("errors 0" in l for l in lines), out
        assert all(" 3000 ops" in l for l in lines), out
        # What the pipelined puts wrote reads back.
        assert n.kvcli("get", "bench-00002999").returncode == 0
        # And kvbench with its defaults (one request in flight) runs too.
        r = subprocess.run(
            [os.path.join(harness.BIN, "kvbench"), "--node", n.addr, "--key",
             c.client_key, "--keys", "500"], capture_output=True, timeout=120)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        assert r.stdout.decode().count("errors 0") == 2
    finally:
        c.close()


def test_full_map_refuses_writes_keeps_reads_and_recovers():
    c = Cluster()
    try:
        n = c.node(extra=["--map-size-mb", "1"])
        assert n.kvcli("put", "small", "kept").returncode == 0
        value = os.urandom(200000)
        failed = None
        for i in range(20):
            r = n.kvcli("put", "big-%d" % i, stdin=value)
            if r.returncode != 0:
                failed = r
                break
        assert failed is not None, "a 1 MiB map never filled"
        assert failed.returncode == 5, failed
        err = failed.stderr.decode()
        assert "storage full" in err and "not applied" in err, err
        assert n.alive()
        assert n.kvcli("get", "small").stdout == b"kept"
        assert n.kvcli("get", "big-0").stdout == value
        assert n.kvcli("status").returncode == 0
        assert "storage full" in n.log_text()
        # Space returns when data goes: deletes free the big values' pages,
        # and writes succeed again in the same process.
        full_at = i
        for k in range(2):
            assert n.kvcli("del", "big-%d" % k).returncode == 0
        assert n.kvcli("put", "after-delete", stdin=value).returncode == 0
        assert n.kvcli("get", "after-delete").stdout == value
        # Or when the operator gives the map more room at a restart.
        assert n.stop() == 0
        n.extra = ["--map-size-mb", "8"]
        n.start()
        for k in range(full_at + 1, full_at + 6):
            r = n.kvcli("put", "big-%d" % k, stdin=value)
            assert r.returncode == 0, r
        assert n.kvcli("get", "small").stdout == b"kept"
        assert n.kvcli("get", "big-%d" % (full_at - 1)).stdout == value
        assert n.kvcli("get", "big-0").returncode == 1  # deleted
    finally:
        c.close()
