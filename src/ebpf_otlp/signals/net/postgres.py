"""PostgreSQL queries (protocol 3) from what the kernel's message walk sends up of a
connection's calls (bpf/tcp_life.bpf.c, PROTO_PG): each call's length and, in stream order,
every message's 5-byte header and the first KEEP bytes of the messages it keeps. The
client's are all kept but CopyData and the password ones; the server's CommandComplete,
ErrorResponse, ReadyForQuery and EmptyQueryResponse only: rows are passed over. The
client's first message (the startup packet, which has no type byte) is kept whole.

Queries: a simple Query message, up to the ReadyForQuery that ends it; and in the extended
protocol each Execute, with the text of the statement its Bind named (Parse's, remembered
by name), up to its CommandComplete (or the error that ends the batch, up to Sync). A
server direction whose walk lost its place (a call of more messages than the walk takes)
resumes where the kernel says, at the client's next message: the queries it was answering
are counted as lost, never guessed at. A connection open before the capture is picked up
at the client's next request (a whole simple Query in one call, or a Parse)."""

from __future__ import annotations

from dataclasses import dataclass

from ebpf_otlp.signals.net.http1 import WALK_LOST, WALK_RESUMED, Call
from ebpf_otlp.signals.net.db import KEEP, Statement, StatementParser
from ebpf_otlp.signals.net.sql import statement
# The types whose bytes the kernel keeps (PG_CLIENT_KEPT, PG_SERVER_KEPT).
CLIENT_SKIPPED = {ord("d"), ord("p")}             # CopyData; Password, SASL responses
SERVER_KEPT = {ord("C"), ord("E"), ord("Z"), ord("I")}
BIND_KEEP = 64               # PG_BIND_KEEP: a Bind's names, not its values
MAX_MESSAGE = 1 << 30        # PG_MAX_MESSAGE
TYPES = {*range(ord("A"), ord("Z") + 1), *range(ord("a"), ord("z") + 1), ord("1"), ord("2"), ord("3")}
PROTOCOL_3 = 196608


@dataclass(slots=True)
class Query(Statement):
    """A Query message's statements, or one Execute's."""
    simple: bool = True          # a Query message; else an Execute
    batch: int = 0               # an Execute's: the Syncs the client had sent before it


@dataclass(slots=True)
class _Side:
    """One direction: the walk's bytes not yet a whole message, and whether it is lost."""
    data: bytearray
    started: bool = False        # the untyped first message is behind
    lost: bool = False


def _cstrings(data: bytes) -> list[str]:
    return [s.decode("utf-8", "replace") for s in data.split(b"\0")]


def _fields(body: bytes) -> dict[str, str]:
    """An ErrorResponse's fields by code: S severity, C SQLSTATE, M message, ..."""
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


