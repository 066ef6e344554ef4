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


def build_workload(tmp: Path) -> Path:
    out = tmp / "cpu_work"
    subprocess.run(["cc", "-O2", "-fno-omit-frame-pointer", "-o", str(out), str(HERE / "cpu_work.c")],
                   check=True)
    return out


WORK_CPU = os.cpu_count() - 1   # the workload has the last CPU; profilers run on CPU 0


def run_work(binary: Path, rounds: int) -> tuple[float, float]:
    out = subprocess.run(["taskset", "-c", str(WORK_CPU), str(binary), str(rounds)],
                         capture_output=True, text=True, check=True)
    wall, cpu = map(float, out.stdout.split())
    return wall, cpu


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in ns resolution (schedstat, not 10 ms ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            continue
    return total / 1e9


def bpf_prog_stats(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the BPF programs a process holds (bpf_stats_enabled)."""
    total_ns = total_cnt = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") != "anon_inode:bpf-prog":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        total_ns += int(info.get("run_time_ns", "0"))
        total_cnt += int(info.get("run_cnt", "0"))
    return total_ns, total_cnt


def holds_bpf_prog(pid: int) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-prog"
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


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

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name, self.argv, self.env = name, argv, env

    def start(self):
        self.t0 = time.time_ns()
        self.proc = subprocess.Popen(["taskset", "-c", "0", *self.argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=self.env)
        self.err_lines: list[str] = []
        threading.Thread(target=lambda: self.err_lines.extend(self.proc.stderr), daemon=True).start()
        # Ready once it holds a loaded BPF program (both tools attach right after loading).
        deadline = time.monotonic() + 120
        while not holds_bpf_prog(self.proc.pid):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: {''.join(self.err_lines)[-2000:]}")
            time.sleep(0.05)
        time.sleep(0.5)
        self.bpf_ready = bpf_prog_stats(self.proc.pid)
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
        run_ns, run_cnt = (a - b for a, b in zip(bpf_prog_stats(self.proc.pid), self.bpf_ready))
        self._stop_sampling.set()
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=300)
        return {"steady_cpu_pct": 100 * steady_cpu / steady_wall, **self.peak, "stdout": out,
                "bpf_ns_per_run": run_ns / max(run_cnt, 1),
                "bpf_cpu_pct": 100 * run_ns / 1e9 / steady_wall}


def paired_slowdown(res, none) -> str:
    """Median over rounds of (this run / the same round's run without a profiler) - 1."""
    ratios = [w / b - 1 for w, b in zip(res["wall"], none["wall"])]
    return f"{100 * median(ratios):+.2f} %"


def spread(xs) -> str:
    return f"{min(xs):.3f}–{max(xs):.3f}" if xs else "—"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9, help="rounds per configuration")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of one workload run")
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ebpf-otlp-bench-"))
    work = build_workload(tmp)
    wall, _ = run_work(work, 1000)
    rounds_per_run = max(100, int(1000 * args.seconds / wall))

    # Peers need the same kernel headers the agent prepares (none match this kernel here).
    sys.path.insert(0, str(ROOT / "src"))
    from ebpf_otlp.runtime.headers import use_headers
    use_headers()
    env = dict(os.environ)
    agent = [str(ROOT / ".venv" / "bin" / "ebpf-otlp"), "profile", "--all", "--hz", "99",
             "--top", "0", "-o", str(tmp / "agent.json")]
    tools = [Tool("ebpf-otlp profile --all --hz 99", agent, env)]
    peer = shutil.which("profile-bpfcc")
    if peer:
        tools.append(Tool("profile-bpfcc -F 99", [peer, "-F", "99", "-f"], env))
    with open("/proc/sys/kernel/bpf_stats_enabled") as f:
        stats_before = f.read().strip()
    with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
        f.write("1")
    try:
        return measure(args, work, rounds_per_run, tools, tmp)
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(stats_before)


def measure(args, work, rounds_per_run, tools, tmp) -> int:
    results: dict[str, dict[str, list]] = {"none": {"wall": [], "cpu": []}}
    for t in tools:
        results[t.name] = {"wall": [], "cpu": [], "agent_cpu_pct": [], "VmRSS": [], "RssAnon": [],
                           "RssFile": [], "first_sample_ms": [], "bpf_ns_per_run": [],
                           "bpf_cpu_pct": []}
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
            res["bpf_ns_per_run"].append(stats["bpf_ns_per_run"])
            res["bpf_cpu_pct"].append(stats["bpf_cpu_pct"])
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
        "single-threaded CPU-bound workload (`bench/cpu_work.c`) pinned to the last CPU, the "
        "profiler pinned to CPU 0. Medians; slowdown is the median of per-round ratios against "
        "the same round's run without a profiler. The profilers sample "
        "every CPU at 99 Hz (software cpu-clock; this VM has no hardware counters). Agent CPU is "
        "its steady state after attach (BCC's one-off compile is excluded and shown as start-up).",
        "",
        "| configuration | workload wall s (min–max) | slowdown | workload CPU s "
        "| agent CPU % of one core | BPF ns per sample | BPF CPU % of one core "
        "| agent RSS MB (anon / total) | time to first sample ms |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| no profiler | {base_wall:.3f} ({spread(results['none']['wall'])}) | — | {base_cpu:.3f} "
        "| — | — | — | — | — |",
    ]
    for t in tools:
        res = results[t.name]
        wall = median(res["wall"])
        first = f"{median(res['first_sample_ms']):.0f}" if res["first_sample_ms"] else "—"
        lines.append(
            f"| `{t.name}` | {wall:.3f} ({spread(res['wall'])}) | {paired_slowdown(res, results['none'])} | "
            f"{median(res['cpu']):.3f} | {median(res['agent_cpu_pct']):.2f} | "
            f"{median(res['bpf_ns_per_run']):.0f} | {median(res['bpf_cpu_pct']):.3f} | "
            f"{median(res['RssAnon']):.1f} / {median(res['VmRSS']):.1f} | {first} |")
    if len(tools) == 2:
        ours, peer_res = (results[t.name] for t in tools)
        def ratio(key):
            return median(ours[key]) / max(median(peer_res[key]), 1e-9)
        lines += ["", "Ratios, ebpf-otlp / profile-bpfcc, same run: "
                      f"workload wall time {median(ours['wall']) / median(peer_res['wall']):.4f}×, "
                      f"BPF time per sample {ratio('bpf_ns_per_run'):.2f}×, "
                      f"anonymous RSS {ratio('RssAnon'):.2f}×, total RSS {ratio('VmRSS'):.2f}×."]
    lines += ["", "How to read this:", "",
              "- *slowdown* is end-to-end and includes this VM's run-to-run noise (see the "
              "min–max spread); differences smaller than that spread are not resolved.",
              "- *BPF ns per sample* and *BPF CPU %* come from the kernel's own accounting "
              "(`kernel.bpf_stats_enabled`, `run_time_ns` of each program the tool holds): the "
              "exact in-kernel cost the sampler adds to whatever it interrupts. At 99 Hz the "
              "workload's own share of that cost is 99 × ns-per-sample, the resolved part of "
              "its slowdown.",
              "- *agent CPU* is the user-space process (all threads, from schedstat) between "
              "attach and stop; RSS is its peak, anonymous (heap) and total (including the "
              "~55 MB of LLVM that importing BCC maps).",
              "- *time to first sample* runs from launching the command to the first sample "
              "reaching user space (Python start-up, BCC compile, attach).",
              "", "Targets for `profile` (issue 2): slowdown ≤ 0.3 %, agent ≤ 0.2 % of one "
              "core, anonymous RSS ≤ 50 MB."]
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
