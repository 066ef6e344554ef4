#!/usr/bin/env python3
"""Network tracing overhead: `ebpf-otlp trace-net` against BCC's tcplife-bpfcc.

1. Connection storm: bench/conn_storm.c makes short loopback TCP connections as fast as it
   can, pinned to the last CPU (tracers on CPU 0), with no tracer, under `ebpf-otlp
   trace-net -q --top 0 -o X.jsonl` and under `tcplife-bpfcc`, interleaved round by round:
   connections made per second, the share each tracer reported, the extra wall and CPU time
   per connection, BPF time per connection (kernel.bpf_stats_enabled, per program), agent
   CPU and peak RSS.
2. Loss against rate: the same generator, unpinned, paced at fixed rates (and unpaced):
   connections reported ÷ made, and each tool's own loss report.
3. Bulk loopback transfer, pinned to the last CPU: MB/s with no tracer, `trace-net -q` and
   `trace-net -q --rtt`.

Writes a Markdown report.  Run as root:  .venv/bin/python bench/net_overhead.py
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import (HERE, ROOT, WORK_CPU, bench_setup, bpf_stats_enabled, compile_c, median,
                    peer_env, proc_cpu_seconds, PeakRss, write_report)

STORM_PORT, BULK_PORT = 47100, 47101

# Floors for the storm (run as `net_overhead.py --floor KIND`): one program on
# tcp:tcp_destroy_sock, once per socket as trace-net's reporting program, that does nothing
# (empty) or reserves and submits a record the size of trace-net's (160 bytes) to a 1 MiB
# ring buffer with the default (adaptive) wakeup, read by a BCC reader (ringbuf).
FLOOR_C = r"""
struct rec { u64 words[20]; };
BPF_RINGBUF_OUTPUT(events, 256);
TRACEPOINT_PROBE(tcp, tcp_destroy_sock) {
#ifdef RINGBUF
    struct rec *r = events.ringbuf_reserve(sizeof(struct rec));
    if (!r)
        return 0;
    r->words[0] = (u64)args->skaddr;
    events.ringbuf_submit(r, 0);
#endif
    return 0;
}
"""


def floor(kind: str) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from ebpf_otlp.runtime import loader

    loader.prepare()
    bcc = loader.import_bcc()
    bpf = bcc.BPF(text=FLOOR_C.encode(), cflags=["-DRINGBUF"] if kind == "ringbuf" else [])
    bpf["events"].open_ring_buffer(lambda ctx, data, size: None)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        bpf.ring_buffer_poll(100)
    bpf.cleanup()
    return 0


# -- tracers ------------------------------------------------------------------------------

def prog_stats(pid: int) -> dict[int, tuple[int, int]]:
    """prog_id → (run_time_ns, run_cnt) of each BPF program the process holds."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        out[int(info["prog_id"])] = (int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
    return out


def attachments(pid: int) -> int:
    """How many tracepoints (raw or not) the process has attached a BPF program to."""
    out = subprocess.run(["bpftool", "perf", "show", "--json"], capture_output=True, text=True)
    try:
        return sum(1 for a in json.loads(out.stdout or "[]") if a.get("pid") == pid)
    except json.JSONDecodeError:
        return 0


def prog_names() -> dict[int, str]:
    out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True)
    return {p["id"]: p.get("name", str(p["id"])) for p in json.loads(out.stdout or "[]")}


