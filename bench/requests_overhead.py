#!/usr/bin/env python3
"""HTTP request tracing overhead: nginx (Debian's) on loopback under wrk, keep-alive.

Configurations, interleaved round by round: no tracer; `ebpf-otlp trace-net --protocols
none` (connections only); `ebpf-otlp trace-net` (HTTP request spans, the default). Each
at fixed rates (wrk's Lua `delay()`: each of C connections waits D ms between requests,
so at most C x 1000 / D requests a second) and unpaced. Measured: requests a second wrk
completed, the tool's CPU per request, its request records (server side) over what wrk
completed, and the drops it reports. Then a non-socket I/O workload (`dd bs=1` from
/dev/zero to /dev/null: 2 M reads and writes) with and without request tracing.

Then gRPC (HTTP/2): a grpcio client's unary calls in a row to a grpcio server, the same
three configurations: calls a second, the tool's CPU per call, records over calls, losses.

Writes a Markdown report.  Run as root:  .venv/bin/python bench/requests_overhead.py
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, bench_setup, median, proc_cpu_seconds, trace_net, write_report

NGINX_CONF = """daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello\\n"; }} }}
}}
"""
CONFIGS = {"no tracer": None, "connections only": ["--protocols", "none"], "HTTP requests": []}
GRPC_APP = ROOT / "tests" / "workloads" / "grpc_app.py"
DRAIN_S = 1.5   # trace-net drains every second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp: Path, port: int) -> subprocess.Popen:
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(d=tmp, port=port))
    server = subprocess.Popen(["/usr/sbin/nginx", "-c", str(conf), "-p", str(tmp)])
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.05)
    sys.exit(f"nginx did not start: {(tmp / 'error.log').read_text()}")


def tracer(args: list[str] | None, port: int, out: Path) -> subprocess.Popen | None:
    return None if args is None else trace_net(args, port, out)


def wrk(port: int, seconds: float, connections: int, delay_ms: float, script: Path) -> int:
    """Requests wrk completed."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s"]
    if delay_ms:
        script.write_text(f"function delay() return {delay_ms} end\n")
        args += ["-s", str(script)]
    out = subprocess.run([*args, f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                         check=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def traced(config: str, port: int, out: Path, load) -> dict:
    """`load()` (→ requests done, seconds) under `config`'s tracer: the rate and, with a
    tracer, its CPU per request, its server records over the requests, what it reported."""
    run = tracer(CONFIGS[config], port, out)
    cpu0 = proc_cpu_seconds(run.pid) if run else 0.0
    done, seconds = load()
    result = {"requests": done, "rate": done / seconds}
    if run:
        time.sleep(DRAIN_S)   # the last calls are parsed at the next drain: counted too
        cpu = proc_cpu_seconds(run.pid) - cpu0
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=300)
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        served = sum(1 for r in lines if r["type"] == "http" and r["kind"] == "server")
        result.update(cpu_us=cpu * 1e6 / done, seen=served / done, report=stdout + stderr)
    return result


def one_run(args, port: int, tmp: Path, config: str, connections: int, delay_ms: float) -> dict:
    result = traced(config, port, tmp / "net.jsonl",
                    lambda: (wrk(port, args.seconds, connections, delay_ms, tmp / "delay.lua"), args.seconds))
    dropped = re.search(r"(\d[\d,]*) request or statement bytes dropped", result.get("report", ""))
    result["dropped"] = int(dropped.group(1).replace(",", "")) if dropped else 0
    return result


def one_grpc(port: int, tmp: Path, config: str, calls: int) -> dict:
    """A grpcio client's `calls` unary calls in a row on one channel (h2c), to the grpcio
    server of tests/workloads/grpc_app.py: the client's own time for them."""
    def client() -> tuple[int, float]:
        t = time.monotonic()
        subprocess.run([sys.executable, str(GRPC_APP), "client", str(port), f"SayHello={calls}"],
                       capture_output=True, check=True, timeout=600)
        return calls, time.monotonic() - t

    result = traced(config, port, tmp / "grpc.jsonl", client)
    lost = re.search(r"losses: (.*)", result.get("report", ""))
    result["lost"] = lost.group(1).strip() if lost else "?"
    return result


def dd_seconds() -> float:
    t = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=1", "count=2000000"],
                   capture_output=True, check=True)
    return time.monotonic() - t


