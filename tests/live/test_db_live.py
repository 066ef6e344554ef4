"""trace-net's database spans live, against a real PostgreSQL 15 and MariaDB 10.11 from Debian (started here on
loopback, data in a temporary directory): statements from `psql` and from psycopg (libpq),
plain and over TLS. Ground truth: what each client ran. Every statement is seen once by
its client and once by the server's backend, by operation, table and SQLSTATE."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import pytest

from conftest import WORKLOADS, need_tool, wait_for_line
from support.collector import self_signed_cert
from support.databases import mariadb, postgres, redis
from support.trace_net import tracing

pytestmark = pytest.mark.live

PSQL_SCRIPT = """CREATE TABLE orders (id int, customer text, total numeric);
INSERT INTO orders VALUES (1, 'alice', 10.5);
INSERT INTO orders VALUES (2, 'bob', 20);
INSERT INTO orders VALUES (3, 'O''Brien', 7);
SELECT * FROM orders WHERE customer = 'alice';
SELECT count(*) FROM orders;
SELECT total FROM orders WHERE id = 2;
BEGIN;
UPDATE orders SET total = total + 1 WHERE id = 1;
COMMIT;
SELEC 1;
"""
PSQL_RAN = {("CREATE", "orders", ""): 1, ("INSERT", "orders", ""): 3, ("SELECT", "orders", ""): 3,
            ("BEGIN", "", ""): 1, ("UPDATE", "orders", ""): 1, ("COMMIT", "", ""): 1, ("SELEC", "", "42601"): 1}


def by_side(records, pid=None) -> tuple[collections.Counter, collections.Counter]:
    """(client side, server side) statement counts by (operation, table, SQLSTATE)."""
    key = lambda r: (r["operation"], r["collection"], r["status_code"])   # noqa: E731
    return (collections.Counter(key(r) for r in records if r["kind"] == "client" and (pid is None or r["pid"] == pid)),
            collections.Counter(key(r) for r in records if r["kind"] == "server"))


def pg_client(port: int, *args: str) -> dict:
    run = subprocess.run([sys.executable, str(WORKLOADS / "pg_client.py"), str(port), *args],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    return {"pid": out["pid"], "ran": collections.Counter({tuple(k[:3]): k[3] for k in out["ran"]})}


def test_psql_statements_both_sides_literals_replaced(tmp_path):
    """psql's statements, each one CLIENT record (psql) and one SERVER record (its
    backend), literals as ?; the syntax error carries SQLSTATE 42601 and the server's
    message; the database and user come from the startup packet; nothing lost."""
    psql = need_tool("psql", "/usr/bin/psql")
    port = 39511
    with postgres(port):
        with tracing(tmp_path, port) as got:
            subprocess.run([psql, "-X", "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                            "-d", "postgres"], input=PSQL_SCRIPT, capture_output=True, text=True, timeout=60)
    client, server = by_side(got["db"])
    assert client == PSQL_RAN, got["db"]
    assert server == PSQL_RAN
    assert {(r["system"], r["namespace"], r["user"]) for r in got["db"]} == {("postgresql", "postgres", "postgres")}
    assert {r["process_name"] for r in got["db"] if r["kind"] == "client"} == {"psql"}
    queries = {r["query"] for r in got["db"]}
    assert "INSERT INTO orders VALUES (?, ?, ?);" in queries and "SELECT * FROM orders WHERE customer = ?;" in queries
    assert not any("alice" in q or "Brien" in q or "10.5" in q for q in queries)
    error = next(r for r in got["db"] if r["status_code"])
    assert error["error"] == 'syntax error at or near "SELEC"'
    inserts = [r for r in got["db"] if r["operation"] == "INSERT"]
    assert {r["rows"] for r in inserts} == {1} and {r["ended_by"] for r in got["db"]} == {"framing"}
    assert all(0 < r["duration_ns"] < 5e9 for r in got["db"])
    assert "Database statements by process, operation and table (22)" in got["stdout"]
    assert "losses: none" in got["stdout"] + got["stderr"]


def test_psycopg_prepared_statements_a_transaction_and_tls(tmp_path):
    """psycopg through libpq (the extended protocol: Parse, Bind, Execute, Sync), plain and
    over TLS (libpq's OpenSSL, read through the libssl hooks): every statement the client
    ran, both sides; the prepared SELECT run by its name five times (and the INSERT once
    psycopg prepared it itself); --raw-queries keeps the literals."""
    cert, key = self_signed_cert(tmp_path)
    port = 39512
    with postgres(port, tls_cert=(cert, key)):
        with tracing(tmp_path, port, "--raw-queries") as got:
            plain = pg_client(port)
            tls = pg_client(port, "tls")
    for run in (plain, tls):
        client, _ = by_side(got["db"], run["pid"])
        assert client == run["ran"], (run, got["db"])
    _, server = by_side(got["db"])
    assert server == plain["ran"] + tls["ran"]
    mine = [r for r in got["db"] if r["kind"] == "client" and r["pid"] == plain["pid"]]
    selects = [r for r in mine if r["operation"] == "SELECT"]
    assert len({r["prepared"] for r in selects}) == 1 and selects[0]["prepared"]   # one name, five runs
    assert {r["query"] for r in selects} == {"SELECT name FROM shop_items WHERE id = $1"}
    # psycopg prepares a statement by itself from its sixth run (prepare_threshold = 5)
    assert sum(bool(r["prepared"]) for r in mine if r["operation"] == "INSERT") == 15
    assert any(r["query"] == "UPDATE shop_items SET stock = stock - 1 WHERE id = 3" for r in got["db"])   # raw
    assert "losses: none" in got["stdout"] + got["stderr"]


def test_a_connection_open_before_the_capture_is_picked_up_at_its_next_statement(tmp_path):
    """A psycopg connection made before trace-net started: its statements from the first
    one after the start are all seen, both sides (the database and user it connected
    with are unknown, and left out)."""
    port = 39513
    with postgres(port):
        client = subprocess.Popen([sys.executable, str(WORKLOADS / "pg_client.py"), str(port), "late"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_line(client.stderr, "connected")
        with tracing(tmp_path, port) as got:
            out, err = client.communicate("go\n", timeout=120)
        assert client.returncode == 0, err
    ran = json.loads(out)
    truth = collections.Counter({tuple(k[:3]): k[3] for k in ran["ran"]})
    client_side, server_side = by_side(got["db"])
    assert client_side == truth and server_side == truth, got["db"]
    assert {r["namespace"] for r in got["db"]} == {""}


MARIADB_SCRIPT = """CREATE TABLE stock (sku VARCHAR(20), qty INT);
INSERT INTO stock VALUES ('a-1', 5);
INSERT INTO stock VALUES ('b-2', 7);
SELECT qty FROM stock WHERE sku = 'a-1';
UPDATE stock SET qty = qty - 1 WHERE sku = 'b-2';
DELETE FROM stock WHERE qty = 0;
SELEC 1;
"""
MARIADB_RAN = {("CREATE", "stock", ""): 1, ("INSERT", "stock", ""): 2, ("SELECT", "stock", ""): 1,
               ("UPDATE", "stock", ""): 1, ("DELETE", "stock", ""): 1, ("SELEC", "", "1064"): 1}


def test_mariadb_from_its_client_and_pymysql(tmp_path):
    """MariaDB 10.11 driven by the `mariadb` client and by PyMySQL: every statement each
    ran, once on its side and once on the server's (mariadbd), error 1064 on the syntax
    error, the schema from the handshake, literals as ?; nothing lost."""
    client = need_tool("mariadb", "/usr/bin/mariadb")
    port = 39521
    with mariadb(port):
        with tracing(tmp_path, port) as got:
            cli = subprocess.run([client, "-h", "127.0.0.1", "-P", str(port), "-u", "root", "-D", "shop",
                                  "--force"], input=MARIADB_SCRIPT, capture_output=True, text=True, timeout=60)
            assert "1064" in cli.stderr, cli.stderr
            run = subprocess.run([sys.executable, str(WORKLOADS / "mysql_client.py"), str(port)],
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
    py = json.loads(run.stdout)
    py_ran = collections.Counter({tuple(k[:3]): k[3] for k in py["ran"]})
    client_side, server_side = by_side(got["db"])
    mine, _ = by_side(got["db"], py["pid"])
    assert mine == py_ran, got["db"]
    assert client_side - py_ran == collections.Counter(MARIADB_RAN)
    assert server_side == client_side
    assert {(r["system"], r["namespace"]) for r in got["db"]} == {("mariadb", "shop")}
    assert {r["process_name"] for r in got["db"] if r["kind"] == "server"} == {"mariadbd"}
    everything = [r for r in got["db"] if r["query"] == "SELECT * FROM carts"]
    assert {r["rows"] for r in everything} == {10}
    assert "INSERT INTO stock VALUES (?, ?)" in {r["query"] for r in got["db"]}   # (the client drops the ;)
    assert "losses: none" in got["stdout"] + got["stderr"]


def test_redis_from_redis_cli_and_redis_py_with_a_pipeline(tmp_path):
    """Redis 7 driven by redis-cli and by redis-py (a pipeline of 100 commands in one send,
    one WRONGTYPE error): every command each ran, on its side and the server's, paired
    with its reply in order; the error's prefix as the status code; nothing lost."""
    cli = need_tool("redis-cli", "/usr/bin/redis-cli")
    port = 39531
    with redis(port):
        with tracing(tmp_path, port) as got:
            for words in (["SET", "stock", "7"], ["INCRBY", "stock", "3"], ["GET", "stock"], ["HSET", "h", "a", "1"],
                          ["LPUSH", "stock", "x"]):
                subprocess.run([cli, "-p", str(port), *words], capture_output=True, text=True, timeout=30)
            run = subprocess.run([sys.executable, str(WORKLOADS / "redis_client.py"), str(port)],
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
    py = json.loads(run.stdout)
    key = lambda r: (r["operation"], r["status_code"])   # noqa: E731
    mine = collections.Counter(key(r) for r in got["db"] if r["kind"] == "client" and r["pid"] == py["pid"])
    assert mine == collections.Counter({tuple(k[:2]): k[2] for k in py["ran"]}), got["db"]
    cli_side = collections.Counter(key(r) for r in got["db"] if r["kind"] == "client" and r["process_name"] == "redis-cli")
    # redis-cli asks the server for its commands' docs (COMMAND DOCS) at each start
    assert cli_side - collections.Counter({("COMMAND", ""): 5}) == collections.Counter(
        {("SET", ""): 1, ("INCRBY", ""): 1, ("GET", ""): 1, ("HSET", ""): 1, ("LPUSH", "WRONGTYPE"): 1})
    server = collections.Counter(key(r) for r in got["db"] if r["kind"] == "server")
    assert server == collections.Counter(key(r) for r in got["db"] if r["kind"] == "client")
    assert {r["system"] for r in got["db"]} == {"redis"} and {r["namespace"] for r in got["db"]} == {"0"}
    assert "SET user:0" in {r["query"] for r in got["db"]}   # the key, never the value
    assert not any("name-" in r["query"] for r in got["db"])
    assert "losses: none" in got["stdout"] + got["stderr"]
