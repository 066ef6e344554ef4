#!/usr/bin/env python3
"""What walking Python frames in the kernel costs (`profile --python`): the sampler's BPF time
per sample of a Python process 50 frames deep, with and without the walk, per interpreter;
and the whole tool's CPU at 99 Hz on a busy Python process against py-spy's at the same rate.
Prints a Markdown section.

Run as root after `make setup-test` (py-spy comes with the test extras):
    .venv/bin/python bench/python_frames.py [--rounds 3] [--seconds 3] [--append docs/performance.md]

Workloads run pinned to the last CPU, the tools pinned to CPU 0 (bench/common.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import (ROOT, WORK_CPU, Tool, bench_setup, bpf_stats_enabled, median, peer_env,
                    proc_total_cpu_seconds)
from unwind_overhead import FILTERED_S, cell, sample_cost

AGENT = str(ROOT / ".venv" / "bin" / "ebpf-otlp")
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
DEPTH = 48              # recursion levels: with <module> and the leaf, 50 Python frames
HZ_COST, HZ_CPU = 999, 99

# 3.11+ runs a Python-to-Python call in the C frame it is in: 50 Python frames over a few
# native ones, the walk's cost alone.
DEEP = """
import sys
def leaf():
    x = 0
    while True:
        for i in range(10000):
            x += i
def down(n):
    return leaf() if n == 0 else down(n - 1)
down(int(sys.argv[1]))
"""


def interpreters() -> dict[str, str]:
    found = {"3.11 (Debian)": "/usr/bin/python3.11"}
    for v in ("3.12", "3.13"):
        paths = sorted(PYENV.glob(f"{v}.*/bin/python{v}")) if PYENV.is_dir() else []
        if paths:
            found[f"{v} (pyenv)"] = str(paths[0])
    return found


def start_workload(python: str, script: Path) -> subprocess.Popen:
    p = subprocess.Popen(["taskset", "-c", str(WORK_CPU), python, str(script), str(DEPTH)])
    time.sleep(1)   # imported and down at depth
    return p


def agent(pid: int, python: bool, hz: int, tmp: Path) -> tuple[Tool, callable]:
    folded = tmp / "s.folded"
    argv = [AGENT, "profile", f"--pid={pid}", "--hz", str(hz), "-U",
            "--python" if python else "--no-python", "-o", str(folded), "--top", "0"]
    return Tool(f"ebpf-otlp {'--python' if python else '--no-python'}", argv, peer_env()), \
        lambda _out: (folded.read_text(), None)


def walk_cost(args, tmp: Path, script: Path) -> tuple[list[str], dict]:
    """Part 1: BPF ns per sample, each interpreter's workload alone (the others stopped)."""
    raw: dict[str, list[float]] = {}
    rows = []
    for name, python in interpreters().items():
        p = start_workload(python, script)
        os.kill(p.pid, signal.SIGSTOP)
        comm = os.path.basename(python)[:15]
        try:
            by: dict[bool, list[dict]] = {True: [], False: []}
            for r in range(args.rounds):
                for walk in (True, False) if r % 2 == 0 else (False, True):
                    tool, parse = agent(p.pid, walk, HZ_COST, tmp)
                    got, _ = sample_cost(tool, [(name, p.pid, comm)], args.seconds, parse)
                    by[walk].append(got[name])
        finally:
            p.kill()
            p.wait()
        on, off = [r["ns"] for r in by[True]], [r["ns"] for r in by[False]]
        walk_ns = [a - b for a, b in zip(on, off)]
        raw[f"1 {name} --python ns/sample"], raw[f"1 {name} --no-python ns/sample"] = on, off
        rows.append(f"| {name} | {median([r['frames'] for r in by[True]]):.0f} | "
                    f"{median([r['frames'] for r in by[False]]):.0f} | {cell(on)} | {cell(off)} | "
                    f"{cell(walk_ns)} | {median(walk_ns) / 50:.0f} |")
    lines = [
        "### 1. BPF time per sample, with and without the Python walk",
        "",
        f"`ebpf-otlp profile -p PID --hz {HZ_COST} -U`, `--python` against `--no-python`, on "
        f"a Python process {DEPTH} calls deep in a loop (50 Python frames over a few native "
        f"ones), {args.seconds:g} s a run, {args.rounds} runs each, alternating. As in the "
        "DWARF section: the kernel's accounting of the sampler's perf_event program "
        "(`on_sample` and what it tail-calls: the unwind steps, `py_step`), runs on the "
        f"idle CPU priced first with the target stopped ({FILTERED_S:g} s). *Frames*: the "
        "mean depth of the folded stacks (with `--python` the interpreter's frames are "
        "replaced by the Python ones).",
        "",
        "| interpreter | frames (--python) | frames (--no-python) | ns/sample --python "
        "| ns/sample --no-python | the walk, ns/sample | ns per Python frame |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Target (issue 20): at most 10 µs a sample for 50 Python frames.",
    ]
    return lines, raw


