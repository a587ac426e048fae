#!/usr/bin/python3
"""Runs every test_* function in tests/integration/test_*.py against real
kvnode processes on loopback, and prints one closing line:
"integration: N passed, M failed". Usage: run.py [--bin DIR] [NAME...]"""

import importlib.util
import os
import sys
import time
import traceback

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)


def main():
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--bin":
        os.environ["ESSAIM_BIN"] = args[1]
        args = args[2:]
    import harness
    harness.BIN = os.environ.get("ESSAIM_BIN", harness.BIN)
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
            try:
                getattr(mod, name)()
                passed += 1
                print("ok    %-55s %5.1fs" % (name, time.time() - t0),
                      flush=True)
            except Exception:
                failed += 1
                print("FAIL  %s" % name, flush=True)
                traceback.print_exc()
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
