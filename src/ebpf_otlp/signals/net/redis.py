"""Redis commands (RESP2 and RESP3) from what the kernel sends up of a connection's calls
(bpf/tcp_life.bpf.c, PROTO_REDIS): each call's length and its first HEAD bytes, framed here.

Each direction is a stream of RESP values: a line ("*3", "$5", "+OK", "-ERR ...", ":1",
and RESP3's "%", "~", ">", "_", ",", "#", "(", "!", "=", "|") and, for bulk strings, that many
bytes and a CRLF, counted across calls and never needed whole: only their first bytes (a
command's name and key) are read. A command is one top-level array from the client; its
reply is the server's next top-level value (a RESP3 push, ">", answers nothing), so
pipelined commands pair with their replies in order. A line the kernel did not copy (past
a call's first HEAD bytes) leaves that direction out of step: its commands are counted as
lost, and the server's side begins again when the client begins a command at a call's
start with nothing outstanding to be answered after the ones lost."""

from __future__ import annotations

from dataclasses import dataclass

from ebpf_otlp.signals.net.http1 import WALK_LOST, Call
from ebpf_otlp.signals.net.db import Statement, StatementParser

HEAD = 4096                  # REDIS_HEAD
AGGREGATES = {ord("*"): 1, ord("~"): 1, ord(">"): 1, ord("%"): 2, ord("|"): 2}   # elements per count
BLOBS = {ord("$"), ord("!"), ord("=")}
SIMPLE = {ord(c) for c in "+-:_,#("}
ERRORS = {ord("-"), ord("!")}
# Commands whose first argument is not a key (the rest have their key kept in the text).
NO_KEY = {"PING", "ECHO", "SELECT", "AUTH", "HELLO", "CLIENT", "CONFIG", "INFO", "MULTI", "EXEC",
          "DISCARD", "FLUSHDB", "FLUSHALL", "DBSIZE", "SCRIPT", "EVAL", "EVALSHA", "PUBLISH",
          "SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "QUIT", "COMMAND", "SCAN", "KEYS", "TIME"}


@dataclass(slots=True)
class Command(Statement):
    name: str = ""
    database: str = "0"          # SELECT's, as it was when the command was sent


class _Stream:
    """One direction's RESP framing, carried from call to call."""

    def __init__(self) -> None:
        self.line = bytearray()  # a line split between two calls
        self.skip = 0            # a bulk string's bytes (and CRLF) still to pass over
        self.stack: list[int] = []   # elements still to come in each open aggregate
        self.words: list[bytes] = []  # a command's first two bulk strings (name, key)
        self.capture = False     # the bulk string being passed over is one of them
        self.kind = 0            # the top-level value's first type byte
        self.text = b""          # a simple string or error's text
        self.lost = False

    def at_boundary(self) -> bool:
        return not (self.line or self.skip or self.stack)


class RedisConnection(StatementParser):
    """Both directions of one connection; `requests_dir` is the client's."""

    system = "redis"

    @staticmethod
    def describe(q: Command) -> tuple[str, str, str]:
        """(operation, table, text): the command's name, none, its name and key (its values
        were never read)."""
        return q.name, "", q.text

    def __init__(self) -> None:
        super().__init__()
        self.streams = (_Stream(), _Stream())
        self.database = "0"

    def feed(self, call: Call, flags: int = 0) -> None:
        if self.requests_dir is None:
            self.requests_dir = call.dir     # the client speaks first
        client = call.dir == self.requests_dir
        s = self.streams[call.dir]
        if flags & WALK_LOST and not s.lost:   # a call before this one was dropped (ring full)
            self._lose(s, client)
        if s.lost:
            return                           # (the client's side: its commands are unknown now)
        if client and s.at_boundary() and self.streams[1 - call.dir].lost:
            server = _Stream()               # its answers to the commands lost are over
            self.streams = (s, server) if call.dir == 0 else (server, s)
        self._walk(s, call, client)

    def _walk(self, s: _Stream, call: Call, client: bool) -> None:
        seen, n, i = call.head, call.length, 0
        while i < n and not s.lost:
            if s.skip:
                take = min(s.skip, n - i)
                if s.capture:
                    s.words[-1] += seen[i:min(i + take, len(seen))]
                i += take
                s.skip -= take
                if not s.skip:
                    if s.capture:
                        s.words[-1] = s.words[-1][:-2]   # its CRLF
                        s.capture = False
                    self._done_one(s, call, client)
                continue
            if i >= len(seen):
                self._lose(s, client)
                break
            end = seen.find(b"\n", i)
            if end < 0:
                if len(seen) < n:        # the line goes on past the bytes copied
                    self._lose(s, client)
                    break
                s.line += seen[i:]
                break
            line = bytes(s.line) + seen[i:end + 1]
            s.line.clear()
            i = end + 1
            self._line(s, line, call, client)

    def _line(self, s: _Stream, line: bytes, call: Call, client: bool) -> None:
        kind, rest = line[0], line[1:].rstrip(b"\r\n")
        if not s.stack:
            s.kind, s.text, s.words = kind, b"", []
        if kind in AGGREGATES or kind in BLOBS:
            try:
                count = int(rest)
            except ValueError:
                self.unparsed += 1
                self._lose(s, client)
                return
            if kind in AGGREGATES and count > 0:
                s.stack.append(count * AGGREGATES[kind] + (1 if kind == ord("|") else 0))
                return
            if kind in BLOBS and count >= 0:
                s.skip = count + 2
                s.capture = client and len(s.stack) == 1 and len(s.words) < 2
                if s.capture:
                    s.words.append(b"")
                return
        elif kind in SIMPLE:
            if not s.stack:
                s.text = rest
        else:
            self.unparsed += 1
            self._lose(s, client)
            return
        self._done_one(s, call, client)

    def _done_one(self, s: _Stream, call: Call, client: bool) -> None:
        """An element is complete: close the aggregates it completes; at the top, a value."""
        while s.stack:
            s.stack[-1] -= 1
            if s.stack[-1] > 0:
                return
            s.stack.pop()
        if client:
            self._command(s, call)
        elif s.kind != ord(">"):
            self._reply(s, call)

    def _command(self, s: _Stream, call: Call) -> None:
        words = [w.decode("utf-8", "replace") for w in s.words]
        name = words[0].upper() if words else ""
        text = name if len(words) < 2 or name in NO_KEY else f"{name} {words[1]}"
        q = Command(text, call.ts_ns, call.tid, name=name, database=self.database)
        if name == "SELECT" and len(words) > 1:
            q.database = words[1]        # takes effect with its OK
        self.sent.append(q)

    def _reply(self, s: _Stream, call: Call) -> None:
        if not self.sent:
            return                       # a reply to nothing seen (pub/sub messages, RESP2)
        q = self.sent.popleft()
        if s.kind in ERRORS:
            text = s.text.decode("utf-8", "replace")
            q.status, q.error = text.split(" ", 1)[0], text
        elif q.name == "SELECT":
            self.database = q.database
        q.end_ns, q.ended_by = call.ts_ns, "framing"
        self.done.append(q)

    def _lose(self, s: _Stream, client: bool) -> None:
        """Out of step: the commands waiting for answers are lost (the client's side lost
        too: the answers could not be paired any more)."""
        s.lost = True
        self.lose_answers()
        if client:
            self.streams[1 - self.requests_dir].lost = True
