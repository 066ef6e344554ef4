"""A PostgreSQL client with known statements, through psycopg (libpq underneath):
`pg_client.py PORT [tls|late]`. Prints one JSON line: its pid and what it ran, as
(operation, table, SQLSTATE) counts, the ground truth the trace is checked against.
`late`: connects, says "connected" on stderr, and runs its statements once a line comes
on stdin (the connection then began before a capture started in between)."""

import collections
import json
import os
import sys

import psycopg

port, tls, late = int(sys.argv[1]), sys.argv[2:] == ["tls"], sys.argv[2:] == ["late"]
ran = collections.Counter()
with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True,
                     sslmode="require" if tls else "disable") as conn:
    table = "shop_items_tls" if tls else "shop_items_late" if late else "shop_items"
    if late:
        print("connected", file=sys.stderr, flush=True)
        sys.stdin.readline()
    conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text, stock int)")
    ran["CREATE", table, ""] += 1
    for i in range(20):
        conn.execute(f"INSERT INTO {table} (id, name, stock) VALUES (%s, %s, 10)", (i, f"item-{i}"))
        ran["INSERT", table, ""] += 1
    for i in range(5):   # prepared once by name, then run by it
        conn.execute(f"SELECT name FROM {table} WHERE id = %s", (i,), prepare=True).fetchall()
        ran["SELECT", table, ""] += 1
    with conn.transaction():
        conn.execute(f"UPDATE {table} SET stock = stock - 1 WHERE id = 3")
    ran["BEGIN", "", ""] += 1
    ran["UPDATE", table, ""] += 1
    ran["COMMIT", "", ""] += 1
    try:
        conn.execute("SELEC 1")
    except psycopg.errors.SyntaxError:
        ran["SELEC", "", "42601"] += 1
print(json.dumps({"pid": os.getpid(), "ran": [[*k, n] for k, n in ran.items()]}), flush=True)
