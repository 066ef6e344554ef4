"""HTTP/2's parser (signals/net/http2.py) fed what the kernel's frame walk would send up
(bpf/tcp_life.bpf.c, h2_walk, modelled below byte for byte): frames made with hpack's
encoder, cut into calls at every boundary the tests choose."""

import struct

import hpack
import pytest

from ebpf_otlp.signals.net.http1 import WALK_LOST, Call
from ebpf_otlp.signals.net.http2 import PREFACE, Http2Connection

KEPT = {1, 3, 5, 9}


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class KernelWalk:
    """The kernel's walk over one direction: the bytes it keeps of each call."""

    def __init__(self, preface: bool):
        self.copy, self.skip, self.header = (len(PREFACE) if preface else 0), 0, b""

    def kept(self, data: bytes) -> bytes:
        out, pos = b"", 0
        while pos < len(data):
            if self.skip:
                n = min(self.skip, len(data) - pos)
                self.skip -= n
            elif self.copy:
                n = min(self.copy, len(data) - pos)
                out += data[pos:pos + n]
                self.copy -= n
            else:
                n = min(9 - len(self.header), len(data) - pos)
                self.header += data[pos:pos + n]
                out += data[pos:pos + n]
                if len(self.header) == 9:
                    length, kind = int.from_bytes(self.header[:3], "big"), self.header[3]
                    self.header = b""
                    if kind in KEPT:
                        self.copy = length
                    else:
                        self.skip = length
            pos += n
        return out


class Wire:
    """A connection seen from the client (dir 0 sends requests) or the server (dir 1)."""

    def __init__(self, server: bool = False):
        self.conn = Http2Connection()
        self.request_dir = 1 if server else 0
        self.walks = {self.request_dir: KernelWalk(True), 1 - self.request_dir: KernelWalk(False)}
        self.encoders = {0: hpack.Encoder(), 1: hpack.Encoder()}
        self.ts = 1000

    def send(self, dir_: int, data: bytes, cut: int = 0) -> None:
        """`data` in calls of `cut` bytes (0: one call)."""
        cut = cut or len(data)
        for i in range(0, len(data), cut):
            piece = data[i:i + cut]
            self.ts += 10
            self.conn.feed(Call(self.ts, dir_, len(piece), self.walks[dir_].kept(piece)))

    def request(self, stream: int, headers, end: bool = True, **kw) -> None:
        block = self.encoders[self.request_dir].encode(headers)
        self.send(self.request_dir, frame(1, 0x4 | (0x1 if end else 0), stream, block), **kw)

    def response(self, stream: int, headers, end: bool = False, **kw) -> None:
        block = self.encoders[1 - self.request_dir].encode(headers)
        self.send(1 - self.request_dir, frame(1, 0x4 | (0x1 if end else 0), stream, block), **kw)


GET = [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "example.test"),
       ("user-agent", "curl/7.88.1")]


@pytest.mark.parametrize("cut", [0, 1, 5, 9, 10, 4096])
def test_a_request_and_response_cut_anywhere(cut):
    w = Wire()
    w.send(0, PREFACE + frame(4, 0, 0, b"\x00\x03\x00\x00\x00\x64"), cut=cut)
    w.send(1, frame(4, 0, 0) + frame(4, 1, 0), cut=cut)
    w.request(1, GET, cut=cut)
    w.response(1, [(":status", "200"), ("content-type", "text/html")], cut=cut)
    body = b"x" * 40000
    w.send(1, frame(0, 0, 1, body[:16384]) + frame(0, 0, 1, body[16384:32768]) +
           frame(0, 1, 1, body[32768:]), cut=cut)
    last = w.ts
    (s,) = w.conn.take()
    assert (s.method, s.target, s.status, s.version) == ("GET", "/index.html", 200, "2")
    assert s.request.headers[":authority"] == "example.test"
    assert s.request.headers["user-agent"] == "curl/7.88.1"
    assert s.response.body_bytes == 40000
    assert s.response.end_ns == last          # the call that carried the last DATA byte
    assert s.ended_by == "framing" and w.conn.requests_dir == 0


def test_the_server_side_and_hpack_state_across_requests():
    """The second request's headers come from the dynamic table the first one filled."""
    w = Wire(server=True)
    w.send(1, PREFACE + frame(4, 0, 0))
    for stream, path in ((1, "/a"), (3, "/b"), (5, "/a")):
        w.request(stream, [(":method", "GET"), (":scheme", "http"), (":path", path),
                           (":authority", "svc:8080"), ("traceparent", f"00-{'ab' * 16}-{'cd' * 8}-01")])
        w.response(stream, [(":status", "404" if path == "/b" else "200")], end=True)
    got = w.conn.take()
    assert [(s.target, s.status) for s in got] == [("/a", 200), ("/b", 404), ("/a", 200)]
    assert all(s.request.headers["traceparent"].startswith("00-abab") for s in got)
    assert w.conn.requests_dir == 1


