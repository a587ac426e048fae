"""Clients with keys of their own and roles (kvnode --access, kvcli
--identity): read, write and admin rights, keys that are not listed, and an
access file changed under a running node (SIGHUP)."""

import base64
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import msgpack
from dissononce.dh.x25519.private import PrivateKey
from dissononce.dh.x25519.x25519 import X25519DH

import harness
from harness import Cluster, Node, wait_for
from noise_client import MSG_GET, NoiseClient, new_handshake, read_key
from test_hostile_input import closed_by_node
from test_membership import FAST


def identity(c, name):
    """kvcli keygen --identity: the key file and its public key."""
    path = os.path.join(c.dir, name + ".id")
    r = c.kvcli_raw(["keygen", "--identity", path], check=True)
    pub = r.stdout.decode().strip()
    assert len(base64.b64decode(pub)) == 32, pub
    assert os.stat(path).st_mode & 0o777 == 0o600
    return path, pub


def write_access(c, lines):
    path = os.path.join(c.dir, "access")
    with open(path, "w") as f:
        f.write("# who may do what\n" + "\n".join(lines) + "\n")
    return path


def as_(n, ident, *args):
    return n.cluster.kvcli_raw(["--node", n.addr, "--identity", ident] +
                               list(args))


def test_roles_decide_what_each_client_may_do():
    c = Cluster()
    try:
        reader, rpub = identity(c, "reader")
        writer, wpub = identity(c, "writer")
        admin, apub = identity(c, "admin")
        stranger, _ = identity(c, "stranger")
        access = write_access(c, ["%s alice read" % rpub,
                                  "%s bob write" % wpub,
                                  "%s carol admin" % apub])
        n = c.node(extra=["--access", access])
        # write: put and get, not repair (exit 4, naming the role)
        assert as_(n, writer, "put", "k", "v").returncode == 0
        r = subprocess.run([os.path.join(harness.BIN, "kvbench"), "--node",
                            n.addr, "--identity", writer, "--keys", "50",
                            "--connections", "2"], capture_output=True,
                           timeout=60)
        assert r.returncode == 0 and b"errors 0" in r.stdout, r
        r = as_(n, writer, "repair")
        assert r.returncode == 4, r
        assert b"repair needs the admin role; key bob has write" in r.stderr
        # read: get, status, not put
        r = as_(n, reader, "get", "k")
        assert r.returncode == 0 and r.stdout == b"v", r
        assert as_(n, reader, "status").returncode == 0
        r = as_(n, reader, "put", "k", "w")
        assert r.returncode == 4, r
        assert b"put needs the write role; key alice has read" in r.stderr
        assert as_(n, reader, "get", "k").stdout == b"v"
        # admin: everything
        r = as_(n, admin, "repair")
        assert r.returncode == 0, r
        r = as_(n, admin, "fault", "show")
        assert r.returncode == 0, r
        # a key that is not listed, and the shared secret, get nowhere
        r = as_(n, stranger, "get", "k")
        assert r.returncode == 4, r
        assert b"this key is not allowed on this cluster" in r.stderr, r
        r = n.kvcli("get", "k")  # the shared secret: not taken here
        assert r.returncode == 5 and b"--identity" in r.stderr, r
        st = json.loads(as_(n, admin, "--json", "status").stdout)
        assert st["refused_role"] == 2 and st["refused_key"] >= 1, st
        assert st["requests_write_role"] >= 1 and \
            st["requests_read_role"] >= 2, st
        log = n.log_text()
        assert "audit: carol" in log and "runs repair" in log, log
        assert "audit: refused" in log
    finally:
        c.close()


def test_a_bad_access_file_stops_the_node_and_names_the_line():
    c = Cluster()
    try:
        _, pub = identity(c, "a")
        access = write_access(c, ["%s alice read" % pub, "%s bob root" % pub])
        n = Node(c, "n1", ["--access", access])
        c.nodes.append(n)
        n.start(wait=False)
        assert n.proc.wait(timeout=15) == 2
        n.down_on_purpose = True
        assert "line 3: unknown role" in n.log_text(), n.log_text()
    finally:
        c.close()


