#!/usr/bin/env python3
"""Database statement tracing overhead: PostgreSQL and Redis (Debian's) on loopback under
their own benchmarks, pgbench and redis-benchmark.

Configurations, interleaved round by round: no tracer; `ebpf-otlp trace-net --protocols
none` (connections only); `ebpf-otlp trace-net --protocols postgres` (or `redis`: a span
per statement or command, both sides: the benchmark's and the server's). Loads: pgbench's
select-only script (`-S`) over the simple query protocol, unpaced and at a fixed 2,000
transactions a second (`-R`), and over prepared statements (`-M prepared`), and its
default TPC-B-like mix (7 statements a transaction), `-c CLIENTS -j 2` for SECONDS; redis-benchmark's SET and GET, one command at a time and 16 pipelined.
Measured: what the benchmark reports a second, the tool's CPU per statement, the
benchmark's records over the statements it ran, and the losses the tool reports.

Writes a Markdown report.  Run as root:  .venv/bin/python bench/db_overhead.py
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, bench_setup, median, proc_cpu_seconds, trace_net, write_report

sys.path.insert(0, str(ROOT / "tests"))
from support.databases import PG_BIN, postgres, redis  # noqa: E402  (the tests' own servers)

CONFIGS = ("no tracer", "connections only", "statements")
# load -> (system, benchmark options, statements a transaction)
LOADS = {"pgbench select-only": ("postgres", ["-S"], 1),
         "pgbench select-only at 2,000/s (-R)": ("postgres", ["-S", "-R", "2000"], 1),
         "pgbench select-only, prepared": ("postgres", ["-S", "-M", "prepared"], 1),
         "pgbench TPC-B-like": ("postgres", [], 7),
         "redis-benchmark SET, GET": ("redis", ["-t", "set,get"], 1),
         "redis-benchmark SET, GET, 16 pipelined": ("redis", ["-t", "set,get", "-P", "16"], 1)}
DRAIN_S = 1.5   # trace-net drains every second


def redis_benchmark(port: int, options: list[str], clients: int, requests: int) -> tuple[float, int]:
    """(commands a second over its tests, commands done), as redis-benchmark counts them."""
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-c", str(clients), "-n", str(requests),
                          *options], capture_output=True, text=True, check=True).stdout
    rates = [float(x) for x in re.findall(r"([\d.]+) requests per second", out)]
    return len(rates) / sum(1 / r for r in rates), requests * len(rates)


def pgbench(port: int, options: list[str], clients: int, seconds: float) -> tuple[float, int]:
    """(transactions a second, transactions done), as pgbench counts them."""
    out = subprocess.run([f"{PG_BIN}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                          "-n", "-c", str(clients), "-j", "2", "-T", str(int(seconds)), *options, "postgres"],
                         capture_output=True, text=True, check=True).stdout
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", out).group(1))
    done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    return tps, done


def one_run(args, port: int, tmp: Path, config: str, load: str) -> dict:
    system, options, per_txn = LOADS[load]
    out = tmp / "db.jsonl"
    run = None if config == "no tracer" else \
        trace_net(["--protocols", "none" if config == "connections only" else system], port, out)
    cpu0 = proc_cpu_seconds(run.pid) if run else 0.0
    if system == "redis":
        tps, done = redis_benchmark(port, options, args.clients, args.redis_requests)
    else:
        tps, done = pgbench(port, options, args.clients, args.seconds)
    result = {"tps": tps}
    if run:
        time.sleep(DRAIN_S)   # the last statements are parsed at the next drain: counted too
        cpu = proc_cpu_seconds(run.pid) - cpu0
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=300)
        statements = done * per_txn
        records = [json.loads(line) for line in out.read_text().splitlines()]
        seen = sum(1 for r in records if r["type"] == "db" and r["kind"] == "client")
        lost = re.search(r"losses: (.*)", stdout + stderr)
        result.update(cpu_us=cpu * 1e6 / statements, seen=seen / statements,
                      lost=lost.group(1).strip() if lost else "?")
    return result


def main() -> int:
    def more(ap):
        ap.add_argument("--seconds", type=float, default=8.0, help="pgbench run length")
        ap.add_argument("--clients", type=int, default=4)
        ap.add_argument("--redis-requests", type=int, default=100000, help="redis-benchmark -n")
        ap.add_argument("--port", type=int, default=39601)

    args, tmp = bench_setup(__doc__, "performance-db.md", 3, more)
    rows: dict[tuple[str, str], list[dict]] = {}
    with postgres(args.port), redis(args.port + 1):
        subprocess.run([f"{PG_BIN}/pgbench", "-h", "127.0.0.1", "-p", str(args.port), "-U", "postgres",
                        "-i", "-s", "4", "-q", "postgres"], capture_output=True, check=True)
        for r in range(args.rounds):
            for load, (system, _, _) in LOADS.items():
                port = args.port + (system == "redis")
                for config in CONFIGS[r % 3:] + CONFIGS[:r % 3]:
                    rows.setdefault((load, config), []).append(one_run(args, port, tmp, config, load))

    lines = ["# Performance: database statement tracing (trace-net: PostgreSQL, Redis)", "",
             f"Measured by `bench/db_overhead.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
             f"{subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout.strip()}, 2 CPUs. "
             f"PostgreSQL 15 and Redis 7 from Debian on loopback: `pgbench -c {args.clients} -j 2` "
             f"(scale 4) for {args.seconds:.0f} s a run, `redis-benchmark -c {args.clients} -n "
             f"{args.redis_requests}`; {args.rounds} interleaved rounds, medians. The benchmark and the "
             "server are both traced: each statement is two records. Rates: pgbench's transactions "
             "a second, redis-benchmark's commands a second (the harmonic mean of its SET and GET).", "",
             "| load | configuration | rate | throughput ÷ no tracer | tool CPU µs / statement "
             "| the benchmark's records ÷ statements | losses |", "|---|---|---|---|---|---|---|"]
    raw: dict[str, list[float]] = {}
    for (load, config), runs in rows.items():
        tps = median([x["tps"] for x in runs])
        base = median([x["tps"] for x in rows[(load, "no tracer")]])
        traced = config != "no tracer"
        cpu = f"{median([x['cpu_us'] for x in runs]):.1f}" if traced else "—"
        seen = f"{median([x['seen'] for x in runs]):.3f}" if config == "statements" else "—"
        lost = "; ".join(sorted({x["lost"] for x in runs})) if traced else "—"
        lines.append(f"| {load} | {config} | {tps:.0f} | {tps / base:.3f} | {cpu} | {seen} | {lost} |")
        raw[f"{load}, {config}: rate"] = [x["tps"] for x in runs]
    lines += ["", "Reproduce (root, after `make setup-test`): `.venv/bin/python bench/db_overhead.py "
              "--out docs/performance-db.md`.", ""]
    write_report(lines, raw, "a second", ".0f", args.out, keep_sections=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
