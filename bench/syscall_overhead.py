#!/usr/bin/env python3
"""Syscall-tracing overhead: a tight getppid loop with no tracing, under `ebpf-otlp
syscalls` (counts only, and with latency), BCC's syscount-bpfcc (and -L), `strace -c`
and `perf trace -s`, interleaved round by round. Reports the extra cost per syscall
and each tool's cost as a ratio to syscount-bpfcc -L's, plus the in-kernel time of the
BPF programs. Writes a Markdown report.

Run as root after `make setup-test`:  .venv/bin/python bench/syscall_overhead.py
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from common import (HERE, ROOT, Tool, bench_setup, bpf_stats_enabled, compile_c, median, peer_env,
                    run_work, write_report)


def main() -> int:
    def more(ap):
        ap.add_argument("--calls", type=int, default=20_000_000, help="getppid calls per run")
        ap.add_argument("--no-bpf-stats", action="store_true",
                        help="leave kernel.bpf_stats_enabled off: no per-program times, but no "
                             "accounting cost (two clock reads per program run) either")
    args, tmp = bench_setup(__doc__, "performance-syscalls.md", rounds=5, more=more)
    loop = compile_c(HERE / "loop_getppid.c", tmp / "loop")
    env = peer_env()
    agent = str(ROOT / ".venv" / "bin" / "ebpf-otlp")
    attached = [
        Tool("ebpf-otlp syscalls --no-latency",
             [agent, "syscalls", "--no-latency", "--top", "1", "-o", str(tmp / "a.json")], env),
        Tool("ebpf-otlp syscalls", [agent, "syscalls", "--top", "1", "-o", str(tmp / "b.json")], env),
        Tool("ebpf-otlp syscalls --latency-budget 0",
             [agent, "syscalls", "--latency-budget", "0", "--top", "1", "-o", str(tmp / "c.json")], env),
    ]
    floor = [sys.executable, str(HERE / "hook_floor.py")]
    attached += [Tool("floor: sys_exit hook, empty program", floor, env),
                 Tool("floor: sys_enter + sys_exit hooks, empty programs", floor + ["--enter"], env),
                 Tool("floor: sys_enter + sys_exit hooks, one clock read each",
                      floor + ["--enter", "--clock"], env)]
    peer = shutil.which("syscount-bpfcc")
    if peer:
        attached += [Tool("syscount-bpfcc", [peer], env), Tool("syscount-bpfcc -L", [peer, "-L"], env)]
    # Tools that run the workload themselves, with 1/100 of the calls (ptrace is slow).
    wrappers = {}
    if shutil.which("strace"):
        wrappers["strace -c -f"] = ["strace", "-c", "-f", "-o", "/dev/null"]
    if shutil.which("perf"):
        wrappers["perf trace -s"] = ["perf", "trace", "-s", "-o", "/dev/null", "--"]
    small = max(args.calls // 100, 10_000)

    res: dict[str, dict[str, list]] = {"none": {"ns": []}, "none-small": {"ns": []}}
    for t in attached:
        res[t.name] = {"ns": [], "bpf_ns": [], "cpu_pct": [], "timed": [], "rss": []}
    for name in wrappers:
        res[name] = {"ns": []}
    with contextlib.nullcontext() if args.no_bpf_stats else bpf_stats_enabled():
        for r in range(args.rounds):
            base, _ = run_work(loop, args.calls)
            res["none"]["ns"].append(base / args.calls * 1e9)
            base_small, _ = run_work(loop, small)
            res["none-small"]["ns"].append(base_small / small * 1e9)
            for t in attached:
                t.start()
                wall, _ = run_work(loop, args.calls)
                stats = t.stop()
                res[t.name]["ns"].append(wall / args.calls * 1e9)
                res[t.name]["bpf_ns"].append(stats["bpf_run_ns"] / args.calls)
                res[t.name]["cpu_pct"].append(stats["steady_cpu_pct"])
                if "RssAnon" in stats:
                    res[t.name]["rss"].append(stats["RssAnon"] / 1024)
                if "-o" in t.argv:
                    res[t.name]["timed"].append(timed_share(Path(t.argv[t.argv.index("-o") + 1])))
            for name, wrapper in wrappers.items():
                wall, _ = run_work(loop, small, wrapper=wrapper)
                res[name]["ns"].append(wall / small * 1e9)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    base = median(res["none"]["ns"])
    base_small = median(res["none-small"]["ns"])
    extra = {name: median(v["ns"]) - (base_small if name in wrappers else base)
             for name, v in res.items() if not name.startswith("none")}
    ref = extra.get("syscount-bpfcc -L")
    lines = [
        "# Performance: syscalls",
        "",
        f"Measured by `bench/syscall_overhead.py` on {time.strftime('%Y-%m-%d')}: Linux "
        f"{platform.release()}, {os.cpu_count()} CPUs. A tight loop of {args.calls:,} `getppid` "
        f"calls (`bench/loop_getppid.c`, pinned to one CPU), {args.rounds} interleaved rounds, "
        f"medians; `strace` and `perf trace` run the loop themselves with {small:,} calls. "
        "Every tool traces the whole system.",
        "",
        f"No tracing: {base:.1f} ns per getppid.",
        "",
        "| configuration | ns per call | extra ns per call | extra cost / syscount-bpfcc -L's "
        "| BPF ns per call (kernel's count) | agent CPU % | agent anon RSS MB | calls timed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in res.items():
        if name.startswith("none"):
            continue
        ratio = f"{extra[name] / ref:.2f}×" if ref else "—"
        bpf = f"{median(v['bpf_ns']):.0f}" if v.get("bpf_ns") and not args.no_bpf_stats else "—"
        cpu = f"{median(v['cpu_pct']):.2f}" if v.get("cpu_pct") else "—"
        timed = f"{median(v['timed']):.2%}" if v.get("timed") else "—"
        rss = f"{max(v['rss']):.1f}" if v.get("rss") else "—"
        lines.append(f"| `{name}` | {median(v['ns']):.1f} | {extra[name]:.1f} | {ratio} | {bpf} | {cpu} "
                     f"| {rss} | {timed} |")
    lines += [
        "",
        "*BPF ns per call* is the `run_time_ns` of all the tool's programs "
        "(`kernel.bpf_stats_enabled`) over the loop's calls: enter and exit hooks together. "
        "*Calls timed*: the share of the loop's getppid calls whose latency was measured "
        "(ebpf-otlp's JSON); by default the entry hook is time-shared once the syscall rate "
        "passes the 100k/s latency budget, and `--latency-budget 0` times every call. "
        "*Agent anon RSS* is the peak anonymous (heap) memory over the rounds (target ≤ 50 MB). "
        "*Extra ns per call* is end-to-end and includes the "
        "hook dispatch itself (perf-event tracepoints copy their arguments into a perf buffer; "
        "raw tracepoints do not).",
        "",
        "*floor* rows are bench/hook_floor.c: raw-tracepoint programs that do nothing (or only "
        "read the clock), the least any raw-tracepoint syscall tracer pays. Timing a call needs "
        "both hooks and two clock reads, so timing every call cannot cost less than the last "
        "floor row; ebpf-otlp times every call only while the syscall rate is under "
        "`--latency-budget` (100k/s by default), and above it attaches the entry hook for one "
        "window a second sized to the budget, so counts stay exact while the timed calls become "
        "a sample (README, syscalls).",
        "",
        "Target (issue 4): our extra cost at most half of syscount-bpfcc -L's.",
    ]
    write_report(lines, {name: v["ns"] for name, v in res.items()}, "ns per call", ".1f", args.out)
    return 0


def timed_share(json_path: Path) -> float:
    """Of the getppid calls ebpf-otlp counted, the share it timed."""
    rows = [r for r in json.loads(json_path.read_text())["stats"] if r["syscall"] == "getppid"]
    calls = sum(r["calls"] for r in rows)
    return sum(r.get("latency_ns", {}).get("timed", 0) for r in rows) / max(calls, 1)


if __name__ == "__main__":
    sys.exit(main())
