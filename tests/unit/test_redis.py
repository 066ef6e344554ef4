"""Redis's RESP framed from calls' first bytes (signals/net/redis.py)."""

from __future__ import annotations

from ebpf_otlp.signals.net.http1 import Call
from ebpf_otlp.signals.net.redis import HEAD, RedisConnection


def command(*words: str) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words)


class Wire:
    """Calls as the kernel sends them up: the first HEAD bytes of each."""

    def __init__(self, server_side: bool = False):
        self.r = RedisConnection()
        self.client_dir = 1 if server_side else 0
        self.t = 0

    def call(self, dir_: int, data: bytes) -> None:
        self.t += 1000
        self.r.feed(Call(self.t, dir_, len(data), data[:HEAD], b"", 5))

    def send(self, data: bytes) -> None:
        self.call(self.client_dir, data)

    def answer(self, data: bytes) -> None:
        self.call(1 - self.client_dir, data)


def test_commands_replies_errors_and_the_database():
    w = Wire()
    w.send(command("SET", "user:1", "alice"))
    w.answer(b"+OK\r\n")
    w.send(command("GET", "user:1"))
    w.answer(b"$5\r\nalice\r\n")
    w.send(command("LPUSH", "user:1", "x"))
    w.answer(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    w.send(command("SELECT", "2"))
    w.answer(b"+OK\r\n")
    w.send(command("HGETALL", "h"))
    w.answer(b"%2\r\n$1\r\na\r\n:1\r\n+b\r\n_\r\n")   # RESP3: a map, a null
    done = w.r.take()
    assert [(q.text, q.status) for q in done] == [("SET user:1", ""), ("GET user:1", ""), ("LPUSH user:1", "WRONGTYPE"),
                                                  ("SELECT", ""), ("HGETALL h", "")]
    assert done[2].error.startswith("WRONGTYPE Operation") and w.r.database == "2"
    assert [q.end_ns for q in done] == [2000, 4000, 6000, 8000, 10000]


def test_a_pipeline_pairs_every_reply_in_order_across_calls():
    w = Wire(server_side=True)
    batch = b"".join(command("INCR", f"n{i}") for i in range(100))
    assert len(batch) < HEAD
    w.send(batch)
    replies = b"".join(b":%d\r\n" % i for i in range(100))
    w.answer(replies[:7])   # a reply split between two calls
    w.answer(replies[7:])
    done = w.r.take()
    assert [q.text for q in done] == [f"INCR n{i}" for i in range(100)] and w.r.requests_dir == 1


def test_a_big_value_is_passed_over_by_its_length():
    w = Wire()
    w.send(command("GET", "blob"))
    value = b"v" * 100_000
    reply = b"$%d\r\n" % len(value) + value + b"\r\n"
    w.answer(reply[:65536])
    w.answer(reply[65536:])
    w.send(command("PING"))
    w.answer(b"+PONG\r\n")
    assert [q.text for q in w.r.take()] == ["GET blob", "PING"]


def test_replies_past_the_bytes_copied_are_lost_and_the_next_command_begins_again():
    w = Wire()
    batch = b"".join(command("GET", f"k{i}") for i in range(60))
    w.send(batch)
    w.answer(b"".join(b"$300\r\n" + b"x" * 300 + b"\r\n" for _ in range(60)))   # 18 KB: past HEAD
    w.send(command("GET", "after"))
    w.answer(b"$2\r\nok\r\n")
    done = w.r.take()
    # 308 bytes a reply: 14 begin in the first 4 KB (the 14th's value is passed over by its
    # length); the 15th's header was not copied
    assert len(done) == 14 + 1 and done[-1].text == "GET after"
    assert w.r.lost == 60 - 14