IDENTITY_PSK_LABEL = (b"essaim/1 identity: a public PSK; the static key is "
                      b"what is checked")


def identity_session(n, path):
    """An open session with the key of an identity file (dissononce)."""
    priv = base64.b64decode(open(path).read().strip())
    psk = hashlib.blake2b(IDENTITY_PSK_LABEL, digest_size=32).digest()
    cl = NoiseClient(n.addr, psk, prologue=b"essaim/1 identity",
                     keypair=X25519DH().generate_keypair(PrivateKey(priv)))
    cl.handshake()
    return cl


def test_a_key_removed_from_the_access_file_is_closed_at_reload():
    c = Cluster()
    try:
        reader, rpub = identity(c, "reader")
        admin, apub = identity(c, "admin")
        lines = ["%s alice read" % rpub, "%s carol admin" % apub]
        access = write_access(c, lines)
        n = c.node(extra=["--access", access])
        assert as_(n, admin, "put", "k", "v").returncode == 0
        open_one = identity_session(n, reader)
        assert open_one.request(MSG_GET, b"k", 2, 0)[6] == b"v"
        # A file that does not parse: the old one stays.
        write_access(c, lines + ["garbage"])
        n.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "keeping the 2 client(s)" in n.log_text(), 5,
                 "the bad file to be refused")
        assert open_one.request(MSG_GET, b"k", 2, 0)[6] == b"v"
        # alice leaves: her open connection is closed at once, and her key
        # is refused from then on.
        write_access(c, ["%s carol admin" % apub])
        t0 = time.time()
        n.proc.send_signal(signal.SIGHUP)
        assert closed_by_node(open_one.sock), "alice's connection stayed open"
        print("      closed %.2f s after SIGHUP" % (time.time() - t0))
        r = as_(n, reader, "get", "k")
        assert r.returncode == 4 and b"not allowed" in r.stderr, r
        assert as_(n, admin, "get", "k").stdout == b"v"
        assert "its key left the access list" in n.log_text()
    finally:
        c.close()


def _impostor(port, psk, ready, done):
    """Plays a node at port with the client secret and a key of its own
    (dissononce, a separate Noise implementation): it completes the
    handshake and sends a welcome, as a node would."""

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    srv.settimeout(15)
    ready.set()
    conn, _ = srv.accept()
    conn.settimeout(5)

    def frame():
        hdr = b""
        while len(hdr) < 4:
            hdr += conn.recv(4 - len(hdr))
        (n,) = struct.unpack(">I", hdr)
        body = b""
        while len(body) < n:
            body += conn.recv(n - len(body))
        return body

    def send(body):
        conn.sendall(struct.pack(">I", len(body)) + body)

    hs = new_handshake(False, b"essaim/1 client", psk)
    hs.read_message(frame(), bytearray())
    buf = bytearray()
    hs.write_message(b"", buf)
    send(bytes(buf))
    _, tx = hs.read_message(frame(), bytearray())
    welcome = msgpack.packb([1, 18, 0, 0, os.urandom(16), 1024, 1 << 20],
                            use_bin_type=True)
    send(tx.encrypt_with_ad(b"", b"\x00" + welcome))
    try:
        conn.recv(1)  # kvcli hangs up (or would send its request)
    except OSError:
        pass
    conn.close()
    srv.close()
    done.set()


