"""No acknowledged write is lost to a power cut: eight writers put values
while the node is killed with -9, then everything written to data.mdb but
not yet synced is undone (tests/integration/powercut.c, loaded with
LD_PRELOAD, keeps what each unsynced write replaced), and the restarted node
must hold every acknowledged value byte for byte, and no torn one. A kill -9
alone keeps the page cache, so it would pass without a single fsync. The
second test lets the shim cut the power itself, just before a sync of
data.mdb: in the middle of a commit whose pages are written and not synced."""

import os
import signal
import struct

import harness
from harness import Cluster, wait_for


def power_cut(data_dir):
    """Undoes every write not yet synced, newest first; returns how many."""
    path = os.path.join(data_dir, "data.mdb")
    undo = path + ".undo"
    assert os.path.exists(undo), "the power-cut shim was not loaded"
    recs, raw = [], open(undo, "rb").read()
    pos = 0
    while pos + 24 <= len(raw):
        off, length, size = struct.unpack_from("=QQQ", raw, pos)
        if pos + 24 + length > len(raw):
            break  # killed while logging: that write never happened
        recs.append((off, raw[pos + 24:pos + 24 + length], size))
        pos += 24 + length
    with open(path, "r+b") as f:
        for off, old, _ in reversed(recs):
            f.seek(off)
            f.write(old)
        if recs:
            f.truncate(recs[0][2])
    os.remove(undo)
    return len(recs)


def shim(**extra):
    env = {"LD_PRELOAD": os.path.abspath(
               os.path.join(harness.BIN, "tests", "libpowercut.so")),
           # Under the sanitizers the shim comes first in the list.
           "ASAN_OPTIONS": "verify_asan_link_order=0:" +
           os.environ.get("ASAN_OPTIONS", "")}
    env.update(extra)
    return env


def cut_while_writing(c, at_sync=None):
    """Eight writers put values through a node under the shim until the
    power goes: the test's kill -9 after 300 acknowledged puts, or the
    shim's own at the at_sync-th sync of data.mdb (inside a commit). Then the
    power cut, a restart, and every acknowledged value must read back byte
    for byte, and every write in flight be whole or absent. Returns the node
    and what was acknowledged and undone."""
    n = harness.Node(c, "n1", [])
    c.nodes.append(n)
    n.env = shim(**({"POWERCUT_AT_SYNC": str(at_sync)} if at_sync else {}))
    n.start()
    w = harness.Writers(n, 8, lambda w, i: bytes([w + 65]) *
                        (1 + (i * 37) % 3000))
    if at_sync:
        wait_for(lambda: not n.alive(), 60, "the shim's power cut")
        n.down_on_purpose = True
        assert n.proc.returncode == -signal.SIGKILL, n.proc.returncode
    else:
        wait_for(lambda: len(w.acked) >= 300, 60, "300 acknowledged puts")
        n.kill(signal.SIGKILL)
    w.stop()
    acked, tried = w.acked, w.tried
    undone = power_cut(n.data)
    n.env = None
    n.start()
    for k, v in acked.items():
        r = n.kvcli("get", k)
        assert r.returncode == 0, (k, r, "acknowledged, then lost")
        assert r.stdout == v, k
    # Writes in flight at the cut: whole or absent, never torn.
    for k in set(tried) - set(acked):
        r = n.kvcli("get", k)
        assert r.returncode == 1 or r.stdout == tried[k], (k, r)
    print("      %d acknowledged, %d not, %d unsynced writes undone" %
          (len(acked), len(tried) - len(acked), undone))
    return n, acked, undone


def test_power_cut_with_writes_in_flight_loses_nothing_acknowledged():
    c = Cluster()
    try:
        n, acked, _ = cut_while_writing(c)
        # A delete is durable too.
        n.kill(signal.SIGKILL)
        n.env = shim()
        n.start()
        first, second = sorted(acked)[:2]
        assert n.kvcli("del", first).returncode == 0
        n.kill(signal.SIGKILL)
        power_cut(n.data)
        n.env = None
        n.start()
        assert n.kvcli("get", first).returncode == 1
        assert n.kvcli("get", second).stdout == acked[second]
    finally:
        c.close()


def test_power_cut_inside_a_commit_loses_nothing_acknowledged():
    c = Cluster()
    try:
        # The 60th sync: well into the writes, with a batch's pages written
        # and not yet synced when the power goes.
        _, acked, undone = cut_while_writing(c, at_sync=60)
        assert undone > 0, "the cut came between commits"
        assert len(acked) > 0
    finally:
        c.close()
