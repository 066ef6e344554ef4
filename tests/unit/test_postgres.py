"""PostgreSQL's wire protocol from the kernel's message walk (signals/net/postgres.py), and
the SQL text a span carries (signals/net/sql.py)."""

from __future__ import annotations

import struct

from ebpf_otlp.signals.net.http1 import WALK_LOST, WALK_RESUMED, Call
from ebpf_otlp.signals.net.postgres import BIND_KEEP, CLIENT_SKIPPED, KEEP, SERVER_KEPT, PgConnection
from ebpf_otlp.signals.net.sql import describe, sanitize


class Walk:
    """bpf/tcp_life.bpf.c's walk of one direction, call by call: each message's header,
    then the bytes of it kept (the client's first message is untyped, and kept up to KEEP)."""

    def __init__(self, client: bool, late: bool = False):
        self.client, self.started = client, not client or late
        self.hdr, self.copy, self.skip = b"", 0, 0

    def call(self, data: bytes) -> bytes:
        out, i = bytearray(), 0
        if not self.started:
            length = struct.unpack(">I", data[:4])[0]
            self.copy, self.skip, self.started = min(length, KEEP), length - min(length, KEEP), True
        while i < len(data):
            if self.copy:
                n = min(self.copy, len(data) - i)
                out += data[i:i + n]
                self.copy -= n
            elif self.skip:
                n = min(self.skip, len(data) - i)
                self.skip -= n
            else:
                n = min(5 - len(self.hdr), len(data) - i)
                self.hdr += data[i:i + n]
                out += data[i:i + n]
                if len(self.hdr) == 5:
                    kind, size = self.hdr[0], struct.unpack(">I", self.hdr[1:])[0] - 4
                    kept = kind not in CLIENT_SKIPPED if self.client else kind in SERVER_KEPT
                    self.copy = min(size, BIND_KEEP if kind == ord("B") else KEEP) if kept else 0
                    self.skip, self.hdr = size - self.copy, b""
            i += n
        return bytes(out)


def msg(kind: str, body: bytes) -> bytes:
    return kind.encode() + struct.pack(">I", len(body) + 4) + body


def startup(**params) -> bytes:
    body = struct.pack(">I", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0"
                                               for k, v in params.items()) + b"\0"
    return struct.pack(">I", len(body) + 4) + body


def row(*values: bytes) -> bytes:
    return msg("D", struct.pack(">H", len(values)) + b"".join(struct.pack(">I", len(v)) + v for v in values))


def error(code: str, text: str) -> bytes:
    return msg("E", b"SERROR\0C" + code.encode() + b"\0M" + text.encode() + b"\0\0")


READY = msg("Z", b"I")


def complete(tag: str) -> bytes:
    return msg("C", tag.encode() + b"\0")


def parse(name: str, text: str) -> bytes:
    return msg("P", name.encode() + b"\0" + text.encode() + b"\0" + struct.pack(">H", 0))


def bind(statement: str, portal: str = "") -> bytes:
    return msg("B", portal.encode() + b"\0" + statement.encode() + b"\0" + struct.pack(">HHH", 0, 0, 0))


EXECUTE, SYNC = msg("E", b"\0" + struct.pack(">I", 0)), msg("S", b"")


class Wire:
    """A client's connection as the kernel sends it up: calls of each side, in time order."""

    def __init__(self, server_side: bool = False, late: bool = False):
        self.pg = PgConnection(late=late)
        self.walks = {0: Walk(not server_side, late), 1: Walk(server_side, late)}
        self.client_dir = 1 if server_side else 0
        self.t = 0

    def send(self, data: bytes, flags: int = 0) -> None:
        self._call(self.client_dir, data, flags)

    def answer(self, data: bytes, flags: int = 0) -> None:
        self._call(1 - self.client_dir, data, flags)

    def _call(self, dir_: int, data: bytes, flags: int) -> None:
        self.t += 1000
        self.pg.feed(Call(self.t, dir_, len(data), self.walks[dir_].call(data), b"", 7), flags)


def connected(server_side: bool = False) -> Wire:
    w = Wire(server_side)
    w.send(startup(user="alice", database="shop", application_name="psql"))
    w.answer(msg("R", struct.pack(">I", 0)) + msg("S", b"server_version\x0015.5\0") + msg("K", b"\0" * 8) + READY)
    return w


def test_a_simple_query_with_its_rows_and_tag():
    w = connected()
    assert (w.pg.user, w.pg.database) == ("alice", "shop")
    w.send(msg("Q", b"SELECT * FROM users WHERE id = 42\0"))
    w.answer(msg("T", b"\0\1" + b"id\0" + b"\0" * 18) + row(b"42") + row(b"43") + complete("SELECT 2") + READY)
    [q] = w.pg.take()
    assert q.text == "SELECT * FROM users WHERE id = 42" and q.rows == 2 and q.status == ""
    assert (q.start_ns, q.end_ns, q.ended_by, q.tid) == (3000, 4000, "framing", 7)


def test_the_server_side_sees_the_same_queries():
    w = connected(server_side=True)
    w.send(msg("Q", b"DELETE FROM carts\0"))
    w.answer(complete("DELETE 3") + READY)
    [q] = w.pg.take()
    assert w.pg.requests_dir == 1 and q.rows == 3 and q.text == "DELETE FROM carts"


