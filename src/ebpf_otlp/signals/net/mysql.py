"""MySQL and MariaDB statements (the client/server protocol) from what the kernel's packet
walk sends up of a connection's calls (bpf/tcp_life.bpf.c, PROTO_MYSQL): each call's length
and, in stream order, every packet's 4-byte header (length, sequence number) and the bytes
of it kept. The client's commands (sequence 0) and its handshake response (1) are kept up
to KEEP bytes, never a later authentication packet; of the server's, the first byte, and
when that is an OK, ERR, EOF or LOCAL INFILE header (or the greeting's protocol version)
up to SERVER_KEEP: rows are passed over.

Statements: COM_QUERY, and COM_STMT_EXECUTE with the text its COM_STMT_PREPARE had (the
statement id from the prepare's answer). Each ends with its answer: an OK, an ERR (its
error number, SQL state and message), or a result set (a column count, the columns, the
rows, the EOF or OK that ends them; another result after it when the server says more
exist). The schema comes from the handshake response, and from COM_INIT_DB. A server
direction whose walk lost its place resumes at the client's next command, as PostgreSQL's
does (postgres.py): the statements it was answering are counted as lost."""

from __future__ import annotations

from dataclasses import dataclass

from ebpf_otlp.signals.net.http1 import WALK_LOST, WALK_RESUMED, Call
from ebpf_otlp.signals.net.db import KEEP, Statement, StatementParser
from ebpf_otlp.signals.net.sql import statement

SERVER_KEEP = 24             # MYSQL_SERVER_KEEP
HEADED = {0x00, 0xFF, 0xFE, 0xFB}
COM_QUIT, COM_INIT_DB, COM_QUERY = 0x01, 0x02, 0x03
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE = 0x16, 0x17, 0x18, 0x19
NO_ANSWER = {COM_QUIT, COM_STMT_SEND_LONG_DATA, COM_STMT_CLOSE}
CLIENT_CONNECT_WITH_DB, CLIENT_SECURE_CONNECTION, CLIENT_SSL = 0x8, 0x8000, 0x800
CLIENT_PLUGIN_AUTH_LENENC, CLIENT_QUERY_ATTRIBUTES = 0x200000, 1 << 27
SERVER_MORE_RESULTS_EXISTS = 0x0008


