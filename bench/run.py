#!/usr/bin/env python3
"""Profiler overhead benchmark: the same CPU-bound work with no profiler, under
`ebpf-otlp profile --all --hz 99`, and under BCC's `profile-bpfcc -F 99`, interleaved
round by round so drift hits every configuration alike. Also the agent's own CPU time,
RSS (anonymous and total) and time to first sample. Writes a Markdown report.

Run as root after `make setup-test`:  .venv/bin/python bench/run.py --out docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def build_workload(tmp: Path) -> Path:
    out = tmp / "cpu_work"
    subprocess.run(["cc", "-O2", "-fno-omit-frame-pointer", "-o", str(out), str(HERE / "cpu_work.c")],
                   check=True)
    return out


def run_work(binary: Path, rounds: int) -> tuple[float, float]:
    out = subprocess.run([str(binary), str(rounds)], capture_output=True, text=True, check=True)
    wall, cpu = map(float, out.stdout.split())
    return wall, cpu


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime


def proc_rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])
    return out


class Tool:
    """A profiler started before the work and stopped (SIGINT) after it."""

    def __init__(self, name: str, argv: list[str], ready: str | None):
        self.name, self.argv, self.ready = name, argv, ready

    def start(self):
        self.t0 = time.time_ns()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.err_lines: list[str] = []
        ready = threading.Event()

        def reader():
            for line in self.proc.stderr:
                self.err_lines.append(line)
                if self.ready and self.ready in line:
                    ready.set()

        threading.Thread(target=reader, daemon=True).start()
        if self.ready:
            if not ready.wait(120):
                raise RuntimeError(f"{self.name} never became ready: {''.join(self.err_lines)}")
        else:
            time.sleep(6)   # profile-bpfcc prints nothing when ready; its compile takes ~3-5 s
        time.sleep(0.5)
        self.cpu_ready = proc_cpu_seconds(self.proc.pid)
        self.t_ready = time.monotonic()
        self.peak: dict[str, int] = {}
        self._stop_sampling = threading.Event()

        def sample_rss():
            while not self._stop_sampling.wait(0.2):
                try:
                    for k, v in proc_rss_kib(self.proc.pid).items():
                        self.peak[k] = max(self.peak.get(k, 0), v)
                except OSError:
                    return

        threading.Thread(target=sample_rss, daemon=True).start()

    def stop(self) -> dict:
        steady_cpu = proc_cpu_seconds(self.proc.pid) - self.cpu_ready
        steady_wall = time.monotonic() - self.t_ready
        self._stop_sampling.set()
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=300)
        return {"steady_cpu_pct": 100 * steady_cpu / steady_wall, **self.peak, "stdout": out}


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds per configuration")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of one workload run")
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ebpf-otlp-bench-"))
    work = build_workload(tmp)
    wall, _ = run_work(work, 1000)
    rounds_per_run = max(100, int(1000 * args.seconds / wall))

    agent = [str(ROOT / ".venv" / "bin" / "ebpf-otlp"), "profile", "--all", "--hz", "99",
             "--top", "0", "-o", str(tmp / "agent.json")]
    tools = [Tool("ebpf-otlp profile --all --hz 99", agent, "sampling all processes")]
    peer = shutil.which("profile-bpfcc")
    if peer:
        tools.append(Tool("profile-bpfcc -F 99", [peer, "-F", "99", "-f"], None))

    results: dict[str, dict[str, list]] = {"none": {"wall": [], "cpu": []}}
    for t in tools:
        results[t.name] = {"wall": [], "cpu": [], "agent_cpu_pct": [], "VmRSS": [], "RssAnon": [],
                           "RssFile": [], "first_sample_ms": []}
    for r in range(args.rounds):
        w, c = run_work(work, rounds_per_run)
        results["none"]["wall"].append(w)
        results["none"]["cpu"].append(c)
        for t in tools:
            t.start()
            w, c = run_work(work, rounds_per_run)
            stats = t.stop()
            res = results[t.name]
            res["wall"].append(w)
            res["cpu"].append(c)
            res["agent_cpu_pct"].append(stats["steady_cpu_pct"])
            for k in ("VmRSS", "RssAnon", "RssFile"):
                if k in stats:
                    res[k].append(stats[k] / 1024)
            if t.name.startswith("ebpf-otlp"):
                doc = json.loads((tmp / "agent.json").read_text())
                first = doc["timing"].get("first_sample_unix_ns")
                if first:
                    res["first_sample_ms"].append((first - t.t0) / 1e6)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    base_wall = median(results["none"]["wall"])
    base_cpu = median(results["none"]["cpu"])
    lines = [
        "# Performance",
        "",
        f"Measured by `bench/run.py` on {time.strftime('%Y-%m-%d')}: Linux {platform.release()}, "
        f"{os.cpu_count()} CPUs, {args.rounds} interleaved rounds of a {args.seconds:.0f} s "
        "single-threaded CPU-bound workload (`bench/cpu_work.c`). Medians. The profilers sample "
        "every CPU at 99 Hz (software cpu-clock; this VM has no hardware counters). Agent CPU is "
        "its steady state after attach (BCC's one-off compile is excluded and shown as start-up).",
        "",
        "| configuration | workload wall s | slowdown | workload CPU s | agent CPU % of one core "
        "| agent RSS MB (anon / total) | time to first sample ms |",
        "|---|---|---|---|---|---|---|",
        f"| no profiler | {base_wall:.3f} | — | {base_cpu:.3f} | — | — | — |",
    ]
    for t in tools:
        res = results[t.name]
        wall = median(res["wall"])
        first = f"{median(res['first_sample_ms']):.0f}" if res["first_sample_ms"] else "—"
        lines.append(
            f"| `{t.name}` | {wall:.3f} | {100 * (wall / base_wall - 1):+.2f} % | "
            f"{median(res['cpu']):.3f} | {median(res['agent_cpu_pct']):.2f} | "
            f"{median(res['RssAnon']):.1f} / {median(res['VmRSS']):.1f} | {first} |")
    if len(tools) == 2:
        ours, peer_res = (results[t.name] for t in tools)
        ratio = median(ours["agent_cpu_pct"]) / max(median(peer_res["agent_cpu_pct"]), 1e-9)
        lines += ["", f"Agent CPU, ebpf-otlp / profile-bpfcc: {ratio:.2f}×. "
                      f"Anonymous RSS ratio: {median(ours['RssAnon']) / median(peer_res['RssAnon']):.2f}×."]
    lines += ["", "Raw rounds (wall seconds):", "", "```"]
    for name, res in results.items():
        lines.append(f"{name}: {' '.join(f'{x:.3f}' for x in res['wall'])}")
    lines.append("```")
    report = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