def test_prepared_statements_run_by_name_and_a_syntax_error():
    w = connected()
    w.send(parse("s1", "INSERT INTO items (name) VALUES ($1)") + bind("s1") + msg("D", b"P\0") + EXECUTE + SYNC)
    w.answer(msg("1", b"") + msg("2", b"") + msg("n", b"") + complete("INSERT 0 1") + READY)
    for _ in range(3):
        w.send(bind("s1") + EXECUTE + SYNC)
        w.answer(msg("2", b"") + complete("INSERT 0 1") + READY)
    w.send(msg("Q", b"SELEC 1\0"))
    w.answer(error("42601", 'syntax error at or near "SELEC"') + READY)
    done = w.pg.take()
    assert [(q.text, q.prepared, q.rows) for q in done[:4]] == [("INSERT INTO items (name) VALUES ($1)", "s1", 1)] * 4
    assert (done[4].status, done[4].error) == ("42601", 'syntax error at or near "SELEC"')


def test_an_error_in_a_batch_skips_its_other_executes():
    w = connected()
    w.send(parse("", "SELECT 1/0") + bind("") + EXECUTE + parse("", "SELECT 2") + bind("") + EXECUTE + SYNC)
    w.answer(msg("1", b"") + msg("2", b"") + error("22012", "division by zero") + READY)
    w.send(parse("", "SELECT 3") + bind("") + EXECUTE + SYNC)
    w.answer(msg("1", b"") + msg("2", b"") + row(b"3") + complete("SELECT 1") + READY)
    done = w.pg.take()
    assert [(q.text, q.status) for q in done] == [("SELECT 1/0", "22012"), ("SELECT 3", "")]


def test_a_transaction_and_messages_split_anywhere():
    w = connected()
    statements = ("BEGIN", "UPDATE stock SET n = n - 1", "COMMIT")
    answers = [complete("BEGIN") + msg("Z", b"T"), complete("UPDATE 1") + msg("Z", b"T"), complete("COMMIT") + READY]
    for statement, answer in zip(statements, answers):
        query = msg("Q", statement.encode() + b"\0")
        for j in range(0, len(query), 3):   # three bytes a call: headers split too
            w.send(query[j:j + 3])
        w.answer(answer[:2])
        w.answer(answer[2:])
    assert [(q.text, q.rows) for q in w.pg.take()] == [("BEGIN", None), ("UPDATE stock SET n = n - 1", 1), ("COMMIT", None)]


def test_a_long_query_is_kept_in_part_and_said_so():
    w = connected()
    long = "SELECT " + ", ".join(f"c{i}" for i in range(400)) + " FROM wide"
    w.send(msg("Q", long.encode() + b"\0"))
    w.answer(complete("SELECT 0") + READY)
    [q] = w.pg.take()
    assert q.truncated and q.text == long[:KEEP]   # KEEP bytes of the body: the text's first


def test_a_lost_server_side_loses_its_queries_and_resumes_at_the_next():
    w = connected()
    w.send(msg("Q", b"SELECT * FROM big\0"))
    w.answer(row(b"x" * 10), flags=WALK_LOST)          # the walk gave up in this call
    w.answer(b"garbage that is not walked")
    w.send(msg("Q", b"SELECT 1\0"), flags=WALK_RESUMED)
    w.walks[1] = Walk(client=False)                      # the kernel's walk, begun again
    w.answer(row(b"1") + complete("SELECT 1") + READY)
    [q] = w.pg.take()
    assert q.text == "SELECT 1" and w.pg.lost == 1


def test_a_connection_open_before_the_capture_is_picked_up_at_its_next_request():
    w = Wire(late=True)
    w.send(msg("Q", b"SELECT 1\0"))
    w.answer(row(b"1") + complete("SELECT 1") + READY)
    [q] = w.pg.take()
    assert (q.text, q.rows, w.pg.database, w.pg.requests_dir) == ("SELECT 1", 1, "", 0)


def test_a_query_unanswered_at_the_close_is_reported_without_an_answer():
    w = connected()
    w.send(msg("Q", b"SELECT pg_sleep(100)\0"))
    w.pg.close("close")
    [q] = w.pg.take()
    assert (q.ended_by, q.end_ns) == ("close", 0)


def test_literals_are_replaced_and_the_operation_and_table_named():
    assert sanitize("SELECT * FROM users WHERE name = 'O''Brien' AND id = 42") == \
        "SELECT * FROM users WHERE name = ? AND id = ?"
    assert sanitize("INSERT INTO t VALUES ($1, 3.5e2, -7, E'x\\n', $$body$$) -- note") == \
        "INSERT INTO t VALUES ($1, ?, ?, ?, ?)"
    assert sanitize("select 'a -- not a comment' from t2") == "select ? from t2"
    assert sanitize('SELECT "weird""name" FROM "T"') == 'SELECT "weird""name" FROM "T"'
    # each dialect's strings: a backslash escapes in MySQL (and PostgreSQL's E''), not in '...'
    assert sanitize("a='x\\'' AND b='secret'", "mysql") == "a=? AND b=?"
    assert sanitize("a='x\\' AND b='secret'") == "a=? AND b=?"
    assert sanitize("SELECT E'it\\'s', 'c'") == "SELECT ?, ?"
    assert sanitize('SELECT * FROM t WHERE n = "alice" # note', "mysql") == "SELECT * FROM t WHERE n = ?"
    assert describe("select * from public.users u join orders o on u.id = o.uid") == ("SELECT", "public.users")
    assert describe("INSERT INTO items (name) VALUES ($1)") == ("INSERT", "items")
    assert describe("update stock set n = n - 1") == ("UPDATE", "stock")
    assert describe("DELETE FROM carts WHERE 'from x' = ''") == ("DELETE", "carts")
    assert describe("WITH t AS (SELECT 1) SELECT * FROM t") == ("SELECT", "t")
    assert describe("BEGIN") == ("BEGIN", "")
    assert describe("SELECT * FROM (SELECT 1) s") == ("SELECT", "")