def test_a_client_that_pinned_the_nodes_refuses_an_impostor():
    """kvcli pins the key of the node it first reaches and of every member
    that node lists; a process holding the client secret that answers at a
    pinned address later is refused (exit 4), as is a node that does not
    prove the key --node-key names."""
    c = Cluster()
    try:
        known = os.path.join(c.dir, "known_nodes")
        env = dict(os.environ, KV_KNOWN_NODES=known)

        def kv(n, *args):
            return c.kvcli_raw(["--node", n.addr, "--key", c.client_key] +
                               list(args), env=env)
        n1 = c.node("n1", FAST)
        n2 = c.node("n2", FAST + ["--join", n1.addr])
        wait_for(lambda: json.loads(n1.kvcli("--json", "status").stdout)
                 ["members_alive"] == 2, 20, "two members")
        assert kv(n1, "--consistency", "one", "put", "k", "v").returncode == 0
        pins = dict(line.split() for line in open(known).read().splitlines())
        members = json.loads(kv(n1, "--json", "members").stdout)
        keys = {m["address"]: m["node_key"] for m in members}
        assert pins == keys, (pins, keys)  # n2 pinned without a contact
        assert os.stat(known).st_mode & 0o777 == 0o600
        r = kv(n1, "--node-key", keys[n2.addr], "get", "k")
        assert r.returncode == 4 and b"not the node you named" in r.stderr, r
        assert kv(n1, "--node-key", keys[n1.addr], "--consistency", "one",
                  "get", "k").stdout == b"v"
        # n2 goes; something with the client secret answers at its address.
        assert n2.stop() == 0
        ready, done = threading.Event(), threading.Event()
        t = threading.Thread(target=_impostor, daemon=True,
                             args=(n2.port, read_key(c.client_key), ready,
                                   done))
        t.start()
        assert ready.wait(10)
        r = kv(n2, "get", "k")
        assert r.returncode == 4, r
        assert b"pins" in r.stderr and keys[n2.addr].encode() in r.stderr, r
        assert done.wait(10), "kvcli never reached the impostor"
    finally:
        c.close()


def test_kvcli_access_changes_every_node_within_5_s():
    """kvcli access add and remove change the list on the node asked and it
    spreads: every node takes a new client, then refuses it, within 5 s, and
    closes its open connection. A node restarted with the old file and no
    list of its own takes the newer one from the others."""
    c = Cluster()
    try:
        ops, opub = identity(c, "ops")
        newbie, npub = identity(c, "newbie")
        access = write_access(c, ["%s ops admin" % opub])
        opts = FAST + ["--access", access]
        n1 = c.node("n1", opts)
        nodes = [n1] + [c.node(x, opts + ["--join", n1.addr])
                        for x in ("n2", "n3")]
        wait_for(lambda: all(json.loads(as_(n, ops, "--json", "status").stdout)
                             ["members_alive"] == 3 for n in nodes), 20,
                 "three members")
        assert as_(n1, ops, "put", "k", "v").returncode == 0
        r = as_(n1, ops, "access", "add", npub, "newbie", "read")
        assert r.returncode == 0 and b"newbie read" in r.stdout, r
        t0 = time.time()
        wait_for(lambda: all(as_(n, newbie, "get", "k").returncode == 0
                             for n in nodes), 5, "newbie let in everywhere")
        took_add = time.time() - t0
        session = identity_session(nodes[2], newbie)
        assert session.request(MSG_GET, b"k", 2, 0)[6] == b"v"
        r = as_(nodes[1], ops, "access", "remove", "newbie")
        assert r.returncode == 0 and b"newbie" not in r.stdout, r
        t0 = time.time()
        wait_for(lambda: all(as_(n, newbie, "get", "k").returncode == 4
                             for n in nodes), 5, "newbie refused everywhere")
        took_remove = time.time() - t0
        assert closed_by_node(session.sock), \
            "newbie's connection on n3 stayed open"
        print("      added everywhere in %.1f s, removed in %.1f s" %
              (took_add, took_remove))
        r = as_(nodes[1], ops, "access", "remove", "nobody")
        assert r.returncode == 1, r
        # n3 again with the old file (newbie was never in it, but the list
        # has a newer version) and without the list it kept.
        version = json.loads(as_(n1, ops, "--json", "access", "list").stdout)[
            "version"]
        assert nodes[2].stop() == 0
        os.unlink(os.path.join(nodes[2].data, "access"))
        write_access(c, ["%s ops admin" % opub, "%s newbie read" % npub])
        os.utime(access, (1, 1))  # an old file
        nodes[2].start()
        wait_for(lambda: json.loads(as_(nodes[2], ops, "--json", "access",
                                        "list").stdout)["version"] == version,
                 10, "n3 to take the cluster's newer list")
        assert as_(nodes[2], newbie, "get", "k").returncode == 4
    finally:
        c.close()
