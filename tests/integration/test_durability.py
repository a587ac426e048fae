"""No acknowledged write is lost: kill -9 right after acknowledged puts,
restart on the same data directory, and read every value back byte for
byte."""

import concurrent.futures
import os
import signal

from harness import Cluster


def test_kill9_after_acknowledged_puts_loses_nothing():
    c = Cluster()
    try:
        n = c.node()
        values = {"key-%04d" % i: os.urandom(1 + (i * 37) % 3000)
                  for i in range(240)}

        def put(item):
            k, v = item
            r = n.kvcli("put", k, stdin=v)
            return k, r.returncode

        acked = []
        # Eight writers at once, so writes share group-commit batches.
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            for k, rc in ex.map(put, values.items()):
                if rc == 0:
                    acked.append(k)
        assert len(acked) == len(values)
        n.kill(signal.SIGKILL)  # no chance to flush anything
        n.start()
        for k in acked:
            r = n.kvcli("get", k)
            assert r.returncode == 0, (k, r)
            assert r.stdout == values[k], k
        # Deletions are durable too.
        assert n.kvcli("del", acked[0]).returncode == 0
        n.kill(signal.SIGKILL)
        n.start()
        assert n.kvcli("get", acked[0]).returncode == 1
    finally:
        c.close()