def test_grpc_status_from_the_trailers_and_streams_interleaved():
    w = Wire()
    w.send(0, PREFACE)
    grpc = [(":method", "POST"), (":scheme", "http"), (":path", "/demo.Greeter/SayHello"),
            (":authority", "127.0.0.1:50051"), ("content-type", "application/grpc"), ("te", "trailers")]
    w.request(1, grpc, end=False)
    w.request(3, grpc, end=False)
    w.send(0, frame(0, 1, 1, b"\x00\x00\x00\x00\x05hello") + frame(0, 1, 3, b"\x00\x00\x00\x00\x02hi"))
    w.response(3, [(":status", "200"), ("content-type", "application/grpc")])
    w.response(1, [(":status", "200"), ("content-type", "application/grpc")])
    w.send(1, frame(0, 0, 3, b"\x00\x00\x00\x00\x02hi"))
    w.response(3, [("grpc-status", "0")], end=True)
    w.response(1, [("grpc-status", "5"), ("grpc-message", "no such greeting")], end=True)
    a, b = w.conn.take()
    assert (a.id, a.grpc_status, a.is_grpc, a.response.body_bytes) == (3, 0, True, 7)
    assert (b.id, b.grpc_status, b.request.body_bytes) == (1, 5, 10)
    assert b.response.headers["grpc-message"] == "no such greeting"


def test_continuation_padding_and_priority():
    w = Wire()
    w.send(0, PREFACE)
    block = w.encoders[0].encode(GET + [("x-long", "v" * 3000)])
    padded = bytes([4]) + bytes(5) + block[:1000] + bytes(4)      # PADDED, PRIORITY
    w.send(0, frame(1, 0x8 | 0x20 | 0x1, 1, padded) + frame(9, 0, 1, block[1000:2000]) +
           frame(9, 0x4, 1, block[2000:]), cut=700)
    w.response(1, [(":status", "204")], end=True)
    (s,) = w.conn.take()
    assert (s.method, s.target, s.status) == ("GET", "/index.html", 204)


def test_a_reset_stream_ends_the_request():
    w = Wire()
    w.send(0, PREFACE)
    w.request(1, GET)
    w.send(1, frame(3, 0, 1, struct.pack(">I", 8)))     # CANCEL
    (s,) = w.conn.take()
    assert (s.ended_by, s.reset_code, s.status) == ("reset", 8, None)


def test_a_lost_direction_counts_its_streams_and_guesses_nothing():
    w = Wire()
    w.send(0, PREFACE)
    w.request(1, GET)
    w.request(3, GET)
    w.ts += 10
    w.conn.feed(Call(w.ts, 1, 5000, b"", b""), WALK_LOST)   # the kernel lost its place
    w.response(1, [(":status", "200")], end=True)
    assert w.conn.take() == [] and w.conn.lost == 2
    w.conn.close("close")
    assert w.conn.take() == []


def test_an_hpack_block_that_does_not_decode_stops_the_direction():
    w = Wire()
    w.send(0, PREFACE)
    w.send(0, frame(1, 0x5, 1, b"\xff\xff\xff\xff\xff"))   # an index past any table
    assert w.conn.sides[0].lost and w.conn.take() == []


def test_a_request_without_response_is_reported_at_close():
    w = Wire()
    w.send(0, PREFACE)
    w.request(1, GET)
    assert w.conn.take() == []
    w.conn.close("close")
    (s,) = w.conn.take()
    assert (s.status, s.ended_by) == (None, "close")


def test_a_block_seen_again_decodes_by_the_table_it_meets():
    """Blocks that left the table alone are remembered; after the table changes, the same
    bytes are decoded afresh (62 is the newest entry: first /a, then /b)."""
    conn = Http2Connection()
    side = conn.sides[0]
    enc = hpack.Encoder()
    add_a, indexed = enc.encode([(":path", "/a")]), bytes([0xBE])
    assert enc.encode([(":path", "/a")]) == indexed
    add_b = enc.encode([(":path", "/b")])
    assert conn._decode(side, add_a) == ((":path", "/a"),)
    assert conn._decode(side, indexed) == ((":path", "/a"),)
    assert conn._decode(side, indexed) == ((":path", "/a"),) and len(side.decoded) == 1   # remembered
    assert conn._decode(side, add_b) == ((":path", "/b"),)
    assert conn._decode(side, indexed) == ((":path", "/b"),)                              # decoded afresh
