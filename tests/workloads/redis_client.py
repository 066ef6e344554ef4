"""A Redis client with known commands, through redis-py: `redis_client.py PORT`. A pipeline
of 100 commands, and one WRONGTYPE error. Prints one JSON line: its pid and what it ran,
as (command, error) counts, the ground truth the trace is checked against."""

import collections
import json
import os
import sys

import redis

ran = collections.Counter()
# lib_name, lib_version None: no CLIENT SETINFO at the connect (RESP2, no auth: nothing else)
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=2, lib_name=None, lib_version=None)
r.ping()
ran["PING", ""] += 1
for i in range(5):
    r.set(f"user:{i}", f"name-{i}")
    ran["SET", ""] += 1
    r.get(f"user:{i}")
    ran["GET", ""] += 1
pipe = r.pipeline(transaction=False)
for i in range(100):
    pipe.incr(f"hits:{i % 10}")   # (sent as INCRBY key 1)
pipe.execute()
ran["INCRBY", ""] += 100
try:
    r.lpush("user:0", "x")
except redis.ResponseError:
    ran["LPUSH", "WRONGTYPE"] += 1
r.close()
print(json.dumps({"pid": os.getpid(), "ran": [[*k, n] for k, n in ran.items()]}), flush=True)
