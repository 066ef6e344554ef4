#!/usr/bin/env python3
"""Symbolizing and encoding 10,000 distinct stacks: Symbolizer() + remember(pid) +
symbolize(), building the Profile, pprof encode, and OTLP encode, each timed, with a cold
(fresh, empty) and a warm on-disk symbol cache. Prints a Markdown section.

Run as root after `make setup-test`:
    .venv/bin/python bench/symbolize_encode.py [--repeats 5] [--append docs/performance.md]

The stacks are synthetic but resolve like real ones: user addresses drawn at random inside
the r-xp file mappings of a live `/usr/bin/python3 -c 'time.sleep()'` (its python3.11 binary,
Debian's libc, with symbols from libc6-dbg, ld.so, libm, libz, libexpat), 8–20 frames, leaf
first; kernel addresses inside /proc/kallsyms text symbols, 2–6 frames. Frames come from a
pool of distinct addresses (--pool user addresses, a tenth as many kernel ones; 0: every
frame a fresh address). Files are in the page cache: these are CPU costs, not disk reads.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import median, spread  # noqa: E402

from ebpf_otlp.export import otlp_profiles, pprof  # noqa: E402
from ebpf_otlp.export.resource import build_resource  # noqa: E402
from ebpf_otlp.records import Profile, RawStackSample, cpu_shape  # noqa: E402
from ebpf_otlp.symbolize import symcache  # noqa: E402
from ebpf_otlp.symbolize.symbolizer import Symbolizer  # noqa: E402

TARGET_S = 0.5
STAGES = ("Symbolizer()", "remember(pid)", "symbolize()", "Profile(...)", "pprof.encode")
PREPARE = "prepare_symbols()"   # in a run it overlaps the BPF compile: not in the total
OTLP = "otlp_profiles.encode"
SEED = 20261122


def exec_mappings(pid: int) -> list[tuple[int, int, str]]:
    """(start, end, path) of the process's r-xp file mappings."""
    out = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[1] == "r-xp" and parts[5].startswith("/"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                out.append((start, end, parts[5].strip()))
    return out


def kernel_text() -> list[tuple[int, int]]:
    """(start, length up to the next symbol) of the kernel's text symbols, modules excluded."""
    addrs = []
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tT" and int(parts[0], 16):
                addrs.append(int(parts[0], 16))
    addrs.sort()
    return [(a, min(b - a, 256)) for a, b in zip(addrs, addrs[1:]) if b > a]


def make_stacks(pid: int, n: int, pool: int, rng: random.Random) -> list[RawStackSample]:
    maps = exec_mappings(pid)
    libc = [m for m in maps if "/libc.so" in m[2]]
    exe = [m for m in maps if "/python3" in m[2]]
    rest = [m for m in maps if m not in libc and m not in exe]
    ktext = kernel_text()

    def user_addr() -> int:   # 45 % libc, 45 % the python binary, 10 % the other libraries
        group = rng.choices((libc, exe, rest or libc), (45, 45, 10))[0]
        start, end, _ = rng.choice(group)
        return rng.randrange(start, end)

    def kernel_addr() -> int:
        start, length = rng.choice(ktext)
        return start + rng.randrange(length)

    draw_user, draw_kernel = user_addr, kernel_addr
    if pool:
        upool = [user_addr() for _ in range(pool)]
        kpool = [kernel_addr() for _ in range(max(1, pool // 10))]

        def draw_user() -> int:
            return rng.choice(upool)

        def draw_kernel() -> int:
            return rng.choice(kpool)

    stacks: dict[RawStackSample, None] = {}   # distinct stacks, in the order drawn
    while len(stacks) < n:
        raw = RawStackSample(pid, pid, "python3",
                             tuple(draw_user() for _ in range(rng.randint(8, 20))),
                             tuple(draw_kernel() for _ in range(rng.randint(2, 6))))
        stacks[raw] = None
    return list(stacks)


def run_once(pid: int, stacks: list[RawStackSample], cache_dir: str,
             profiler: cProfile.Profile | None = None) -> tuple[dict[str, float], list]:
    """One pass through every stage, timed with perf_counter; the symbolized samples."""
    os.environ[symcache.ENV] = cache_dir        # read by symcache.default_cache() at load time
    times: dict[str, float] = {}
    counts = {raw: (1, 10101010) for raw in stacks}
    gc.collect()                                # no garbage of the previous pass to collect
    if profiler:
        profiler.enable()
    t = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[stage] = now - t
        t = now

    sym = Symbolizer()
    lap("Symbolizer()")
    if not sym.remember(pid):
        raise RuntimeError(f"process {pid} is gone")
    lap("remember(pid)")
    sym.prepare_symbols()
    lap(PREPARE)
    samples = sym.symbolize(counts)
    lap("symbolize()")
    profile = Profile(samples, start_ns=time.time_ns(), duration_ns=60_000_000_000, **cpu_shape(99))
    lap("Profile(...)")
    pprof.encode(profile)
    lap("pprof.encode")
    resource = build_resource()
    t = time.perf_counter()
    otlp_profiles.encode(profile, resource)
    lap(OTLP)
    if profiler:
        profiler.disable()
    times["total"] = sum(times[s] for s in STAGES)
    return times, samples


def hot_spots(pid, stacks, cache_dir, limit: int) -> str:
    prof = cProfile.Profile()
    run_once(pid, stacks, cache_dir, prof)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: other jobs on the machine skew timings."""
    with open("/proc/loadavg") as f:
        return " / ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stacks", type=int, default=10_000)
    ap.add_argument("--pool", type=int, default=20_000,
                    help="distinct user addresses the stacks draw from (0: all fresh)")
    ap.add_argument("--append", metavar="FILE", help="also append the section to FILE")
    ap.add_argument("--hot-spots", type=int, default=25, metavar="N",
                    help="past the target, print the N functions with most own time (cProfile)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ebpf-otlp-bench-"))
    args.load_before = loadavg()
    target = subprocess.Popen(["/usr/bin/python3", "-c", "import time; time.sleep(3600)"])
    try:
        time.sleep(0.5)
        rng = random.Random(SEED)
        stacks = make_stacks(target.pid, args.stacks, args.pool, rng)
        warm_dir = str(tmp / "warm")
        facts = describe(run_once(target.pid, stacks, warm_dir)[1])   # primes the warm cache
        results: dict[str, list[dict[str, float]]] = {"cold": [], "warm": []}
        for r in range(args.repeats):
            cold_dir = tempfile.mkdtemp(dir=tmp)
            results["cold"].append(run_once(target.pid, stacks, cold_dir)[0])
            if not os.listdir(cold_dir):
                raise RuntimeError("the cold pass did not use its symbol cache directory")
            results["warm"].append(run_once(target.pid, stacks, warm_dir)[0])
            print(f"repeat {r + 1}/{args.repeats}: cold {results['cold'][-1]['total']:.3f} s, "
                  f"warm {results['warm'][-1]['total']:.3f} s", file=sys.stderr)
        spots = {}
        for label in results:
            if median([x["total"] for x in results[label]]) > TARGET_S and args.hot_spots:
                spots[label] = hot_spots(target.pid, stacks,
                                         warm_dir if label == "warm" else tempfile.mkdtemp(dir=tmp),
                                         args.hot_spots)
    finally:
        target.kill()
        target.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    section = report(args, facts, results)
    print(section)
    for label, text in spots.items():
        print(f"\ncProfile, {label} cache, by own time:\n{text}", file=sys.stderr)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + section)
    return 0


def describe(samples) -> dict:
    frames = [f for s in samples for f in s.frames]
    user = [f for f in frames if not f.kernel]
    return {"stacks": len(samples), "frames": len(frames),
            "addresses": len({(f.kernel, f.address) for f in frames}),
            "functions": len({(f.module, f.function) for f in frames if "+0x" not in f.function}),
            "named": sum("+0x" not in f.function for f in user) / max(len(user), 1)}


def report(args, facts, results) -> str:
    lines = [
        f"## Symbolizing and encoding {args.stacks:,} stacks",
        "",
        f"Measured by `bench/symbolize_encode.py` on {time.strftime('%Y-%m-%d')}: Linux "
        f"{platform.release()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load "
        f"average {args.load_before} before, {loadavg()} after (other jobs may run on this VM). "
        f"{facts['stacks']:,} distinct synthetic stacks of one live `/usr/bin/python3` "
        f"({facts['frames']:,} frames, {facts['addresses']:,} distinct addresses, "
        f"{facts['functions']:,} distinct functions; {100 * facts['named']:.0f} % of user frames "
        "named, the rest static functions of the stripped python3.11), user frames in its "
        "python3.11 binary, libc (libc6-dbg symbols) and the other libraries it maps, kernel "
        f"frames in /proc/kallsyms text. {args.repeats} repeats each, cold (a fresh empty "
        "`EBPF_OTLP_SYMBOL_CACHE`) and warm (one primed before) alternating, in one process; "
        "`time.perf_counter` per stage. Medians (min–max), ms.",
        "",
        "| stage | cold cache | warm cache |",
        "|---|---|---|",
    ]

    def cell(label, stage):
        xs = [x[stage] * 1e3 for x in results[label]]
        fmt = ".1f" if median(xs) < 10 else ".0f"
        return f"{median(xs):{fmt}} ({min(xs):{fmt}}–{max(xs):{fmt}})"

    for stage in (*STAGES, "total"):
        name = f"**total** (symbolize + pprof; target ≤ {TARGET_S * 1e3:.0f})" if stage == "total" \
            else f"`{stage}`"
        lines.append(f"| {name} | {cell('cold', stage)} | {cell('warm', stage)} |")
    lines.append(f"| `{PREPARE}` (not in the total: in a run it overlaps the BPF compile) | "
                 f"{cell('cold', PREPARE)} | {cell('warm', PREPARE)} |")
    lines.append(f"| `{OTLP}` (not in the total) | {cell('cold', OTLP)} | {cell('warm', OTLP)} |")
    ratios = [w["total"] / c["total"] for c, w in zip(results["cold"], results["warm"])]
    lines += ["", f"Warm / cold total, median of per-repeat ratios: {median(ratios):.2f}× "
              f"({spread(ratios)}).", "",
              "Reproduce (root, after `make setup-test`): `.venv/bin/python "
              f"bench/symbolize_encode.py --repeats {args.repeats} --pool {args.pool}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
