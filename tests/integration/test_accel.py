"""kvnode --accel with real processes: the OpenCL backend on pocl's CPU
device (make deps installs it) hashes a scrub and a repair, and a machine
without any OpenCL platform gets one clear log line and the CPU path."""

import os
import re

from harness import Cluster


def test_opencl_backend_serves_a_scrub_and_logs_its_device():
    c = Cluster()
    try:
        n = c.node("n1", ["--accel", "opencl", "--ae-interval-ms", "0"])
        log = n.log_text()
        assert re.search(r"accel opencl: OpenCL device .+ \(kernel built\); "
                         r"batches of 1 items or more go to it", log), log
        for i in range(50):
            assert n.kvcli("put", "k%d" % i, "v%d" % i).returncode == 0
        r = n.kvcli("--json", "repair", "--scrub")
        assert r.returncode == 0, r
        assert b'"scrubbed":50' in r.stdout, r.stdout
        assert n.kvcli("get", "k7").stdout == b"v7"
        # The program binary was cached for the next start.
        cache = os.path.join(n.data, "accel-cache")
        assert any(f.endswith(".bin") for f in os.listdir(cache))
        assert n.stop() == 0
        n.start()
        log = n.log_text()
        assert "cached kernel" not in log
        assert log.count("(kernel from the cache)") == 1, log
        assert n.kvcli("get", "k7").stdout == b"v7"
    finally:
        c.close()


def test_no_opencl_platform_is_one_log_line_and_the_cpu():
    c = Cluster()
    saved = os.environ.get("OCL_ICD_VENDORS")
    os.environ["OCL_ICD_VENDORS"] = os.path.join(c.dir, "no-vendors")
    try:
        n = c.node("n1", ["--accel", "opencl"])
        log = n.log_text()
        lines = [l for l in log.splitlines() if "OpenCL is not used" in l]
        assert len(lines) == 1, log
        assert "no OpenCL platform" in lines[0], lines
        assert n.kvcli("put", "k", "v").returncode == 0
        r = n.kvcli("--json", "repair", "--scrub")
        assert r.returncode == 0 and b'"corrupt":0' in r.stdout, r
    finally:
        if saved is None:
            del os.environ["OCL_ICD_VENDORS"]
        else:
            os.environ["OCL_ICD_VENDORS"] = saved
        c.close()
