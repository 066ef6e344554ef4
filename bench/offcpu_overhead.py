#!/usr/bin/env python3
"""Off-CPU profiling overhead: a pipe ping-pong between two threads on one CPU (two
context switches per round trip) with no tracing, under `ebpf-otlp profile --off-cpu`
and under `perf record -e sched:sched_switch -g -a`, interleaved round by round. Reports
the extra cost per context switch and ours as a ratio to perf's, plus the in-kernel time
of the BPF programs. Writes a Markdown report.

Run as root after `make setup-test`:  .venv/bin/python bench/offcpu_overhead.py
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time

from common import (HERE, ROOT, Tool, bench_setup, bpf_stats_enabled, compile_c, holds_fd, median,
                    peer_env, run_work, write_report)


def perf_ready(pid: int) -> bool:
    """perf record holds no BPF program: ready once it has opened its events."""
    return holds_fd(pid, "anon_inode:[perf_event]")


def main() -> int:
    args, tmp = bench_setup(__doc__, "performance-offcpu.md", rounds=5, more=lambda ap: ap.add_argument(
        "--trips", type=int, default=300_000, help="round trips per run"))
    work = compile_c(HERE / "pingpong.c", tmp / "pingpong", "-pthread")
    env = peer_env()
    agent = str(ROOT / ".venv" / "bin" / "ebpf-otlp")
    off_cpu = [agent, "profile", "--off-cpu", "--all", "--top", "0", "-o", str(tmp / "off.pb.gz")]
    exact = off_cpu + ["--switch-budget", "0"]
    tools = [Tool("ebpf-otlp profile --off-cpu --all", off_cpu, env),
             Tool("ebpf-otlp profile --off-cpu --all --switch-budget 0", exact, env),
             Tool("... --switch-budget 0 --user-only", exact + ["--user-only"], env),
             Tool("... --switch-budget 0 --kernel-only", exact + ["--kernel-only"], env)]
    # BCC's offcputime-bpfcc needs a kprobe on finish_task_switch, which kernels without
    # kprobes (these VMs) refuse; perf recording every switch with its stack is the way
    # without BPF, and the reference here.
    if shutil.which("perf"):
        tools.append(Tool("perf record -e sched:sched_switch -g -a",
                          ["perf", "record", "-q", "-e", "sched:sched_switch", "-g", "-a",
                           "-o", str(tmp / "perf.data")], env, ready=perf_ready))
    switches = 2 * args.trips
    res: dict[str, dict[str, list]] = {"none": {"ns": []}}
    for t in tools:
        res[t.name] = {"ns": [], "bpf_ns": [], "cpu_pct": [], "rss": []}
    with bpf_stats_enabled():
        for r in range(args.rounds):
            wall, _ = run_work(work, args.trips)
            res["none"]["ns"].append(wall / switches * 1e9)
            for t in tools:
                t.start()
                wall, _ = run_work(work, args.trips)
                stats = t.stop()
                res[t.name]["ns"].append(wall / switches * 1e9)
                res[t.name]["bpf_ns"].append(stats["bpf_run_ns"] / switches)
                res[t.name]["cpu_pct"].append(stats["steady_cpu_pct"])
                res[t.name]["rss"].append(stats.get("RssAnon", 0) / 1024)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    base = median(res["none"]["ns"])
    extra = {name: median(v["ns"]) - base for name, v in res.items() if name != "none"}
    ref = extra.get("perf record -e sched:sched_switch -g -a")
    lines = [
        "# Performance: off-CPU profiling",
        "",
        f"Measured by `bench/offcpu_overhead.py` on {time.strftime('%Y-%m-%d')}: Linux "
        f"{platform.release()}, {os.cpu_count()} CPUs. Two threads ping-pong a byte through "
        f"pipes {args.trips:,} times on one CPU (`bench/pingpong.c`): {switches:,} context "
        f"switches a run. {args.rounds} interleaved rounds, medians. Both tools trace every "
        "process, with user and kernel stacks.",
        "",
        f"No tracing: {base:.0f} ns per context switch.",
        "",
        "| configuration | ns per switch | extra ns per switch | extra cost / perf record's "
        "| BPF ns per switch (kernel's count) | agent CPU % | agent anon RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in res.items():
        if name == "none":
            continue
        ratio = f"{extra[name] / ref:.2f}×" if ref else "—"
        lines.append(f"| `{name}` | {median(v['ns']):.0f} | {extra[name]:.0f} | {ratio} "
                     f"| {median(v['bpf_ns']):.0f} | {median(v['cpu_pct']):.2f} | {max(v['rss']):.1f} |")
    lines += [
        "",
        "*BPF ns per switch* is the `run_time_ns` of the tool's programs (`kernel.bpf_stats_enabled`) "
        "over the workload's switches; other processes' switches are counted too, so it is an "
        "upper bound. BCC's `offcputime-bpfcc` would be the natural peer, but it hooks "
        "`finish_task_switch` with a kprobe and this kernel has none; `perf record` of every "
        "`sched_switch` with its call graph is what one uses without BPF, so it is the reference.",
        "",
        "Where the time goes: the `--user-only` and `--kernel-only` rows split it between the "
        "two stack walks taken as each thread leaves the CPU (the kernel one, through the ORC "
        "unwinder, is the dearer). Walking both at every switch (`--switch-budget 0`) costs "
        "about what perf costs in the kernel, but ebpf-otlp adds them up in the kernel where "
        "perf writes each one out, hence perf's far higher agent CPU (and a perf.data file "
        "that grows with every switch). By default ebpf-otlp walks every switch only while the "
        "traced threads switch fewer than 5,000 times a second; this workload switches about "
        "500,000 times a second, so a random 1 % or so is walked and weighed up, and what "
        "remains is the cost of the hook itself.",
    ]
    write_report(lines, {name: v["ns"] for name, v in res.items()}, "ns per switch", ".0f", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