class Tracer:
    """A tracer pinned to CPU 0, its output to files; ready once every program it holds is
    attached (bpftool perf), stopped with SIGINT (again if it ignores the first: a BCC tool
    interrupted inside a perf-buffer callback loses the KeyboardInterrupt)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], tmp: Path):
        self.name, self.argv, self.env, self.tmp = name, argv, env, tmp
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        stem = self.tmp / f"{re.sub(r'[^a-z0-9]+', '_', self.name)}_{self.runs}"
        self.out_path, self.err_path = stem.with_suffix(".out"), stem.with_suffix(".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                ["taskset", "-c", "0", *self.argv], stdout=out, stderr=err, env=self.env,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: {self.err_path.read_text()[-2000:]}")
            progs = prog_stats(self.proc.pid)
            if progs and attachments(self.proc.pid) >= len(progs):
                break
            time.sleep(0.05)
        time.sleep(0.3)
        names = prog_names()
        self.names = {pid: names.get(pid, str(pid)) for pid in progs}
        self.prog0 = prog_stats(self.proc.pid)
        self.cpu0, self.t0 = proc_cpu_seconds(self.proc.pid), time.monotonic()
        self.rss = PeakRss(self.proc.pid, every_s=0.1)

    def stop(self) -> dict:
        cpu_run = proc_cpu_seconds(self.proc.pid) - self.cpu0
        wall_run = time.monotonic() - self.t0
        prog1 = prog_stats(self.proc.pid)
        peak = self.rss.stop()
        cpu_at_signal = proc_cpu_seconds(self.proc.pid)
        pid, sent, t_sig = self.proc.pid, 1, time.monotonic()
        os.kill(pid, signal.SIGINT)
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            waited = time.monotonic() - t_sig
            if waited > 15 * sent and sent < 3:
                os.kill(pid, signal.SIGINT)
                sent += 1
            elif waited > 90:
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        progs = {self.names.get(i, str(i)): (ns - self.prog0.get(i, (0, 0))[0],
                                             cnt - self.prog0.get(i, (0, 0))[1])
                 for i, (ns, cnt) in prog1.items()}
        return {"cpu_run": cpu_run, "wall_run": wall_run, "sigints": sent,
                "cpu_stop": usage.ru_utime + usage.ru_stime - cpu_at_signal,
                "progs": progs, "bpf_ns": sum(ns for ns, _ in progs.values()),
                "anon_kib": peak.get("RssAnon", 0), "rss_kib": peak.get("VmRSS", 0),
                "stdout": self.out_path.read_text(errors="replace"),
                "stderr": self.err_path.read_text(errors="replace")}


def otlp_counts(jsonl: Path, port: int) -> tuple[int, int]:
    """(client, server) connection records for the server's port."""
    client = server = 0
    with open(jsonl) as f:
        for line in f:
            r = json.loads(line)
            if r.get("type") != "tcp":
                continue
            if r.get("role") == "client" and r.get("peer_port") == port:
                client += 1
            elif r.get("role") == "server" and r.get("local_port") == port:
                server += 1
    return client, server


def tcplife_counts(text: str, port: int) -> tuple[int, int]:
    """tcplife prints PID COMM LADDR LPORT RADDR RPORT TX_KB RX_KB MS for each side."""
    client = server = 0
    for line in text.splitlines():
        f = line.split()
        if len(f) < 9 or not f[-6].isdigit() or not f[-4].isdigit():
            continue
        if int(f[-4]) == port:
            client += 1
        elif int(f[-6]) == port:
            server += 1
    return client, server


def losses_of(kind: str, stats: dict) -> str:
    if kind == "tcplife":
        lost = sum(int(n) for n in re.findall(r"Possibly lost (\d+) samples", stats["stderr"]))
        return f"{lost} samples lost" if lost else "none"
    found = re.findall(r"trace-net losses: (.*)", stats["stdout"] + stats["stderr"])
    return found[-1].strip() if found else "(no losses line)"


def loss_summary(reports: list[str]) -> str:
    """Each round's loss report, summed by cause: "2 of 5 rounds: 1,234 <cause>"."""
    totals: dict[str, int] = {}
    rounds = 0
    for report in reports:
        if report in ("none", "—"):
            continue
        rounds += 1
        for part in report.split("; "):
            m = re.match(r"(\d+) (.*)", part)
            cause, n = (m[2], int(m[1])) if m else (part, 0)
            totals[cause] = totals.get(cause, 0) + n
    if not rounds:
        return "none" if reports and reports[0] != "—" else "—"
    return f"{rounds} of {len(reports)} rounds: " + "; ".join(
        f"{n:,} {cause}" if n else cause for cause, n in totals.items())


# -- the generator ---------------------------------------------------------------------

def storm(binary: Path, seconds: float, clients: int, servers: int, rate: float = 0,
          cpus: str | None = None) -> dict:
    pin = ["taskset", "-c", cpus] if cpus else []
    out = subprocess.run([*pin, str(binary), "storm", str(STORM_PORT), str(seconds), str(clients),
                          str(servers), str(rate)], capture_output=True, text=True, check=True)
    made, failed, wall, cpu = out.stdout.split()
    return {"made": int(made), "failed": int(failed), "wall": float(wall), "cpu": float(cpu)}


