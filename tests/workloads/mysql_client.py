"""A MySQL/MariaDB client with known statements, through PyMySQL: `mysql_client.py PORT`.
Prints one JSON line: its pid and what it ran, as (operation, table, error number) counts,
the ground truth the trace is checked against."""

import collections
import json
import os
import sys

import pymysql

ran = collections.Counter()
conn = pymysql.connect(host="127.0.0.1", port=int(sys.argv[1]), user="root", database="shop", autocommit=True)
ran["SET", "", ""] += 1   # PyMySQL's own SET NAMES, at every connect
with conn.cursor() as cur:
    cur.execute("CREATE TABLE carts (id INT PRIMARY KEY, owner VARCHAR(40), items INT)")
    ran["CREATE", "carts", ""] += 1
    for i in range(10):
        cur.execute("INSERT INTO carts VALUES (%s, %s, %s)", (i, f"user-{i}", i * 2))
        ran["INSERT", "carts", ""] += 1
    for i in range(4):
        cur.execute("SELECT owner, items FROM carts WHERE id = %s", (i,))
        cur.fetchall()
        ran["SELECT", "carts", ""] += 1
    cur.execute("SELECT * FROM carts")                # ten rows in one answer
    assert len(cur.fetchall()) == 10
    ran["SELECT", "carts", ""] += 1
    cur.execute("UPDATE carts SET items = items + 1 WHERE id < 3")
    ran["UPDATE", "carts", ""] += 1
    try:
        cur.execute("SELEC 1")
    except pymysql.err.ProgrammingError:
        ran["SELEC", "", "1064"] += 1
conn.close()
print(json.dumps({"pid": os.getpid(), "ran": [[*k, n] for k, n in ran.items()]}), flush=True)
