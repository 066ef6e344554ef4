"""MySQL and MariaDB's client/server protocol from the kernel's packet walk
(signals/net/mysql.py)."""

from __future__ import annotations

import struct

from ebpf_otlp.signals.net.http1 import WALK_LOST, WALK_RESUMED, Call
from ebpf_otlp.signals.net.mysql import HEADED, SERVER_KEEP, MySqlConnection
from ebpf_otlp.signals.net.db import KEEP

CAPS = 0x8 | 0x8000 | 0x200 | 0x200000 | 0x1000000   # connect with db, secure, 4.1, lenenc auth, deprecate EOF


class Walk:
    """bpf/tcp_life.bpf.c's walk of one direction (MYSQL), call by call."""

    def __init__(self, client: bool):
        self.client = client
        self.partial, self.seq, self.copy, self.skip, self.peek = b"", 0, 0, 0, False

    def call(self, data: bytes) -> bytes:
        out, i = bytearray(), 0
        while i < len(data):
            if self.copy:
                n = min(self.copy, len(data) - i)
                out += data[i:i + n]
                self.copy -= n
                if self.peek:
                    self.peek = False
                    if data[i] in HEADED or (data[i] == 10 and self.seq == 0):
                        self.copy = min(self.skip, SERVER_KEEP - 1)
                        self.skip -= self.copy
            elif self.skip:
                n = min(self.skip, len(data) - i)
                self.skip -= n
            else:
                n = min(4 - len(self.partial), len(data) - i)
                self.partial += data[i:i + n]
                out += data[i:i + n]
                if len(self.partial) == 4:
                    size, self.seq = int.from_bytes(self.partial[:3], "little"), self.partial[3]
                    self.partial = b""
                    keep = (KEEP if self.seq <= 1 else 0) if self.client else (1 if size else 0)
                    self.copy = min(size, keep)
                    self.skip = size - self.copy
                    self.peek = not self.client and bool(self.copy)
            i += n
        return bytes(out)


def packet(seq: int, body: bytes) -> bytes:
    return len(body).to_bytes(3, "little") + bytes([seq]) + body


