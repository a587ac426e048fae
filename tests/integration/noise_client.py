"""An independent client for kvnode built on Debian's python3-dissononce (a
separate Noise implementation) and python3-msgpack: it proves that essaim's
handshake, framing and messages follow the spec rather than just agreeing
with themselves."""

import socket
import struct

import msgpack
from dissononce.cipher.chachapoly import ChaChaPolyCipher
from dissononce.dh.x25519.x25519 import X25519DH
from dissononce.hash.blake2b import Blake2bHash
from dissononce.processing.handshakepatterns.interactive.XX import \
    XXHandshakePattern
from dissononce.processing.impl.cipherstate import CipherState
from dissononce.processing.impl.handshakestate import HandshakeState
from dissononce.processing.impl.symmetricstate import SymmetricState
from dissononce.processing.modifiers.psk import PSKPatternModifier

PROLOGUE_CLIENT = b"essaim/1 client"
MSG_PUT, MSG_GET, MSG_DEL, MSG_STATUS = 1, 2, 3, 4
MSG_RESULT, MSG_STATUS_RESULT, MSG_WELCOME = 16, 17, 18


def read_key(path):
    import base64
    return base64.b64decode(open(path).read().strip())


class Closed(Exception):
    pass


def new_handshake(initiator, prologue, psk, keypair=None):
    """A Noise_XXpsk3 handshake state (keypair: the static key; None, a
    fresh one)."""
    hs = HandshakeState(
        SymmetricState(CipherState(ChaChaPolyCipher()), Blake2bHash()),
        X25519DH())
    hs.initialize(PSKPatternModifier(3).modify(XXHandshakePattern()),
                  initiator, prologue,
                  s=keypair or X25519DH().generate_keypair(), psks=(psk,))
    return hs


class NoiseClient:
    def __init__(self, addr, psk, prologue=PROLOGUE_CLIENT, timeout=5,
                 keypair=None):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout)
        self.sock.settimeout(timeout)
        self.hs = new_handshake(True, prologue, psk, keypair)
        self.tx = self.rx = None
        self.next_id = 1

    # framing: 4-byte big-endian length, then the Noise message
    def send_frame(self, body):
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed()
            buf += chunk
        return buf

    def recv_frame(self):
        (n,) = struct.unpack(">I", self.recv_exact(4))
        return self.recv_exact(n)

    def handshake(self):
        """The three handshake messages, then the node's welcome."""
        self.open()
        return self.recv()  # the welcome

    def open(self):
        """The three handshake messages (a node's link gets no welcome)."""
        buf = bytearray()
        self.hs.write_message(b"", buf)                 # -> e
        self.send_frame(bytes(buf))
        payload = bytearray()
        self.hs.read_message(self.recv_frame(), payload)  # <- e, ee, s, es
        buf = bytearray()
        self.tx, self.rx = self.hs.write_message(b"", buf)  # -> s, se, psk
        self.send_frame(bytes(buf))

    # transport: plaintext = flag byte (0 last, 1 more) + chunk
    CHUNK = 65535 - 16 - 1  # Noise's message limit, less tag and flag

    def send(self, obj):
        data = msgpack.packb(obj, use_bin_type=True)
        for off in range(0, max(len(data), 1), self.CHUNK):
            part = data[off:off + self.CHUNK]
            flag = b"\x01" if off + self.CHUNK < len(data) else b"\x00"
            self.send_frame(self.tx.encrypt_with_ad(b"", flag + part))

    def recv(self):
        out = b""
        while True:
            pt = self.rx.decrypt_with_ad(b"", self.recv_frame())
            out += pt[1:]
            if pt[0] == 0:
                return msgpack.unpackb(out, raw=False)

    def request(self, mtype, *fields):
        rid = self.next_id
        self.next_id += 1
        self.send([1, mtype, rid, 0] + list(fields))
        ans = self.recv()
        assert ans[2] == rid, ans
        return ans

    def close(self):
        self.sock.close()
