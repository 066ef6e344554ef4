"""HTTP/1.x requests from what the kernel sends up of a connection's calls (bpf/tcp_life.bpf.c,
REQUESTS): each send or receive's length, its first bytes and its last few. Per connection,
in order: messages are framed by Content-Length, a chunked body's last chunk, or (a
response) no body at all (HEAD, 1xx, 204, 304) or the close; requests and responses are
paired first in, first out, so keep-alive and pipelining work. A request whose response
does not come is reported at the connection's close, or at the capture's end."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

METHODS = {"GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"}
# The headers read: framing, and what the records and spans carry.
HEADERS = {b"content-length", b"transfer-encoding", b"host", b"user-agent", b"traceparent"}
LAST_CHUNK = b"0\r\n\r\n"


# struct payload's `walk` flags (the kernel's message walks: HTTP/2, PostgreSQL): the walk
# lost its place in this call; the other direction's walk began again before this call.
WALK_LOST, WALK_RESUMED = 1, 2


@dataclass(slots=True)
class Call:
    """One send (dir 0) or receive (dir 1): its time, length, first bytes and last bytes,
    and the thread that made it."""
    ts_ns: int
    dir: int
    length: int
    head: bytes
    tail: bytes = b""
    tid: int = 0


@dataclass(slots=True)
class Message:
    """A request or a response, from its first call to the call that ends it."""
    start_line: str
    headers: dict[str, str]      # the ones read (HEADERS), by lower-case name
    start_ns: int
    end_ns: int = 0
    body_bytes: int = 0
    truncated: bool = False      # its headers went past the bytes copied
    is_request: bool = True
    tid: int = 0                 # the thread that sent or received its first bytes


@dataclass(slots=True)
class Exchange:
    """A request and its response (None: none came)."""
    request: Message
    response: Message | None
    ended_by: str                # "framing", "close", "next request", "capture end"

    @property
    def method(self) -> str:
        return self.request.start_line.split(" ", 1)[0]

    @property
    def target(self) -> str:
        parts = self.request.start_line.split(" ")
        return parts[1] if len(parts) > 1 else ""

    @property
    def version(self) -> str:
        last = self.request.start_line.rsplit(" ", 1)[-1]
        return last[5:] if last.startswith("HTTP/") else ""

    @property
    def status(self) -> int | None:
        if self.response is None:
            return None
        parts = self.response.start_line.split(" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def parse_head(data: bytes) -> tuple[str, dict[str, str], int] | None:
    """The start line and headers at the start of `data`, and the bytes they take (-1 when
    the header block goes past `data`); None when it does not start like HTTP/1.x."""
    end = data.find(b"\r\n\r\n")
    lines = (data if end < 0 else data[:end]).split(b"\r\n")
    start = lines[0].decode("latin-1")
    word = start.split(" ", 1)[0]
    if word not in METHODS and not (word.startswith("HTTP/1.") and " " in start):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:] if end >= 0 else lines[1:-1]:   # the last line may be cut
        name, sep, value = line.partition(b":")
        name = name.strip().lower()
        if sep and name in HEADERS:
            headers[name.decode()] = value.strip().decode("latin-1")
    return start, headers, (end + 4 if end >= 0 else -1)


class _Direction:
    """One direction's framing: where the current message's body ends."""

    def __init__(self) -> None:
        self.message: Message | None = None
        self.left = 0            # Content-Length bytes still to come
        self.mode = ""           # "", "length", "chunked", "close" (until the connection ends), "unknown"


class Http1Connection:
    """Both directions of one connection. `requests_dir`: the direction requests travel
    (1, received: we are the server), learnt from the first message."""

    def __init__(self) -> None:
        self.requests_dir: int | None = None
        self.dirs = (_Direction(), _Direction())
        self.waiting: deque[Message] = deque()     # requests without a response yet
        self.responding: Message | None = None     # the request whose response is under way
        self.done: list[Exchange] = []
        self.unparsed = 0        # calls at a message start whose bytes were not HTTP

    def feed(self, call: Call, flags: int = 0) -> None:
        """`flags`: the message walks' only (WALK_*); HTTP/1.x calls are whole."""
        d = self.dirs[call.dir]
        pos = 0
        while pos < call.length:
            if d.mode == "length":
                take = min(d.left, call.length - pos)
                d.left -= take
                d.message.body_bytes += take
                pos += take
                if d.left == 0:
                    self._end(call.dir, call.ts_ns, "framing")
                continue
            if d.mode in ("chunked", "close", "unknown"):
                if d.mode == "unknown" and pos == 0 and parse_head(call.head[:64]) is not None:
                    self._end(call.dir, d.message.end_ns, "next request")   # a new message begins
                    continue
                d.message.body_bytes += call.length - pos
                d.message.end_ns = call.ts_ns
                pos = call.length
                if d.mode == "chunked" and self._ends_chunked(call):
                    self._end(call.dir, call.ts_ns, "framing")
                continue
            pos = self._start(call, pos)

    def _start(self, call: Call, pos: int) -> int:
        """A message begins at `pos` of the call; returns where its headers end."""
        head = call.head[pos:] if pos < len(call.head) else b""
        parsed = parse_head(head) if head else None
        if parsed is None:
            self.unparsed += 1
            return call.length   # out of step: the rest of this call is skipped
        start, headers, size = parsed
        msg = Message(start, headers, call.ts_ns, call.ts_ns, 0, size < 0, not start.startswith("HTTP/"),
                      call.tid)
        d = self.dirs[call.dir]
        d.message = msg
        if self.requests_dir is None:
            self.requests_dir = call.dir if msg.is_request else 1 - call.dir
        if msg.is_request:
            self.waiting.append(msg)
            d.mode, d.left = self._request_framing(headers)
        else:
            self.responding = self.waiting.popleft() if self.waiting else None
            d.mode, d.left = self._response_framing(msg, headers)
        if size < 0:
            d.mode = "unknown" if d.mode != "close" else "close"
            return call.length
        if d.mode == "":
            self._end(call.dir, call.ts_ns, "framing")
        return pos + size

    @staticmethod
    def _request_framing(headers: dict) -> tuple[str, int]:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return "chunked", 0
        n = _length(headers)
        return ("length", n) if n else ("", 0)

    def _response_framing(self, msg: Message, headers: dict) -> tuple[str, int]:
        status = msg.start_line.split(" ")[1] if " " in msg.start_line else ""
        request = self.responding
        if (request is not None and request.start_line.startswith("HEAD ")) or \
                status.startswith("1") or status in ("204", "304"):
            return "", 0
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return "chunked", 0
        n = _length(headers)
        if n is not None:
            return ("length", n) if n else ("", 0)
        return "close", 0

    @staticmethod
    def _ends_chunked(call: Call) -> bool:
        if call.tail:
            return call.tail.endswith(LAST_CHUNK)
        return len(call.head) == call.length and call.head.endswith(LAST_CHUNK)

    def _end(self, dir_: int, ts_ns: int, how: str) -> None:
        d = self.dirs[dir_]
        msg, d.message, d.mode, d.left = d.message, None, "", 0
        if msg is None:
            return
        msg.end_ns = ts_ns
        if msg.is_request:
            return               # its exchange ends with the response
        if self.responding is not None:
            self.done.append(Exchange(self.responding, msg, how))
            self.responding = None

    def close(self, how: str) -> None:
        """The connection ended (or the capture did): a response until the close ends
        here; requests without one are reported without one."""
        for dir_ in (0, 1):
            d = self.dirs[dir_]
            if d.message is not None and not d.message.is_request:
                self._end(dir_, d.message.end_ns, "close" if d.mode == "close" else how)
        while self.waiting:
            self.done.append(Exchange(self.waiting.popleft(), None, how))

    def take(self) -> list[Exchange]:
        done, self.done = self.done, []
        return done


def _length(headers: dict) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None