def lenenc_str(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def ok(seq: int, affected: int = 0, status: int = 2) -> bytes:
    return packet(seq, b"\x00" + bytes([affected, 0]) + struct.pack("<HH", status, 0))


def eof_ok(seq: int, status: int = 2) -> bytes:   # CLIENT_DEPRECATE_EOF's end of rows
    return packet(seq, b"\xfe\x00\x00" + struct.pack("<HH", status, 0))


def eof(seq: int, status: int = 2) -> bytes:      # the older protocol's EOF
    return packet(seq, b"\xfe" + struct.pack("<HH", 0, status))


def err(seq: int, code: int, state: str, message: str) -> bytes:
    return packet(seq, b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + message.encode())


def column(seq: int, name: bytes) -> bytes:
    return packet(seq, lenenc_str(b"def") + lenenc_str(b"shop") + lenenc_str(b"t") + lenenc_str(b"t")
                  + lenenc_str(name) + lenenc_str(name) + b"\x0c" + b"\0" * 12)


def result(rows: list[bytes], names=(b"id", b"name"), old: bool = False) -> bytes:
    out, seq = packet(1, bytes([len(names)])), 2
    for name in names:
        out += column(seq, name)
        seq += 1
    if old:
        out += eof(seq)
        seq += 1
    for r in rows:
        out += packet(seq, r)
        seq += 1
    return out + (eof(seq) if old else eof_ok(seq))


GREETING = packet(0, b"\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\0" + b"\x07\0\0\0" + b"12345678\0" + b"\xff\xf7"
                  + b"\x2d\x02\x00\xff\x81\x15" + b"\0" * 10 + b"abcdefghijkl\0mysql_native_password\0")


def handshake_response(user: bytes, db: bytes, caps: int = CAPS) -> bytes:
    return packet(1, struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user + b"\0"
                  + bytes([20]) + b"s" * 20 + db + b"\0" + b"mysql_native_password\0")


class Wire:
    def __init__(self, late: bool = False):
        self.my = MySqlConnection(late=late)
        self.walks = {0: Walk(client=True), 1: Walk(client=False)}   # we are the client: 0 sends
        self.t = 0

    def send(self, data: bytes, flags: int = 0) -> None:
        self._call(0, data, flags)

    def answer(self, data: bytes, flags: int = 0) -> None:
        self._call(1, data, flags)

    def _call(self, dir_: int, data: bytes, flags: int) -> None:
        self.t += 1000
        self.my.feed(Call(self.t, dir_, len(data), self.walks[dir_].call(data), b"", 9), flags)


def connected(caps: int = CAPS) -> Wire:
    w = Wire()
    w.answer(GREETING)
    w.send(handshake_response(b"app", b"shop", caps))
    w.answer(ok(2))
    return w


def query(text: str) -> bytes:
    return packet(0, b"\x03" + text.encode())


def test_queries_their_rows_errors_and_the_schema_from_the_handshake():
    w = connected()
    assert (w.my.system, w.my.database, w.my.user, w.my.requests_dir) == ("mariadb", "shop", "app", 0)
    w.send(query("SELECT * FROM t WHERE id > 1"))
    w.answer(result([lenenc_str(b"2") + lenenc_str(b"bob"), lenenc_str(b"3") + lenenc_str(b"eve"),
                     b"\xfb" + lenenc_str(b"nul")]))   # a NULL first column: 0xfb
    w.send(query("INSERT INTO t VALUES (9, 'zed')"))
    w.answer(ok(1, affected=1))
    w.send(query("SELEC 1"))
    w.answer(err(1, 1064, "42000", "You have an error in your SQL syntax"))
    select, insert, bad = w.my.take()
    assert (select.text, select.rows, select.status, select.end_ns) == ("SELECT * FROM t WHERE id > 1", 3, "", 5000)
    assert (insert.rows, insert.status) == (1, "")
    assert (bad.status, bad.error) == ("1064", "You have an error in your SQL syntax"[:SERVER_KEEP - 9])


def test_an_eof_for_an_answer_ends_its_command():
    w = connected()
    w.send(packet(0, b"\x1b\x00\x00"))            # COM_SET_OPTION: answered by an EOF
    w.answer(packet(1, b"\xfe\x00\x00\x02\x00"))
    w.send(query("SELECT 1"))
    w.answer(result([b"\x011"], names=(b"1",)))
    assert [q.text for q in w.my.take()] == ["SELECT 1"]


def test_the_older_protocol_s_eof_packets():
    w = connected(caps=CAPS & ~0x1000000)
    w.send(query("SELECT id FROM t"))
    w.answer(result([b"\x011", b"\x012"], names=(b"id",), old=True))
    w.send(query("SELECT id FROM t WHERE 0"))
    w.answer(result([], names=(b"id",), old=True))
    assert [q.rows for q in w.my.take()] == [2, 0]


def test_prepared_statements_run_by_their_id_and_the_schema_changed():
    w = connected()
    w.send(packet(0, b"\x16SELECT name FROM t WHERE id = ?"))
    w.answer(packet(1, b"\x00" + struct.pack("<IHHBH", 7, 1, 1, 0, 0)) + column(2, b"?") + column(3, b"name"))
    for i in range(3):
        w.send(packet(0, b"\x17" + struct.pack("<IBI", 7, 0, 1) + b"\x01\x08\x00" + struct.pack("<q", i)))
        w.answer(packet(1, b"\x01") + column(2, b"name") + packet(3, b"\x00\x00" + lenenc_str(b"bob")) + eof_ok(4))
    w.send(packet(0, b"\x02other"))
    w.answer(ok(1))
    w.send(packet(0, b"\x19" + struct.pack("<I", 7)))   # COM_STMT_CLOSE: no answer
    w.send(query("SELECT 1"))
    w.answer(result([b"\x011"], names=(b"1",)))
    done = w.my.take()
    assert [(q.text, q.prepared, q.rows) for q in done[:3]] == [("SELECT name FROM t WHERE id = ?", "7", 1)] * 3
    assert done[3].text == "SELECT 1" and w.my.database == "other" and len(done) == 4


def test_more_results_and_a_lost_server_side_resumed_at_the_next_command():
    w = connected()
    w.send(query("CALL two_results()"))
    w.answer(result([b"\x011"], names=(b"a",))[:-11] + eof_ok(4, status=2 | 0x0008)
             + result([b"\x012", b"\x013"], names=(b"b",)))
    [call] = w.my.take()
    assert call.rows == 3
    w.send(query("SELECT * FROM big"))
    w.answer(packet(1, b"\x01") + column(2, b"x"), flags=WALK_LOST)
    w.answer(b"rows the walk passed over")
    w.send(query("SELECT 2"), flags=WALK_RESUMED)
    w.walks[1] = Walk(client=False)
    w.answer(result([b"\x012"], names=(b"2",)))
    [q] = w.my.take()
    assert q.text == "SELECT 2" and w.my.lost == 1


def test_a_connection_open_before_the_capture():
    w = Wire(late=True)
    w.send(query("UPDATE t SET name = 'x' WHERE id = 2"))
    w.answer(ok(1, affected=1))
    [q] = w.my.take()
    assert (q.rows, w.my.database, w.my.system) == (1, "", "mysql")
