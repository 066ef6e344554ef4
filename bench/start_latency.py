#!/usr/bin/env python3
"""Start-up latency: launch to attach, launch to first sample and launch to exit of
`ebpf-otlp profile --pid W --hz 99 --duration 3s` (cold and warm caches) and of BCC's
`profile-bpfcc -F 99 -p W 3`, interleaved round by round. Prints a Markdown section.

Run as root after `make setup-test`:
    .venv/bin/python bench/start_latency.py [--rounds 5] [--append docs/performance.md]

W is bench/cpu_work.c (dynamically linked to Debian's libc, whose symbols come from
libc6-dbg: what a cold symbol cache has to parse), pinned to the last CPU; the tools run
pinned to CPU 0, as in bench/profile_overhead.py. Each tool's /proc/PID is polled every
2 ms: *attach* is the first poll that finds it holding a perf_event fd
(anon_inode:[perf_event]); *first sample* the first poll that finds a BPF program of type
perf_event it holds with run_cnt > 0 (kernel.bpf_stats_enabled on for the run; tracepoint
programs, which run on any fork or exec in the system, are not counted).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (HERE, ROOT, WORK_CPU, bench_setup, bpf_prog_stats, bpf_stats_enabled, compile_c, holds_fd,
                    median, peer_env, spread)

PERF_EVENT_FD = "anon_inode:[perf_event]"
BPF_PROG_TYPE_PERF_EVENT = 7
POLL_S = 0.002
COLD, WARM, PEER = "ebpf-otlp, cold caches", "ebpf-otlp, warm caches", "profile-bpfcc"


def sampler_runs(pid: int) -> int:
    """run_cnt summed over the perf_event BPF programs a process holds (bpf_stats_enabled)."""
    return bpf_prog_stats(pid, BPF_PROG_TYPE_PERF_EVENT)[1]


def launch(argv: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run a tool to its end; seconds from just before Popen to attach, first sample, exit."""
    with open(log, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL,
                                stderr=err, env=env,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        attach = first = None
        while proc.poll() is None:
            if attach is None and holds_fd(proc.pid, PERF_EVENT_FD):
                attach = time.perf_counter() - t0
            if attach is not None and first is None and sampler_runs(proc.pid) > 0:
                first = time.perf_counter() - t0
            if first is not None:
                proc.wait()
                break
            time.sleep(POLL_S)
        end = time.perf_counter() - t0
    if proc.returncode != 0 or attach is None or first is None:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode} (attach {attach}, first {first}): "
                           f"{log.read_text()[-2000:]}")
    return {"attach": attach, "first": first, "exit": end}


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: other jobs on the machine skew timings."""
    with open("/proc/loadavg") as f:
        return " / ".join(f.read().split()[:3])


def main() -> int:
    args, tmp = bench_setup(__doc__, "performance.md", rounds=5, more=lambda ap: ap.add_argument(
        "--append", metavar="FILE", help="also append the section to FILE"))
    peer = shutil.which("profile-bpfcc")
    args.load_before = loadavg()
    if not peer:
        sys.exit("bench: profile-bpfcc not found (apt install bpfcc-tools)")
    work = compile_c(HERE / "cpu_work.c", tmp / "cpu_work")
    # Long enough to outlive every run (about 2800 rounds a second here); killed at the end.
    w = subprocess.Popen(["taskset", "-c", str(WORK_CPU), str(work), "1000000000"],
                         stdout=subprocess.DEVNULL)
    env = peer_env()
    warm_dir = tmp / "caches-warm"

    def agent(cache_dir: Path) -> tuple[list[str], dict[str, str]]:
        argv = [str(ROOT / ".venv" / "bin" / "ebpf-otlp"), "profile", "--pid", str(w.pid),
                "--hz", "99", "--duration", "3s", "-o", str(tmp / "out.pb.gz"), "--top", "0"]
        # Every per-host cache the tool keeps: symbols, unwind tables, BTF offsets.
        return argv, {**env, **{f"EBPF_OTLP_{kind}_CACHE": str(cache_dir / kind.lower())
                                for kind in ("SYMBOL", "UNWIND", "BTF")}}

    peer_cmd = ([peer, "-F", "99", "-p", str(w.pid), "3"], env)
    results: dict[str, list[dict[str, float]]] = {COLD: [], WARM: [], PEER: []}
    try:
        time.sleep(0.5)
        with bpf_stats_enabled():
            # Not measured: page cache, BCC's first compile, and the warm cache's priming run.
            launch(*agent(warm_dir), tmp / "prime.log")
            launch(*peer_cmd, tmp / "prime-peer.log")
            for r in range(args.rounds):
                cold_dir = Path(tempfile.mkdtemp(prefix="caches-cold-", dir=tmp))
                results[COLD].append(launch(*agent(cold_dir), tmp / "cold.log"))
                results[WARM].append(launch(*agent(warm_dir), tmp / "warm.log"))
                results[PEER].append(launch(*peer_cmd, tmp / "peer.log"))
                print(f"round {r + 1}/{args.rounds}: " + "; ".join(
                    f"{name}: " + " / ".join(f"{res[-1][k]:.3f}" for k in ("attach", "first", "exit"))
                    for name, res in results.items()), file=sys.stderr)
    finally:
        w.kill()
        w.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    section = report(args, results, w.pid)
    print(section)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + section)
    return 0


def report(args, results, work_pid) -> str:
    def col(name, key):
        return [r[key] * 1e3 for r in results[name]]

    def cell(name, key):
        xs = col(name, key)
        return f"{median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})"

    def ratio(name, key):
        rs = [a / b for a, b in zip(col(name, key), col(PEER, key))]
        return f"{median(rs):.2f}× ({spread(rs)})"

    lines = [
        "## Start-up: launch to attach and first sample",
        "",
        f"Measured by `bench/start_latency.py` on {time.strftime('%Y-%m-%d')}: Linux "
        f"{platform.release()}, {os.cpu_count()} CPUs, load average {args.load_before} before, "
        f"{loadavg()} after (other jobs may run on this VM; the numbers include them). "
        f"{args.rounds} interleaved rounds; each round runs `ebpf-otlp profile --pid W --hz 99 "
        "--duration 3s -o OUT.pb.gz --top 0` with fresh empty caches of symbols, unwind "
        "tables and BTF offsets (cold), then with ones primed before the rounds (warm), then `profile-bpfcc -F 99 -p W 3`. W is "
        "`bench/cpu_work.c` linked to Debian's libc (symbols from libc6-dbg), pinned to the last "
        "CPU; the tools are pinned to CPU 0. Times run from just before the tool's launch; attach "
        "is the first 2 ms poll that finds it holding a perf_event fd, first sample the first "
        "that finds one of its perf_event BPF programs with run_cnt > 0. Medians (min–max), ms.",
        "",
        "| configuration | launch to attach | launch to first sample | launch to exit |",
        "|---|---|---|---|",
    ]
    for name in results:
        lines.append(f"| {name} | {cell(name, 'attach')} | {cell(name, 'first')} "
                     f"| {cell(name, 'exit')} |")
    lines += ["", "Ratios ebpf-otlp / profile-bpfcc, median of per-round ratios (min–max):", "",
              "| caches | attach | first sample | exit |", "|---|---|---|---|"]
    for name, label in ((COLD, "cold"), (WARM, "warm")):
        lines.append(f"| {label} | {ratio(name, 'attach')} | {ratio(name, 'first')} "
                     f"| {ratio(name, 'exit')} |")
    met = all(a <= b for name in (COLD, WARM) for a, b in zip(col(name, "first"), col(PEER, "first")))
    lines += ["", "Target: launch to first sample at most profile-bpfcc's in the same run — "
              + ("met in every round." if met else "not met in every round (see the ratios)."),
              "", "Raw rounds (ms, attach / first sample / exit):", "", "```"]
    for name in results:
        lines.append(f"{name}: " + "  ".join(
            f"{r['attach'] * 1e3:.0f}/{r['first'] * 1e3:.0f}/{r['exit'] * 1e3:.0f}"
            for r in results[name]))
    lines += ["```", "", "Reproduce (root, after `make setup-test`): "
              f"`.venv/bin/python bench/start_latency.py --rounds {args.rounds}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
