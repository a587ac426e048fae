#!/usr/bin/python3
"""Runs every test_* function in tests/integration/test_*.py against real
kvnode processes on loopback, and prints one closing line:
"integration: N passed, M failed". Usage: run.py [--bin DIR] [NAME...]

Each test has TEST_TIMEOUT seconds (300 unless the environment says
otherwise). A failed test's node logs are kept in build/test-logs/TEST and
their last lines printed; a passing test's directories are removed."""

import importlib.util
import os
import shutil
import signal
import sys
import time
import traceback

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
LOGS = os.path.join(here, "..", "..", "build", "test-logs")


class TestTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise TestTimeout("the test ran past its %s s" %
                      os.environ.get("TEST_TIMEOUT", "300"))


def finish(harness, name, failed):
    """Closes what the test left open, keeps or removes its directories."""
    clusters, harness.CLUSTERS[:] = list(harness.CLUSTERS), []
    for c in clusters:
        if not c.closed:
            for n in c.nodes:
                if n.alive():
                    n.proc.kill()
                    n.proc.wait()
            c.closed = True
        if failed:
            dest = os.path.join(LOGS, name, os.path.basename(c.dir))
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest)
            for f in os.listdir(c.dir):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(c.dir, f), dest)
            print(c.tails(), flush=True)
            print("logs kept in %s" % os.path.normpath(dest), flush=True)
        shutil.rmtree(c.dir, ignore_errors=True)


def main():
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--bin":
        os.environ["ESSAIM_BIN"] = args[1]
        args = args[2:]
    import harness
    harness.BIN = os.environ.get("ESSAIM_BIN", harness.BIN)
    limit = int(os.environ.get("TEST_TIMEOUT", "300"))
    signal.signal(signal.SIGALRM, on_alarm)
    passed = failed = 0
    for fname in sorted(os.listdir(here)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(fname[:-3],
                                                      os.path.join(here, fname))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in sorted(dir(mod)):
            if not name.startswith("test_"):
                continue
            if args and not any(a in name for a in args):
                continue
            t0 = time.time()
            signal.alarm(limit)
            try:
                getattr(mod, name)()
                signal.alarm(0)
                finish(harness, name, False)
                passed += 1
                print("ok    %-55s %5.1fs" % (name, time.time() - t0),
                      flush=True)
            except Exception:
                signal.alarm(0)
                failed += 1
                print("FAIL  %s" % name, flush=True)
                traceback.print_exc()
                finish(harness, name, True)
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