def bulk(binary: Path, nbytes: int) -> dict:
    out = subprocess.run(["taskset", "-c", str(WORK_CPU), str(binary), "bulk", str(BULK_PORT),
                          str(nbytes)], capture_output=True, text=True, check=True)
    n, wall, cpu = out.stdout.split()
    return {"bytes": int(n), "wall": float(wall), "cpu": float(cpu)}


def irq_work_interrupts() -> int:
    """IWI in /proc/interrupts, all CPUs: how often deferred work (the wakeup of a process
    waiting on a BPF ring or perf buffer, among others) interrupted a CPU."""
    with open("/proc/interrupts") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == "IWI:":
                return sum(int(x) for x in fields[1:1 + os.cpu_count()] if x.isdigit())
    return 0


def others() -> list[str]:
    """Other benchmarks running now (they share the CPUs)."""
    out = subprocess.run(["pgrep", "-af", "bench/"], capture_output=True, text=True).stdout
    me = {str(os.getpid()), str(os.getppid())}
    return [line for line in out.splitlines()
            if line.split()[0] not in me and "net_overhead" not in line and "conn_storm" not in line]


def loadavg() -> str:
    return " / ".join(open("/proc/loadavg").read().split()[:3])


def mm(xs, fmt=".2f", scale=1.0) -> str:
    """median (min–max)"""
    if not xs:
        return "—"
    xs = [x * scale for x in xs]
    return f"{median(xs):{fmt}} ({min(xs):{fmt}}–{max(xs):{fmt}})"


# -- main ------------------------------------------------------------------------------

def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--floor":
        return floor(sys.argv[2])

    def more(ap):
        ap.add_argument("--seconds", type=float, default=5.0, help="storm length per run")
        ap.add_argument("--clients", type=int, default=2, help="client threads (storm)")
        ap.add_argument("--servers", type=int, default=2, help="server threads (storm)")
        ap.add_argument("--rates", default="2500,5000,7500,10000,15000,20000,0",
                        help="paced rates for the loss sweep, connections/s (0: unpaced)")
        ap.add_argument("--sweep-rounds", type=int, default=3)
        ap.add_argument("--sweep-clients", type=int, default=4)
        ap.add_argument("--bulk-bytes", type=int, default=8 << 30)
        ap.add_argument("--skip", default="", help="comma-separated: storm,sweep,bulk")
        ap.add_argument("--no-bpf-stats", action="store_true",
                        help="leave kernel.bpf_stats_enabled off (no per-program times)")
    args, tmp = bench_setup(__doc__, "performance-net.md", rounds=5, more=more)
    if not shutil.which("bpftool"):
        sys.exit("bench: needs bpftool (to see when a tracer has attached)")
    binary = compile_c(HERE / "conn_storm.c", tmp / "conn_storm", "-pthread")
    env = peer_env()
    peer_env_unbuffered = {**env, "PYTHONUNBUFFERED": "1"}   # a line per connection, as on a tty
    agent = str(ROOT / ".venv" / "bin" / "ebpf-otlp")
    tcplife = shutil.which("tcplife-bpfcc")
    skip = set(filter(None, args.skip.split(",")))
    seen_others: set[str] = set()
    load_before = loadavg()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    def check_others():
        seen_others.update(others())

    def otlp_tracer(tag: str, *extra: str) -> tuple[Tracer, Path]:
        out = tmp / f"{tag}.jsonl"
        return Tracer(f"ebpf-otlp {tag}", [agent, "trace-net", "-q", "--top", "0", *extra,
                                           "-o", str(out)], env, tmp), out

    lines: list[str] = []
    raw: dict[str, list[float]] = {}
    stats_ctx = contextlib.nullcontext() if args.no_bpf_stats else bpf_stats_enabled()
    with stats_ctx:
        if "storm" not in skip:
            lines += storm_phase(args, binary, otlp_tracer, tcplife, peer_env_unbuffered, tmp, raw,
                                 check_others)
        if "sweep" not in skip:
            lines += sweep_phase(args, binary, otlp_tracer, tcplife, peer_env_unbuffered, tmp,
                                 check_others)
        if "bulk" not in skip:
            lines += bulk_phase(args, binary, otlp_tracer, raw, check_others)

    load_after = loadavg()
    head = [
        "# Performance: network tracing (trace-net)",
        "",
        f"Measured by `bench/net_overhead.py` on {time.strftime('%Y-%m-%d')}: Linux "
        f"{platform.release()}, {os.cpu_count()} CPUs (a VM). Load average "
        f"{load_before} before and {load_after} after (`uptime` before: {uptime_before}).",
        "Other benchmarks seen running during the measurement: "
        + (", ".join(f"`{o}`" for o in sorted(seen_others)) if seen_others else "none") + ".",
        "Tracers are pinned to CPU 0; `kernel.bpf_stats_enabled` was "
        + ("off." if args.no_bpf_stats else
           "on throughout (it adds two clock reads to every BPF program run, for every tool)."),
        "Medians with (min–max) over interleaved rounds; ratios are taken within the same run.",
        "",
        "Reproduce (root, after `make setup-test`; needs bpfcc-tools and bpftool): "
        "`.venv/bin/python bench/net_overhead.py --out docs/performance-net.md` (about 15 "
        "minutes; `--skip storm,sweep,bulk`, `--rounds`, `--seconds` and `--rates` shorten it). "
        "Run it on an otherwise idle machine: the report lists other benchmarks it saw.",
    ]
    write_report(head + lines, raw, "per configuration, see each section", ".4g", args.out)
    return 0


