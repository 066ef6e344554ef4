"""HTTP/2 requests (gRPC calls among them) from what the kernel's frame walk sends up of a
connection's calls (bpf/tcp_life.bpf.c, h2_walk): each call's length and, in stream order,
the bytes the walk kept: the client's preface, every frame header, and the payloads of the
frames that carry header blocks (HEADERS, PUSH_PROMISE, CONTINUATION) and of RST_STREAM.
The other payloads (DATA above all) are passed over: only their lengths are known.

Each direction is walked again here, byte for byte as the kernel did, so the raw positions
where frames end (a stream's last DATA byte) fall in the right call. Header blocks go through
one HPACK decoder per direction, in order, as the peer's decoder saw them: a block missed
(the kernel's walk lost its place) leaves the decoder out of step, so that direction stops
there and its streams are counted as lost rather than guessed at. Streams are paired by id;
a request ends with its response's END_STREAM or a RST_STREAM from either side."""

from __future__ import annotations

from dataclasses import dataclass, field

import hpack

from ebpf_otlp.signals.net.http1 import WALK_LOST, Call

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
KEPT = {1, 3, 5, 9}          # the frame types whose payloads the kernel sends (H2_KEPT)
DATA, HEADERS, RST_STREAM, PUSH_PROMISE, CONTINUATION = 0, 1, 3, 5, 9
END_STREAM, END_HEADERS, PADDED, PRIORITY = 0x1, 0x4, 0x8, 0x20
# The headers read: what the records and spans carry.
READ = {b":method", b":path", b":scheme", b":authority", b":status", b"user-agent", b"traceparent",
        b"content-type", b"grpc-status", b"grpc-message", b"host"}


@dataclass(slots=True)
class Half:
    """One side of a stream: its headers (and trailers), first and last byte times, body."""
    headers: dict[str, str]
    start_ns: int
    end_ns: int = 0
    body_bytes: int = 0
    tid: int = 0                 # the thread that sent or received its headers


@dataclass(slots=True)
class Stream:
    """One request and its response on a stream id: the shape of http1.Exchange."""
    id: int
    request: Half
    response: Half | None = None
    ended_by: str = ""           # "framing" (END_STREAM), "reset", "close", "capture end"
    reset_code: int | None = None

    @property
    def method(self) -> str:
        return self.request.headers.get(":method", "")

    @property
    def target(self) -> str:
        return self.request.headers.get(":path", "")

    @property
    def version(self) -> str:
        return "2"

    @property
    def status(self) -> int | None:
        value = self.response.headers.get(":status", "") if self.response else ""
        return int(value) if value.isdigit() else None

    @property
    def grpc_status(self) -> int | None:
        """From the trailers (or a Trailers-Only response's headers)."""
        value = self.response.headers.get("grpc-status", "") if self.response else ""
        return int(value) if value.isdigit() else None

    @property
    def is_grpc(self) -> bool:
        return self.request.headers.get("content-type", "").startswith("application/grpc")


@dataclass(slots=True)
class _Side:
    """One direction of the connection: the walk's place in it, and its HPACK decoder."""
    decoder: hpack.Decoder = field(default_factory=hpack.Decoder)
    started: bool = False        # past its first bytes (the preface, if they were that)
    preface: int = 0             # bytes of the client's preface still to come
    header: bytearray = field(default_factory=bytearray)   # a frame header being read
    copy: int = 0                # payload bytes of the current frame still to come (kept)
    skip: int = 0                # payload bytes still to pass over (elided)
    frame: tuple[int, int, int, int] = (0, 0, 0, 0)   # type, flags, stream, length
    payload: bytearray = field(default_factory=bytearray)
    block: bytearray = field(default_factory=bytearray)   # a header block across CONTINUATIONs
    block_frame: tuple[int, int, int] = (0, 0, 0)          # the HEADERS frame's type, flags, stream
    lost: bool = False
    # Blocks that left the decoder's table as it was, by (generation of the table, bytes):
    # a connection's later requests are mostly indexed fields, the same bytes each time,
    # and hpack takes ~30 µs a block (most of a gRPC call's cost here).
    decoded: dict[tuple[int, bytes], tuple[tuple[str, str], ...]] = field(default_factory=dict)
    generation: int = 0


