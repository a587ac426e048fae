"""kvcli's contract (DESIGN §12): commands, exit codes, one-line errors,
binary-safe values, KV_NODE and KV_KEY, --json."""

import json
import os

from harness import Cluster


def one_line(r):
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("kvcli: "), repr(err)


def test_put_get_del_and_exit_codes():
    c = Cluster()
    try:
        n = c.node()
        assert n.kvcli("put", "greeting", "hello").returncode == 0
        r = n.kvcli("get", "greeting")
        assert r.returncode == 0 and r.stdout == b"hello", r
        r = n.kvcli("get", "absent")
        assert r.returncode == 1, r
        one_line(r)
        assert n.kvcli("del", "greeting").returncode == 0
        assert n.kvcli("get", "greeting").returncode == 1
        # An empty value is a value, not a deletion.
        assert n.kvcli("put", "empty", "").returncode == 0
        r = n.kvcli("get", "empty")
        assert r.returncode == 0 and r.stdout == b""
    finally:
        c.close()


def test_binary_values_from_stdin_are_exact():
    c = Cluster()
    try:
        n = c.node()
        blob = os.urandom(700000) + b"\x00\n\r\xff"
        assert n.kvcli("put", "blob", stdin=blob).returncode == 0
        assert n.kvcli("put", "blob2", "-", stdin=blob).returncode == 0
        for k in ("blob", "blob2"):
            r = n.kvcli("get", k)
            assert r.returncode == 0 and r.stdout == blob
    finally:
        c.close()


def test_usage_errors_exit_2():
    c = Cluster()
    try:
        n = c.node()
        for args in (["frobnicate"], ["get"], ["put"], ["get", "a", "b"],
                     ["--consistency", "most", "get", "a"],
                     ["--timeout", "-5", "get", "a"], ["get", "k" * 1025]):
            r = n.kvcli(*args)
            assert r.returncode == 2, (args, r)
            one_line(r)
        r = c.kvcli_raw([])
        assert r.returncode == 2
        # A value over the node's limit is refused with the limit named.
        r = n.kvcli("put", "big", stdin=b"x" * (1024 * 1024 + 1))
        assert r.returncode == 2 and b"1048576" in r.stderr, r
        r = c.kvcli_raw(["get", "x"], env={"PATH": os.environ["PATH"]})
        assert r.returncode == 2 and b"KV_KEY" in r.stderr, r
    finally:
        c.close()


def test_wrong_client_secret_exits_4():
    c = Cluster()
    try:
        n = c.node()
        wrong = os.path.join(c.dir, "wrong.key")
        c.kvcli_raw(["keygen", wrong], check=True)
        r = n.kvcli("get", "x", key=wrong)
        assert r.returncode == 4, r
        one_line(r)
        # The cluster secret is not a client credential either.
        r = n.kvcli("get", "x", key=c.cluster_key)
        assert r.returncode == 4, r
        assert "handshake refused" in n.log_text()
        assert n.kvcli("put", "still", "serving").returncode == 0
    finally:
        c.close()


def test_unreachable_node_exits_3():
    c = Cluster()
    try:
        n = c.node()
        n.kill()
        r = n.kvcli("get", "x")
        assert r.returncode == 3, r
        one_line(r)
    finally:
        c.close()


def test_environment_and_json():
    c = Cluster()
    try:
        n = c.node()
        env = dict(os.environ, KV_NODE=n.addr, KV_KEY=c.client_key)
        r = c.kvcli_raw(["--json", "put", "j", "va\"lue"], env=env)
        assert r.returncode == 0, r
        put = json.loads(r.stdout)
        assert put["ok"] is True and put["version"] > 0
        r = c.kvcli_raw(["--json", "get", "j"], env=env)
        got = json.loads(r.stdout)
        assert got == {"key": "j", "value": "va\"lue",
                       "version": put["version"]}, got
        c.kvcli_raw(["put", "bin"], stdin=b"\xff\xfe", env=env, check=True)
        got = json.loads(c.kvcli_raw(["--json", "get", "bin"], env=env).stdout)
        assert got["value_base64"] == "//4=", got
        st = json.loads(c.kvcli_raw(["--json", "status"], env=env).stdout)
        assert st["keys"] == 2 and st["listen"] == n.addr, st
        assert st["puts"] == 2 and st["write_batches"] >= 1
        r = c.kvcli_raw(["status"], env=env)
        assert b"node_id" in r.stdout
    finally:
        c.close()


def test_keygen_writes_mode_0600_and_never_overwrites():
    c = Cluster()
    try:
        p = os.path.join(c.dir, "new.key")
        c.kvcli_raw(["keygen", p], check=True)
        assert os.stat(p).st_mode & 0o777 == 0o600
        before = open(p).read()
        assert len(before) == 45 and before.endswith("=\n")
        r = c.kvcli_raw(["keygen", p])
        assert r.returncode == 5 and open(p).read() == before
    finally:
        c.close()