def lenenc(data: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer at `pos`: (value, where it ends)."""
    first = data[pos] if pos < len(data) else 0
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first, 0)
    return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


@dataclass(slots=True)
class Command(Statement):
    """A command sent, waiting for its answer."""
    command: int = COM_QUERY
    schema: str = ""             # COM_INIT_DB's


@dataclass(slots=True)
class _Side:
    data: bytearray
    lost: bool = False


class _Answer:
    """Where the server is in answering the command at the front."""

    def __init__(self) -> None:
        self.state = "first"     # first, columns, params, after_columns, rows
        self.left = 0            # column (or parameter) definitions still to come
        self.columns = 0         # a prepare's: its columns' definitions follow its parameters'
        self.rows = 0


class MySqlConnection(StatementParser):

    @staticmethod
    def describe(q: Statement) -> tuple[str, str, str]:
        """(operation, table, the text with its literals as ?), as MySQL reads it."""
        return statement(q.text, "mysql")

    """Both directions of one connection. `requests_dir`: the direction the client's
    packets travel (1: we are the server), from the greeting (which travels the other
    way), or (`late`: the connection began before the capture) from the first query's."""

    def __init__(self, late: bool = False) -> None:
        super().__init__()
        self.late = late
        self.sides = (_Side(bytearray()), _Side(bytearray()))
        self.system = "mysql"
        self.greeted = self.answered_handshake = late
        self.statements: dict[int, tuple[str, bool]] = {}   # statement id -> (text, truncated)
        self.answer = _Answer()
        self.caps = 0                        # the client's capabilities (its handshake response)
        self.tls = False                     # the client asked for TLS: this socket says no more

    def feed(self, call: Call, flags: int = 0) -> None:
        if self.requests_dir is None:
            # the server's greeting comes first; a late connection's first call is a query
            # (unless what came first is a greeting after all: then it is not late)
            if self.late and call.head[3:5] == b"\x00\x0a":
                self.late = self.greeted = self.answered_handshake = False
            self.requests_dir = call.dir if self.late else 1 - call.dir
        client = call.dir == self.requests_dir
        side = self.sides[call.dir]
        if client and flags & WALK_RESUMED:
            self.resume_server()
        if side.lost or self.tls:
            return
        side.data += call.head
        while not side.lost and not self.tls:
            packet = self._next(side, client)
            if packet is None:
                break
            seq, length, body = packet
            if client:
                self._client(seq, length, body, call)
            else:
                self._server(seq, length, body, call)
        if flags & WALK_LOST and not side.lost:
            self._lose(side, client)

    def _next(self, side: _Side, client: bool) -> tuple[int, int, bytes] | None:
        """The next whole packet of the walk's bytes: (sequence, length, kept bytes)."""
        data = side.data
        if len(data) < 4:
            return None
        length, seq = int.from_bytes(data[:3], "little"), data[3]
        if client:
            kept = min(length, KEEP) if seq <= 1 else 0
        else:
            kept = min(length, 1)
            if kept and len(data) >= 5 and (data[4] in HEADED or (data[4] == 10 and seq == 0)):
                kept = min(length, SERVER_KEEP)
        if len(data) < 4 + kept:
            return None
        body = bytes(data[4:4 + kept])
        del data[:4 + kept]
        return seq, length, body

    # -- the client's packets ----------------------------------------------------------
    def _client(self, seq: int, length: int, body: bytes, call: Call) -> None:
        if seq == 1 and not self.answered_handshake:
            self._handshake_response(body)
            return
        if seq != 0 or not body:
            return                               # authentication, or a LOCAL INFILE's data
        command, rest = body[0], body[1:]
        whole = length <= KEEP
        if command == COM_QUERY and self.caps & CLIENT_QUERY_ATTRIBUTES:
            count, at = lenenc(rest, 0)          # query attributes (MySQL 8.0.23+) come first
            _, at = lenenc(rest, at)
            if count:                            # their values' types and names: not read
                self.sent.append(Command("", call.ts_ns, call.tid, truncated=True))
                return
            rest = rest[at:]
        if command == COM_QUERY:
            self.sent.append(Command(rest.decode("utf-8", "replace"), call.ts_ns, call.tid,
                                     truncated=not whole))
        elif command == COM_STMT_PREPARE:
            self.sent.append(Command(rest.decode("utf-8", "replace"), call.ts_ns, call.tid,
                                     truncated=not whole, command=command))
        elif command == COM_STMT_EXECUTE:
            sid = int.from_bytes(rest[:4], "little")
            text, truncated = self.statements.get(sid, ("", False))
            self.sent.append(Command(text, call.ts_ns, call.tid, truncated=truncated,
                                     prepared=str(sid), command=command))
        elif command == COM_STMT_CLOSE:
            self.statements.pop(int.from_bytes(rest[:4], "little"), None)
        elif command not in NO_ANSWER:           # COM_INIT_DB, COM_PING, ...: one OK or ERR
            self.sent.append(Command("", call.ts_ns, call.tid, command=command,
                                     schema=rest.decode("utf-8", "replace") if command == COM_INIT_DB else ""))

    def _handshake_response(self, body: bytes) -> None:
        """HandshakeResponse41: capabilities, ..., user, the scrambled password (passed
        over), the schema."""
        caps = int.from_bytes(body[:4], "little")
        if caps & CLIENT_SSL and len(body) <= 32:   # an SSLRequest: TLS follows on this socket
            self.tls = True
            return
        self.answered_handshake, self.caps = True, caps
        user, _, rest = body[32:].partition(b"\0")
        self.user = user.decode("utf-8", "replace")
        if caps & CLIENT_PLUGIN_AUTH_LENENC:
            n, at = lenenc(rest, 0)
        elif caps & CLIENT_SECURE_CONNECTION:
            n, at = (rest[0] if rest else 0), 1
        else:
            n, at = rest.find(b"\0") + 1 if b"\0" in rest else len(rest), 0
        if caps & CLIENT_CONNECT_WITH_DB:
            self.database = rest[at + n:].partition(b"\0")[0].decode("utf-8", "replace")

    # -- the server's ------------------------------------------------------------------
    def _server(self, seq: int, length: int, body: bytes, call: Call) -> None:
        if not self.greeted:
            self.greeted = True
            if body[:1] == b"\x0a" and b"MariaDB" in body:
                self.system = "mariadb"
            return
        if not self.answered_handshake or not body:
            return                               # the authentication exchange
        if not self.sent:
            return                               # an answer to nothing we saw
        q, a, first = self.sent[0], self.answer, body[0]
        eof = first == 0xFE and length < 9       # (the older protocol's EOF packet)
        if a.state == "prepared":                # a prepare's definitions are over
            self._finish(call)
            if eof:
                return                           # its EOF
            if not self.sent:
                return
            q, a = self.sent[0], self.answer     # this packet answers the next command
        if a.state == "first":
            if first == 0x00 and q.command == COM_STMT_PREPARE:
                sid = int.from_bytes(body[1:5], "little")
                a.columns = int.from_bytes(body[5:7], "little")
                params = int.from_bytes(body[7:9], "little")
                self.statements[sid] = (q.text, q.truncated)
                a.state, a.left = ("params", params) if params else ("columns", a.columns)
                if not a.left:
                    self._finish(call)
            elif first == 0x00:
                rows, at = lenenc(body, 1)
                _, at = lenenc(body, at)
                status = int.from_bytes(body[at:at + 2], "little")
                q.rows = (q.rows or 0) + rows if q.command in (COM_QUERY, COM_STMT_EXECUTE) else None
                if q.command == COM_INIT_DB:
                    self.database = q.schema
                if not status & SERVER_MORE_RESULTS_EXISTS:
                    self._finish(call)
            elif first == 0xFF:
                self._error(q, body)
                self._finish(call)
            elif first == 0xFB:                  # LOCAL INFILE: the file comes, then an OK
                pass
            elif first == 0xFE:                  # an EOF (COM_SET_OPTION), or an auth switch
                self._finish(call)
            elif first in (0xFC, 0xFD):          # 251 columns or more: the count was not copied
                self.unparsed += 1
                self._lose(self.sides[1 - self.requests_dir], False)
            else:                                # a result set: its column count
                a.state, a.left, a.rows = "columns", lenenc(body, 0)[0], 0
        elif a.state in ("params", "columns"):
            if eof:                              # the EOF after a prepare's parameters
                return
            a.left -= 1
            if a.left <= 0:
                if a.state == "params" and a.columns:
                    a.state, a.left = "columns", a.columns
                elif q.command == COM_STMT_PREPARE:
                    a.state = "prepared"
                else:
                    a.state = "after_columns"
        elif a.state == "after_columns" and first == 0xFE and length == 5:
            a.state = "rows"                     # the EOF between columns and rows (older protocol)
        elif first == 0xFE and length < 0xFFFFFF:   # EOF or OK: the rows are over
            status_at = 3 if length < 7 else None
            if status_at is None:
                _, at = lenenc(body, 1)
                _, at = lenenc(body, at)
                status_at = at
            status = int.from_bytes(body[status_at:status_at + 2], "little")
            q.rows = (q.rows or 0) + a.rows
            if status & SERVER_MORE_RESULTS_EXISTS:
                a.state = "first"
            else:
                self._finish(call)
        elif first == 0xFF:
            self._error(q, body)
            self._finish(call)
        else:
            a.state = "rows"
            a.rows += 1

    @staticmethod
    def _error(q: Command, body: bytes) -> None:
        """ERR: its number, then '#' and a SQL state, then the message."""
        q.status = str(int.from_bytes(body[1:3], "little"))
        message = body[9:] if body[3:4] == b"#" else body[3:]
        q.error = message.decode("utf-8", "replace")

    def _finish(self, call: Call) -> None:
        """The front command is answered: a statement run is reported, the rest (a
        prepare, COM_INIT_DB, a ping) only consumed."""
        q = self.sent.popleft()
        self.answer = _Answer()
        if self.reported(q):
            q.end_ns, q.ended_by = call.ts_ns, "framing"
            self.done.append(q)
        elif q.command == COM_STMT_PREPARE and q.status:
            q.end_ns, q.ended_by = call.ts_ns, "framing"   # a prepare that failed ran nothing:
            self.done.append(q)                            # its error is the statement's

    def _lose(self, side: _Side, client: bool) -> None:
        side.lost = True
        side.data.clear()
        if not client:
            self.lose_answers()

    @staticmethod
    def reported(q: Command) -> bool:
        """Queries and executes; a prepare, COM_INIT_DB or a ping only answered."""
        return q.command in (COM_QUERY, COM_STMT_EXECUTE)

    def lose_answers(self) -> None:
        super().lose_answers()
        self.answer = _Answer()