def main() -> int:
    def more(ap):
        ap.add_argument("--seconds", type=float, default=8.0, help="wrk run length")
        ap.add_argument("--connections", type=int, default=10)
        ap.add_argument("--delays", default="4,2,1,0", help="ms between a connection's requests; 0: unpaced")
        ap.add_argument("--grpc-calls", type=int, default=5000, help="unary gRPC calls a run")

    args, tmp = bench_setup(__doc__, "performance-requests.md", 3, more)
    if not shutil.which("wrk") or not Path("/usr/sbin/nginx").exists():
        sys.exit("bench: needs nginx and wrk (make setup-test installs them)")
    port = free_port()
    nginx = start_nginx(tmp, port)
    rows: dict[tuple[float, str], list[dict]] = {}
    try:
        for r in range(args.rounds):
            for delay in [float(d) for d in args.delays.split(",")]:
                order = list(CONFIGS)[r % 3:] + list(CONFIGS)[:r % 3]
                for config in order:
                    rows.setdefault((delay, config), []).append(
                        one_run(args, port, tmp, config, args.connections, delay))
        grpc_server = subprocess.Popen([sys.executable, str(GRPC_APP), "server"], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        grpc_port = int(grpc_server.stderr.readline().split()[1])
        grpc: dict[str, list[dict]] = {}
        for r in range(args.rounds):
            for config in list(CONFIGS)[r % 3:] + list(CONFIGS)[:r % 3]:
                grpc.setdefault(config, []).append(one_grpc(grpc_port, tmp, config, args.grpc_calls))
        grpc_server.communicate("", timeout=60)
        dd = {"no tracer": [], "HTTP requests": []}
        for r in range(args.rounds):
            dd["no tracer"].append(dd_seconds())
            run = tracer([], port, tmp / "dd.jsonl")
            dd["HTTP requests"].append(dd_seconds())
            run.send_signal(signal.SIGINT)
            run.communicate(timeout=120)
    finally:
        nginx.terminate()
        nginx.wait()

    lines = ["# Performance: HTTP request tracing (trace-net)", "",
             f"Measured by `bench/requests_overhead.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
             f"{subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout.strip()}, 2 CPUs. "
             f"nginx (1 worker, `return 200`) on loopback under `wrk -t1 -c{args.connections}` for "
             f"{args.seconds:.0f} s a run, keep-alive; {args.rounds} interleaved rounds, medians. "
             "A fixed rate: each connection waits the delay between its requests (wrk's Lua `delay()`).", "",
             "| delay ms (cap req/s) | configuration | requests/s | throughput ÷ no tracer | tool CPU µs / request "
             "| server records ÷ requests | drops reported |", "|---|---|---|---|---|---|---|"]
    raw: dict[str, list[float]] = {}
    for (delay, config), runs in rows.items():
        rate = median([x["rate"] for x in runs])
        base = median([x["rate"] for x in rows[(delay, "no tracer")]])
        cap = f"{args.connections * 1000 / delay:.0f}" if delay else "unpaced"
        cpu = f"{median([x['cpu_us'] for x in runs]):.1f}" if config != "no tracer" else "—"
        seen = f"{median([x['seen'] for x in runs]):.3f}" if config == "HTTP requests" else "—"
        dropped = f"{median([x['dropped'] for x in runs]):.0f}" if config != "no tracer" else "—"
        lines.append(f"| {delay:g} ({cap}) | {config} | {rate:.0f} | {rate / base:.3f} | {cpu} | {seen} | {dropped} |")
        raw[f"{config}, delay {delay:g} ms: requests/s"] = [x["rate"] for x in runs]
    lines += ["", f"gRPC (HTTP/2, h2c): a grpcio client's {args.grpc_calls} unary calls in a row on one channel "
              "to a grpcio server (tests/workloads/grpc_app.py), both traced; the client's own time:", "",
              "| configuration | calls/s | throughput ÷ no tracer | tool CPU µs / call | server records ÷ calls "
              "| losses |", "|---|---|---|---|---|---|"]
    base = median([x["rate"] for x in grpc["no tracer"]])
    for config, runs in grpc.items():
        rate = median([x["rate"] for x in runs])
        cpu = f"{median([x['cpu_us'] for x in runs]):.1f}" if config != "no tracer" else "—"
        seen = f"{median([x['seen'] for x in runs]):.3f}" if config == "HTTP requests" else "—"
        lost = "; ".join(sorted({x["lost"] for x in runs})) if config != "no tracer" else "—"
        lines.append(f"| {config} | {rate:.0f} | {rate / base:.3f} | {cpu} | {seen} | {lost} |")
        raw[f"grpc, {config}: calls/s"] = [x["rate"] for x in runs]
    lines += ["", "Non-socket I/O, `dd if=/dev/zero of=/dev/null bs=1 count=2000000` (2 M reads and writes):", "",
              "| configuration | seconds |", "|---|---|"]
    for config, xs in dd.items():
        lines.append(f"| {config} | {median(xs):.3f} |")
        raw[f"dd, {config}: s"] = xs
    lines += ["", "Reproduce (root, after `make setup-test`): `.venv/bin/python bench/requests_overhead.py "
              "--out docs/performance-requests.md`.", ""]
    write_report(lines, raw, "", ".1f", args.out, keep_sections=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