def py_spy() -> str:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else "py-spy"


def against_py_spy(args, tmp: Path, script: Path) -> tuple[list[str], dict]:
    """Part 2: each tool's own CPU, sampling the busy workload at 99 Hz for --seconds x 3."""
    python = "/usr/bin/python3.11"
    p = start_workload(python, script)
    out = tmp / "py-spy.txt"
    spy = Tool("py-spy record", [py_spy(), "record", "--rate", str(HZ_CPU), "--nonblocking",
                                 "--format", "raw", "--output", str(out), "--pid", str(p.pid)],
               peer_env(), ready=lambda pid: True)
    cpu: dict[str, list[float]] = {}
    try:
        for r in range(args.rounds):
            tools = [agent(p.pid, True, HZ_CPU, tmp)[0], agent(p.pid, False, HZ_CPU, tmp)[0], spy]
            for tool in tools[r % 3:] + tools[:r % 3]:
                tool.start()   # ready: attached (ours), or started (py-spy)
                c0, t0 = proc_total_cpu_seconds(tool.proc.pid), time.monotonic()
                time.sleep(3 * args.seconds)
                # with exited threads (ours: the helper that loads symbols during the compile)
                share = 100 * (proc_total_cpu_seconds(tool.proc.pid) - c0) / (time.monotonic() - t0)
                tool.stop()
                cpu.setdefault(tool.name, []).append(share)
    finally:
        p.kill()
        p.wait()
    lines = [
        "### 2. The tool's CPU against py-spy's",
        "",
        f"Each tool samples Debian's python3.11 running the same workload (pinned, busy) at "
        f"{HZ_CPU} Hz for {3 * args.seconds:g} s once it is attached (py-spy: started), "
        f"{args.rounds} rounds, the order rotated: its own CPU time over that time (user + "
        "system, every thread, those that exited too: /proc/PID/stat, 10 ms ticks), as a "
        "share of one core. py-spy reads the frames from outside (process_vm_readv, "
        "`--nonblocking`: the target is never paused); ebpf-otlp walks them in the kernel "
        "and reads each code object once.",
        "",
        "| tool | CPU, % of one core | ratio to py-spy (per round) |",
        "|---|---|---|",
        *(f"| `{name}` | {cell(xs, '.2f')} | "
          f"{cell([a / b for a, b in zip(xs, cpu['py-spy record'])], '.2f')} |" for name, xs in cpu.items()),
    ]
    return lines, {f"2 {k} CPU %": v for k, v in cpu.items()}


def main() -> int:
    args, tmp = bench_setup(__doc__, "performance.md", rounds=3, more=lambda ap: (
        ap.add_argument("--seconds", type=float, default=3.0, help="length of one run"),
        ap.add_argument("--append", metavar="FILE", help="also append the section to FILE")))
    script = tmp / "deep.py"
    script.write_text(DEEP)
    with bpf_stats_enabled():
        part1, raw1 = walk_cost(args, tmp, script)
    part2, raw2 = against_py_spy(args, tmp, script)
    raw = {**raw1, **raw2}
    lines = ["## Python frames: cost", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
             f"`bench/python_frames.py --rounds {args.rounds} --seconds {args.seconds:g}`; "
             f"kernel {os.uname().release}, {os.cpu_count()} CPUs.", "",
             *part1, "", *part2, "", "Raw runs:", "", "```",
             *(f"{k}: {' '.join(f'{x:.1f}' for x in v)}" for k, v in raw.items()), "```", ""]
    text = "\n".join(lines)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