class Http2Connection:
    """Both directions of one connection. `requests_dir`: the direction requests travel (the
    one that began with the preface, or that carried a request's headers)."""

    def __init__(self) -> None:
        self.requests_dir: int | None = None
        self.sides = (_Side(), _Side())
        self.streams: dict[int, Stream] = {}
        self.done: list[Stream] = []
        self.lost = 0            # streams left unreported: a direction's walk or HPACK went out of step
        for side in self.sides:
            side.decoder.max_allowed_table_size = 1 << 24   # the encoder's size updates say the size

    def feed(self, call: Call, flags: int = 0) -> None:
        """WALK_LOST in `flags`: the kernel's walk lost its place in this call (its bytes are
        not whole)."""
        side = self.sides[call.dir]
        if side.lost:
            return
        if flags & WALK_LOST:
            self._lose(side)
            return
        kept, pos, raw = call.head, 0, call.length
        if not side.started:
            side.started = True
            if kept and kept[:len(PREFACE)] == PREFACE[:len(kept)]:
                self.requests_dir = call.dir
                side.preface = len(PREFACE)
        while raw > 0:
            taken, pos = self._advance(side, call, kept, pos, raw)
            raw -= taken
            if side.lost:
                return

    def _advance(self, side: _Side, call: Call, kept: bytes, pos: int, raw: int) -> tuple[int, int]:
        """One step of the walk over `raw` bytes left in the call; (bytes taken, kept pos)."""
        if side.skip:
            n = min(side.skip, raw)
            side.skip -= n
            if side.skip == 0:
                self._frame_done(side, call)
            return n, pos
        n = min(side.preface or side.copy or 9 - len(side.header), raw)
        if pos + n > len(kept):
            self._lose(side)     # the kernel kept less than it walked
            return n, pos + n
        if side.preface:         # kept bytes, no frame
            side.preface -= n
            return n, pos + n
        if side.copy:
            side.payload += kept[pos:pos + n]
            side.copy -= n
            if side.copy == 0:
                self._frame_done(side, call)
            return n, pos + n
        side.header += kept[pos:pos + n]
        if len(side.header) == 9:
            h = side.header
            length, kind, flags = h[0] << 16 | h[1] << 8 | h[2], h[3], h[4]
            stream = int.from_bytes(h[5:9], "big") & 0x7FFFFFFF
            side.header = bytearray()
            side.frame = (kind, flags, stream, length)
            side.payload = bytearray()
            if kind in KEPT:
                side.copy = length
            else:
                side.skip = length
            if length == 0:
                self._frame_done(side, call)
        return n, pos + n

    def _frame_done(self, side: _Side, call: Call) -> None:
        """A whole frame has gone by (its payload, if kept, in side.payload)."""
        kind, flags, stream, length = side.frame
        side.frame = (-1, 0, 0, 0)
        if kind == DATA:
            self._data(call, stream, length, flags)
        elif kind in (HEADERS, PUSH_PROMISE):
            block = bytes(side.payload)
            if flags & PADDED and block:
                pad = block[0]
                block = block[1:len(block) - pad] if pad < len(block) else b""
            if kind == HEADERS and flags & PRIORITY:
                block = block[5:]
            if kind == PUSH_PROMISE:
                block = block[4:]
            side.block = bytearray(block)
            side.block_frame = (kind, flags, stream)
            if flags & END_HEADERS:
                self._block(side, call)
        elif kind == CONTINUATION:
            side.block += side.payload
            if flags & END_HEADERS:
                self._block(side, call)
        elif kind == RST_STREAM:
            s = self.streams.pop(stream, None)
            if s is not None:
                s.reset_code = int.from_bytes(side.payload[:4], "big")
                self._finish(s, call.ts_ns, "reset")

    def _block(self, side: _Side, call: Call) -> None:
        """A whole header block: decoded (always: the decoder's table must see every block)."""
        kind, flags, stream = side.block_frame
        fields = self._decode(side, bytes(side.block))
        side.block = bytearray()
        if fields is None or kind == PUSH_PROMISE:
            return
        headers = dict(fields)
        s = self.streams.get(stream)
        if ":method" in headers:
            if self.requests_dir is None:
                self.requests_dir = call.dir
            s = self.streams[stream] = Stream(stream, Half(headers, call.ts_ns, call.ts_ns, 0, call.tid))
            if flags & END_STREAM:
                s.request.end_ns = call.ts_ns
        elif s is not None:
            if s.response is None:
                if headers.get(":status", "").startswith("1"):
                    return       # informational: the final response follows
                s.response = Half(headers, call.ts_ns, call.ts_ns, 0, call.tid)
            else:
                s.response.headers.update(headers)   # trailers
            if flags & END_STREAM:
                self._finish(self.streams.pop(stream), call.ts_ns, "framing")

    def _decode(self, side: _Side, block: bytes) -> tuple[tuple[str, str], ...] | None:
        """The headers read (READ) of a block; None when it does not decode."""
        key = (side.generation, block)
        fields = side.decoded.get(key)
        if fields is not None:
            return fields
        table = side.decoder.header_table
        # A block changes the table by adding an entry (a new first one) or resizing it.
        before = (len(table.dynamic_entries), id(table.dynamic_entries[0]) if table.dynamic_entries else 0,
                  table.maxsize)
        try:
            decoded = side.decoder.decode(block, raw=True)
        except hpack.HPACKError:
            self._lose(side)
            return None
        fields = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in decoded if name in READ)
        if (len(table.dynamic_entries), id(table.dynamic_entries[0]) if table.dynamic_entries else 0,
                table.maxsize) != before:
            side.generation += 1     # what was decoded before may now decode otherwise
        else:
            if len(side.decoded) >= 256:
                side.decoded.clear()
            side.decoded[key] = fields
        return fields

    def _data(self, call: Call, stream: int, length: int, flags: int) -> None:
        s = self.streams.get(stream)
        if s is None:
            return
        half = s.request if call.dir == self.requests_dir else s.response
        if half is None:
            return
        half.body_bytes += length
        half.end_ns = call.ts_ns
        if flags & END_STREAM and half is s.response:
            self._finish(self.streams.pop(stream), call.ts_ns, "framing")

    def _finish(self, s: Stream, ts_ns: int, how: str) -> None:
        if s.response is not None:
            s.response.end_ns = ts_ns
        else:
            s.request.end_ns = max(s.request.end_ns, ts_ns)
        s.ended_by = how
        self.done.append(s)

    def _lose(self, side: _Side) -> None:
        """This direction is out of step for good: its streams cannot be told whole."""
        side.lost = True
        self.lost += len(self.streams)
        self.streams.clear()

    def close(self, how: str) -> None:
        """The connection ended (or the capture did): streams without a response are
        reported without one."""
        for s in self.streams.values():
            s.ended_by = how
            self.done.append(s)
        self.streams.clear()

    def take(self) -> list[Stream]:
        done, self.done = self.done, []
        return done