def storm_phase(args, binary, otlp_tracer, tcplife, peer_env, tmp, raw, check_others) -> list[str]:
    tracer, jsonl = otlp_tracer("storm")
    configs: list[tuple[str, Tracer | None]] = [("none", None), ("ebpf-otlp", tracer)]
    if tcplife:
        configs.append(("tcplife-bpfcc", Tracer("tcplife-bpfcc", [tcplife], peer_env, tmp)))
    me = [sys.executable, str(Path(__file__).resolve())]
    for kind, label in (("empty", "floor: empty program"), ("ringbuf", "floor: ring buffer submit")):
        configs.append((label, Tracer(label, [*me, "--floor", kind], peer_env, tmp)))
    res: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for r in range(args.rounds):
        check_others()
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for name, t in order:
            if t:
                t.start()
            iwi = irq_work_interrupts()
            g = storm(binary, args.seconds, args.clients, args.servers, cpus=str(WORK_CPU))
            check_others()
            row = dict(g, rate=g["made"] / g["wall"], wall_per=g["wall"] / g["made"],
                       cpu_per=g["cpu"] / g["made"], iwi=(irq_work_interrupts() - iwi) / g["made"])
            if t:
                s = t.stop()
                row.update(s, client=float("nan"), server=float("nan"), losses="—")
                if not name.startswith("floor"):
                    kind = "tcplife" if name == "tcplife-bpfcc" else "otlp"
                    client, server = (otlp_counts(jsonl, STORM_PORT) if kind == "otlp"
                                      else tcplife_counts(s["stdout"], STORM_PORT))
                    row.update(client=client / g["made"], server=server / g["made"],
                               losses=losses_of(kind, s))
            res[name].append(row)
        print(f"storm round {r + 1}/{args.rounds} done", file=sys.stderr)

    base = res["none"]
    lines = [
        "",
        "## 1. Connection storm on loopback",
        "",
        f"`bench/conn_storm.c storm`: {args.clients} client threads connect to 127.0.0.1:"
        f"{STORM_PORT}, send 16 bytes, read the 16-byte reply and the server's close, close; "
        f"{args.servers} server threads accept, read, reply, close (server closes first). "
        f"{args.seconds:g} s per run, generator pinned to CPU {WORK_CPU}, {args.rounds} rounds, "
        "configuration order rotated each round. `ebpf-otlp trace-net -q --top 0 -o X.jsonl` and "
        "`tcplife-bpfcc` (stdout to a file, unbuffered as on a terminal) each trace the whole "
        "system. *Reported ÷ made*: records for the server's port, client side (ebpf-otlp: "
        "`role` client and `peer_port` the server's; tcplife: RPORT the server's) and server "
        "side, over the connections the generator completed.",
        "",
        "| configuration | connections/s made | reported ÷ made, client side | server side "
        "| generator wall µs / conn | generator CPU µs / conn | extra wall µs / conn "
        "| extra CPU µs / conn | BPF µs / conn | IWI / conn | agent CPU % of a core (run) "
        "| agent CPU µs / conn, run + after SIGINT | agent peak RSS MB anon / total "
        "| tool's loss report |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    extra = {}
    for name, rows in res.items():
        rate = mm([x["rate"] for x in rows], ".0f")
        wall, cpu = [x["wall_per"] * 1e6 for x in rows], [x["cpu_per"] * 1e6 for x in rows]
        raw[f"storm {name} connections/s"] = [x["rate"] for x in rows]
        if name == "none":
            lines.append(f"| no tracer | {rate} | — | — | {mm(wall)} | {mm(cpu)} | — | — | — "
                         f"| {mm([x['iwi'] for x in rows])} | — | — | — | — |")
            continue
        # Extra per connection, against the same round's run without a tracer.
        ew = [(x["wall_per"] - b["wall_per"]) * 1e6 for x, b in zip(rows, base)]
        ec = [(x["cpu_per"] - b["cpu_per"]) * 1e6 for x, b in zip(rows, base)]
        bpf = [x["bpf_ns"] / x["made"] / 1e3 for x in rows]
        agent_pct = [100 * x["cpu_run"] / x["wall_run"] for x in rows]
        agent_per = [(x["cpu_run"] + x["cpu_stop"]) / x["made"] * 1e6 for x in rows]
        agent_split = (f"{median([x['cpu_run'] / x['made'] * 1e6 for x in rows]):.1f} + "
                       f"{median([x['cpu_stop'] / x['made'] * 1e6 for x in rows]):.1f}")
        extra[name] = {"wall": ew, "cpu": ec, "bpf": bpf, "agent": agent_per,
                       "anon": [x["anon_kib"] for x in rows], "rss": [x["rss_kib"] for x in rows]}
        anon = max(x["anon_kib"] for x in rows) / 1024
        total = max(x["rss_kib"] for x in rows) / 1024
        loss = loss_summary([x["losses"] for x in rows])
        if not name.startswith("floor"):
            raw[f"storm {name} reported/made, client side"] = [x["client"] for x in rows]
        reported = ("| — | —" if name.startswith("floor") else
                    f"| {mm([x['client'] for x in rows], '.3f')} "
                    f"| {mm([x['server'] for x in rows], '.3f')}")
        lines.append(f"| `{name}` | {rate} {reported} | {mm(wall)} | {mm(cpu)} "
                     f"| {mm(ew)} | {mm(ec)} | {mm(bpf)} | {mm([x['iwi'] for x in rows])} "
                     f"| {mm(agent_pct, '.1f')} | {agent_split} = {median(agent_per):.1f} "
                     f"| {anon:.0f} / {total:.0f} | {loss} |")
    lines += ["", "*Extra* is per round (the tracer's run less the same round's run without one), "
              "then the median. *BPF µs / conn*: `run_time_ns` of every program the tool holds, "
              "over the connections made (each connection is two sockets, client and server). "
              "*IWI / conn*: irq_work interrupts (/proc/interrupts) per connection, all CPUs; "
              "a BPF program that submits to a ring or perf buffer whose reader sleeps raises "
              "one to wake it (it can land inside the program's accounted time). "
              "*floor* rows: a BCC program on tcp:tcp_destroy_sock (once per socket, like "
              "trace-net's reporting program) that is empty, or that only reserves and submits a "
              "160-byte record (trace-net's size) to a 1 MiB ring buffer with the default "
              "(adaptive) wakeup, read by a BCC reader "
              "(`net_overhead.py --floor`). "
              "*Agent CPU µs / conn* adds the CPU the tool spent after SIGINT (ebpf-otlp writes "
              "its JSON lines then) to its CPU during the run. RSS is the peak over all rounds."]
    if "ebpf-otlp" in extra and "tcplife-bpfcc" in extra:
        o, t = extra["ebpf-otlp"], extra["tcplife-bpfcc"]

        def ratio(key):
            per_round = [a / b for a, b in zip(o[key], t[key]) if b]
            return (f"{median(o[key]) / median(t[key]):.2f}× (per round {min(per_round):.2f}–"
                    f"{max(per_round):.2f})" if per_round and median(t[key]) else "—")

        lines += ["", "Ratios ebpf-otlp / tcplife-bpfcc, same run (ratio of medians; per-round "
                  "ratios in brackets). Target (issue): extra cost per connection ≤ 0.5×.", "",
                  "| extra wall / conn | extra CPU / conn | BPF time / conn | agent CPU / conn "
                  "| peak anon RSS | peak total RSS |", "|---|---|---|---|---|---|",
                  f"| {ratio('wall')} | {ratio('cpu')} | {ratio('bpf')} | {ratio('agent')} "
                  f"| {max(o['anon']) / max(t['anon']):.2f}× | {max(o['rss']) / max(t['rss']):.2f}× |"]
    # Where the BPF time goes, per program.
    for name in res:
        if name == "none":
            continue
        rows = res[name]
        progs = sorted({p for x in rows for p in x["progs"]})
        total = median([x["bpf_ns"] / x["made"] for x in rows])
        lines += ["", f"BPF programs of `{name}` (medians over rounds, per connection made):", "",
                  "| program | runs / conn | ns / run | ns / conn | share |", "|---|---|---|---|---|"]
        per = []
        for p in progs:
            ns = median([x["progs"].get(p, (0, 0))[0] / x["made"] for x in rows])
            runs = median([x["progs"].get(p, (0, 0))[1] / x["made"] for x in rows])
            per.append((ns, runs, p))
        for ns, runs, p in sorted(per, reverse=True):
            lines.append(f"| `{p}` | {runs:.2f} | {ns / runs if runs else 0:.0f} | {ns:.0f} "
                         f"| {ns / total if total else 0:.0%} |")
    return lines


def sweep_phase(args, binary, otlp_tracer, tcplife, peer_env, tmp, check_others) -> list[str]:
    rates = [float(x) for x in args.rates.split(",")]
    tracer, jsonl = otlp_tracer("sweep")
    configs: list[tuple[str, Tracer | None]] = [("none", None), ("ebpf-otlp", tracer)]
    if tcplife:
        configs.append(("tcplife-bpfcc", Tracer("tcplife-bpfcc sweep", [tcplife], peer_env, tmp)))
    res: dict[tuple[float, str], list[dict]] = {}
    for rate in rates:
        for r in range(args.sweep_rounds):
            check_others()
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for name, t in order:
                if t:
                    t.start()
                g = storm(binary, args.seconds, args.sweep_clients, args.servers, rate)
                check_others()
                row = dict(g, rate=g["made"] / g["wall"])
                if t:
                    s = t.stop()
                    kind = "tcplife" if name == "tcplife-bpfcc" else "otlp"
                    client, server = (otlp_counts(jsonl, STORM_PORT) if kind == "otlp"
                                      else tcplife_counts(s["stdout"], STORM_PORT))
                    row.update(client=client, server=server, losses=losses_of(kind, s),
                               agent_pct=100 * s["cpu_run"] / s["wall_run"])
                res.setdefault((rate, name), []).append(row)
            print(f"sweep {rate:g}/s round {r + 1}/{args.sweep_rounds} done", file=sys.stderr)

    lines = [
        "",
        "## 2. Loss against connection rate",
        "",
        f"The same generator, not pinned (both CPUs), {args.sweep_clients} client and "
        f"{args.servers} server threads, paced to a total rate (0: as fast as it can), "
        f"{args.seconds:g} s per run, {args.sweep_rounds} rounds per rate, tracers on CPU 0. "
        "*Missing*: connections made that the tool did not report, client and server side "
        "together (each connection should give two records), summed over the rounds.",
        "",
        "| target rate /s | configuration | connections/s made | missing records (of 2 × made) "
        "| worst round, client side reported ÷ made | agent CPU % | tool's loss report |",
        "|---|---|---|---|---|---|---|",
    ]
    best: dict[str, float] = {}
    for rate in rates:
        for name, _ in configs:
            rows = res[(rate, name)]
            made = mm([x["rate"] for x in rows], ".0f")
            target = f"{rate:,.0f}" if rate else "unpaced"
            if name == "none":
                lines.append(f"| {target} | no tracer | {made} | — | — | — | — |")
                continue
            missing = sum(2 * x["made"] - x["client"] - x["server"] for x in rows)
            total = sum(2 * x["made"] for x in rows)
            worst = min(x["client"] / x["made"] for x in rows)
            loss = loss_summary([x["losses"] for x in rows])
            lines.append(f"| {target} | `{name}` | {made} | {missing:,} ({missing / total:.2%}) "
                         f"| {worst:.4f} | {mm([x['agent_pct'] for x in rows], '.1f')} | {loss} |")
            if missing == 0 and all(x["losses"] == "none" for x in rows):
                best[name] = max(best.get(name, 0), median([x["rate"] for x in rows]))
    lines += ["", "Highest rate reached with nothing missing in any round: "
              + ", ".join(f"`{n}` {v:,.0f}/s" for n, v in best.items()) if best else
              "Highest rate reached with nothing missing: none of the rates tried."]
    return lines


def bulk_phase(args, binary, otlp_tracer, raw, check_others) -> list[str]:
    plain, plain_out = otlp_tracer("bulk")
    rtt, rtt_out = otlp_tracer("bulk-rtt", "--rtt")
    configs = [("none", None, None), ("trace-net -q", plain, plain_out),
               ("trace-net -q --rtt", rtt, rtt_out)]
    res: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    for r in range(args.rounds):
        check_others()
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for name, t, out in order:
            if t:
                t.start()
            g = bulk(binary, args.bulk_bytes)
            check_others()
            row = dict(g, mbps=g["bytes"] / g["wall"] / 1e6)
            if t:
                s = t.stop()
                recs = [json.loads(line) for line in open(out)]
                sent = [x.get("bytes_sent", 0) for x in recs
                        if x.get("role") == "client" and x.get("peer_port") == BULK_PORT]
                row.update(bpf_ns=s["bpf_ns"], agent_pct=100 * s["cpu_run"] / s["wall_run"],
                           seen=sent[0] if len(sent) == 1 else -1, losses=losses_of("otlp", s),
                           progs=s["progs"])
            res[name].append(row)
        print(f"bulk round {r + 1}/{args.rounds} done", file=sys.stderr)
    base = res["none"]
    lines = [
        "",
        "## 3. Bulk loopback transfer",
        "",
        f"`bench/conn_storm.c bulk`: one connection on 127.0.0.1, {args.bulk_bytes / 2**30:g} GiB "
        f"written in 128 KiB writes by one thread and read by another, both pinned to CPU "
        f"{WORK_CPU}; {args.rounds} rounds. Ratio: median of per-round ratios to the same "
        "round's run without a tracer.",
        "",
        "| configuration | MB/s | ratio to no tracer | BPF ms per GB | tcp_probe runs per MB "
        "| agent CPU % | bytes_sent reported = written | tool's loss report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, _, _ in configs:
        rows = res[name]
        raw[f"bulk {name} MB/s"] = [x["mbps"] for x in rows]
        if name == "none":
            lines.append(f"| no tracer | {mm([x['mbps'] for x in rows], '.0f')} | — | — | — | — "
                         "| — | — |")
            continue
        ratios = [x["mbps"] / b["mbps"] for x, b in zip(rows, base)]
        gb = [x["bytes"] / 1e9 for x in rows]
        probe = [sum(cnt for p, (_, cnt) in x["progs"].items() if "tcp_probe" in p)
                 / (x["bytes"] / 1e6) for x in rows]
        ok = sum(x["seen"] == x["bytes"] for x in rows)
        loss = loss_summary([x["losses"] for x in rows])
        bpf_per_gb = [x["bpf_ns"] / 1e6 / g for x, g in zip(rows, gb)]
        lines.append(f"| `{name}` | {mm([x['mbps'] for x in rows], '.0f')} "
                     f"| {mm(ratios, '.3f')} | {mm(bpf_per_gb, '.2f')} "
                     f"| {mm(probe, '.1f')} | {mm([x['agent_pct'] for x in rows], '.2f')} "
                     f"| {ok}/{len(rows)} | {loss} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