class PgConnection(StatementParser):
    system = "postgresql"

    @staticmethod
    def describe(q: Statement) -> tuple[str, str, str]:
        """(operation, table, the text with its literals as ?), as PostgreSQL reads it."""
        return statement(q.text, "postgresql")

    """Both directions of one connection. `requests_dir`: the direction the client's
    messages travel (1: we are the server), from the startup packet's, or (`late`: the
    connection began before the capture) from the first request's: its database and
    user are then unknown."""

    def __init__(self, late: bool = False) -> None:
        super().__init__()
        self.late = late                     # open before the capture: no startup packet
        self.sides = (_Side(bytearray()), _Side(bytearray()))
        self.statements: dict[str, tuple[str, bool]] = {}   # name -> (text, truncated)
        self.portals: dict[str, tuple[str, bool, str]] = {}  # portal -> (text, truncated, statement)
        self.batch = 0                       # the client's Syncs so far
        self.failed_batch = -1               # an execute's error: the server skips to its Sync

    def feed(self, call: Call, flags: int = 0) -> None:
        side = self.sides[call.dir]
        if self.requests_dir is None:
            self.requests_dir = call.dir
            # adopted mid-stream, unless what it sends first is a startup packet after all
            side.started = self.late and call.head[4:8] != PROTOCOL_3.to_bytes(4, "big")
        client = call.dir == self.requests_dir
        if client and flags & WALK_RESUMED:
            self.resume_server()
        if side.lost:
            return
        side.data += call.head
        while not side.lost:
            message = self._next(side, client)
            if message is None:
                break
            kind, body, whole = message
            if client:
                self._client(kind, body, whole, call)
            else:
                self._server(kind, body, call)
        if flags & WALK_LOST and not side.lost:
            side.lost = True
            side.data.clear()
            if not client:
                self.lose_answers()

    def _next(self, side: _Side, client: bool) -> tuple[int, bytes, bool] | None:
        """The next whole message of the walk's bytes: (type, kept body, all of it kept)."""
        data = side.data
        if client and not side.started:
            if len(data) < 4:
                return None
            length = int.from_bytes(data[:4], "big")
            kept = min(length, KEEP)
            if len(data) < kept:
                return None
            side.started = True
            body = bytes(data[4:kept])
            del data[:kept]
            return 0, body, kept == length
        if len(data) < 5:
            return None
        kind, length = data[0], int.from_bytes(data[1:5], "big")
        if length < 4 or length > MAX_MESSAGE or kind not in TYPES:   # (the kernel stops there too)
            self.unparsed += 1
            side.lost = True
            if not client:
                self.lose_answers()
            return None
        size = length - 4
        kept_here = kind not in CLIENT_SKIPPED if client else kind in SERVER_KEPT
        kept = min(size, BIND_KEEP if kind == ord("B") else KEEP) if kept_here else 0
        if len(data) < 5 + kept:
            return None
        body = bytes(data[5:5 + kept])
        del data[:5 + kept]
        return kind, body, kept == size

    # -- the client's messages ---------------------------------------------------------
    def _client(self, kind: int, body: bytes, whole: bool, call: Call) -> None:
        if kind == 0:                                  # the startup packet
            if len(body) >= 4 and int.from_bytes(body[:4], "big") == PROTOCOL_3:
                words = _cstrings(body[4:])
                params = dict(zip(words[0::2], words[1::2]))
                self.user = params.get("user", "")
                self.database = params.get("database", "") or self.user
            return
        c = chr(kind)
        if c == "Q":
            text = body.rstrip(b"\0").decode("utf-8", "replace")
            self.sent.append(Query(text, call.ts_ns, call.tid, truncated=not whole))
        elif c == "P":                                  # Parse: name, query, parameter types
            name, _, rest = body.partition(b"\0")
            text, ended, _ = rest.partition(b"\0")
            self.statements[name.decode("utf-8", "replace")] = (
                text.decode("utf-8", "replace"), not ended and not whole)
        elif c == "B":                                  # Bind: portal, statement, ...
            portal, statement = (_cstrings(body) + ["", ""])[:2]
            text, truncated = self.statements.get(statement, ("", False))
            self.portals[portal] = (text, truncated, statement)
        elif c == "E":                                  # Execute: portal, row limit
            portal = _cstrings(body)[0] if body else ""
            text, truncated, statement = self.portals.get(portal, ("", False, ""))
            self.sent.append(Query(text, call.ts_ns, call.tid, truncated=truncated, prepared=statement,
                                   simple=False, batch=self.batch))
        elif c == "S":                                  # Sync
            self.batch += 1
        elif c == "C" and body[:1] == b"S":             # Close a statement
            self.statements.pop(_cstrings(body[1:])[0], None)

    # -- the server's ----------------------------------------------------------------
    def _server(self, kind: int, body: bytes, call: Call) -> None:
        c = chr(kind)
        q = self.sent[0] if self.sent else None
        if c in "CIs" and q is not None:   # CommandComplete, EmptyQueryResponse, PortalSuspended
            if c == "C":             # a command tag: "SELECT 3", "INSERT 0 1", "BEGIN"
                tag = body.rstrip(b"\0").decode("utf-8", "replace")
                last = tag.rsplit(" ", 1)[-1]
                q.rows = int(last) if " " in tag and last.isdigit() else None
            if not q.simple:               # a simple query's statements end at ReadyForQuery
                self._finish(call.ts_ns)
        elif c == "E" and q is not None:
            f = _fields(body)
            q.status, q.error = f.get("C", ""), f.get("M", "")
            if not q.simple:               # the rest of its batch is skipped, up to Sync
                self.failed_batch = q.batch
                self._finish(call.ts_ns)
        elif c == "Z":                     # ReadyForQuery: the query, or the batch, is over
            if q is not None and q.simple:
                self._finish(call.ts_ns)
            while self.sent and not self.sent[0].simple and self.sent[0].batch == self.failed_batch:
                self.sent.popleft()        # executes after the error: never run
            self.failed_batch = -1

    def _finish(self, ts_ns: int) -> None:
        q = self.sent.popleft()
        q.end_ns, q.ended_by = ts_ns, "framing"
        self.done.append(q)
