#!/usr/bin/env python3
"""What DWARF unwinding (`profile --unwind dwarf`) costs: BPF time per sample against the
kernel's frame-pointer walker (`--unwind fp`) and BCC's profile-bpfcc; the time to build
unwind tables, cold and from the disk cache; the memory the tables take, in the kernel and
in the agent; and the whole overhead against `perf record --call-graph dwarf`. Prints a
Markdown section.

Run as root after `make setup-test`:
    .venv/bin/python bench/unwind_overhead.py [--rounds 3] [--seconds 3] [--out FILE] [--append FILE]

Workloads run pinned to the last CPU, the tools pinned to CPU 0 (bench/common.py).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import (HERE, ROOT, WORK_CPU, Tool, bench_setup, bpf_fdinfo, bpf_prog_stats,
                    bpf_stats_enabled, compile_c, holds_fd, median, peer_env, proc_cpu_seconds,
                    proc_rss_kib, proc_total_cpu_seconds, render_report, spread)

AGENT = str(ROOT / ".venv" / "bin" / "ebpf-otlp")
WORKLOADS = ROOT / "tests" / "workloads"
HZ = 999
PERF, OURS = "perf record --call-graph dwarf", "ebpf-otlp --unwind dwarf"
PERF_EVENT = 7                 # BPF_PROG_TYPE_PERF_EVENT: the sampler, one per tool
LPM_TRIE = 11                  # BPF_MAP_TYPE_LPM_TRIE: unwind_mappings
FILTERED_S = 1.5               # the target stopped: every run of the sampler is filtered out
ROW_BYTES = 8
TABLE_ROWS = 1 << 21           # unwind_rows, preallocated (unwind/unwinder.py UNWIND_ROWS)

PYTHON = "/usr/bin/python3.11"            # Debian's: static libpython, no frame pointers
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LIBPYTHON = "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"
CXX_LIB = "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1"   # C++, 117 MB; BCC maps LLVM 14, not 15

# Python 3.11 runs a Python-to-Python call inside the same C frame; going through map() at
# every level gives each Python frame its chain of native ones.
PY_DEEP = """
import sys
def leaf():
    x = 0
    while True:
        for i in range(10000):
            x += i
def down(n):
    return leaf() if n == 0 else sum(map(down, [n - 1]))
down(int(sys.argv[1]))
"""
PY_DEEP_LEVELS = 20

# The same depth in C, built with frame pointers: both walkers can follow it to the end.
C_DEEP = r"""
#include <stdlib.h>
static volatile unsigned long sink;
__attribute__((noinline)) unsigned long down(int n) {
    if (n == 0)
        for (;;)
            sink++;
    unsigned long r = down(n - 1);
    sink += r;              /* work after the call: no tail call, one frame per level */
    return r + 1;
}
int main(int argc, char **argv) { return (int)down(atoi(argv[1])); }
"""
C_DEEP_LEVELS = 100

# no_fp_chain's mid() as a fixed amount of self-timed work: it starts on a line on stdin and
# exits on the next, so a profiler attaches first and the process outlives the profiler.
GATED = r"""
#define main no_fp_chain_main
#include "no_fp_chain.c"
#undef main
#include <stdio.h>
#include "self_timed.h"
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    unsigned long t = 0;
    getchar();
    SELF_TIMED(for (long i = 0; i < n; i++) t += mid(200000));
    fflush(stdout);
    getchar();
    return t == 42;
}
"""

# Run in a fresh interpreter: how long one object's table takes, cold or from the cache.
TIME_TABLE = """
import json, resource, sys, time
from ebpf_otlp.symbolize.elf import ElfObject
from ebpf_otlp.unwind.tables import UnwindCache, load_table
path, store = sys.argv[1], sys.argv[2:]
with open(path, "rb") as f:
    build_id = ElfObject(f, path, cache=None).build_id
t0 = time.perf_counter()
table = load_table(path, build_id)
seconds = time.perf_counter() - t0
if store:   # untimed: the warm runs read it from there
    UnwindCache(store[0]).store(build_id, table)
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"s": seconds, "rows": len(table), "source": table.source, "peak_mb": peak / 1024}))
"""

# A process that maps the big objects of part 3, busy on its CPU.
CXX_HOST = f"""
import ctypes
ctypes.CDLL({LIBPYTHON!r})
ctypes.CDLL({CXX_LIB!r})
while True:
    sum(range(10000))
"""


def main() -> int:
    def options(ap):
        ap.add_argument("--seconds", type=float, default=3.0, help="sampling per measurement")
        ap.add_argument("--append", metavar="FILE", help="append the section to FILE")
        ap.add_argument("--skip", default="", help="comma-separated parts to leave out: 1,2,3,4")
        ap.set_defaults(out=None)      # --out FILE writes the section there; else printed only
    args, tmp = bench_setup(__doc__, "", rounds=3, more=options)
    skip = set(args.skip.split(","))
    env = peer_env()                   # also puts src/ on sys.path for the imports below
    # The agent's unwind tables: this bench's own cache, primed before each measurement.
    os.environ["EBPF_OTLP_UNWIND_CACHE"] = env["EBPF_OTLP_UNWIND_CACHE"] = str(tmp / "unwind-cache")
    sections, raw = [], {}
    try:
        with bpf_stats_enabled():
            # Part 2 first: it primes the cache with the big objects.
            parts = (("2", build_time), ("1", sample_costs), ("3", memory), ("4", against_perf))
            for part, run in parts:
                if part not in skip:
                    t0 = time.monotonic()
                    sections.append(run(args, tmp, env, raw))
                    print(f"part {part}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    head = ["## DWARF unwinding: cost", "",
            f"Measured by `bench/unwind_overhead.py` on {time.strftime('%Y-%m-%d')}: Linux "
            f"{platform.release()}, {os.cpu_count()} CPUs, {args.rounds} rounds, "
            f"{args.seconds:g} s of sampling per measurement; medians over rounds, min–max in "
            "brackets. Workloads pinned to the last CPU, the tools to CPU 0; events are the "
            "software cpu-clock (this VM has no hardware counters)."]
    text = render_report(head + [line for s in sections for line in ["", *s]], raw,
                         "as named", ".4g")
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text)
    return 0


# -- helpers --------------------------------------------------------------------------------

def pinned(argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", str(WORK_CPU), *map(str, argv)], **kw)


def warm_cache(pid: int) -> None:
    """Compile the tables of what a process maps into the agent's cache (untimed), so the
    agent loads them at attach as on a host where it has seen them before."""
    from ebpf_otlp.unwind.kernel_tables import warm_tables
    warm_tables(pid)


def folded_frames(text: str, comm: str) -> tuple[int, float, float]:
    """One comm's folded stacks (`comm;frame;...;frame count`): samples, frames per stack
    among those that have one, and the share without one (a tool's stack map refused it:
    "[Missed User Stack]" from profile-bpfcc)."""
    samples = frames = missed = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or stack.split(";", 1)[0] != comm:
            continue
        names = [n for n in stack.split(";")[1:] if not n.startswith("[Missed")]
        samples += int(count)
        frames += int(count) * len(names)
        missed += int(count) * (not names)
    return samples, frames / max(samples - missed, 1), missed / max(samples, 1)


def cpu_of_children() -> float:
    """User + system seconds of this process's reaped children (a tool's whole life)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cell(xs, fmt=".0f") -> str:
    return f"{median(xs):{fmt}} ({format(min(xs), fmt)}–{format(max(xs), fmt)})" if xs else "—"


def rotate(items: list, r: int) -> list:
    """Round r starts with a different item, so drift does not favour one."""
    return items[r % len(items):] + items[:r % len(items)]


# -- 1. BPF time per sample -------------------------------------------------------------------

def sample_costs(args, tmp: Path, env, raw) -> list[str]:
    """The sampler's BPF time per sample of three workloads, for each walker."""
    shallow = compile_c(WORKLOADS / "no_fp_chain.c", tmp / "no_fp_chain", "-fomit-frame-pointer")
    (tmp / "deep.c").write_text(C_DEEP)
    deep_c = compile_c(tmp / "deep.c", tmp / "deep_fp")
    workloads = {   # name: (argv, comm: how the tools' folded output names it)
        "no_fp_chain (C, -fomit-frame-pointer)": ([shallow, 10 ** 6], "no_fp_chain"),
        f"python3.11, {PY_DEEP_LEVELS} levels of recursion through map()":
            ([PYTHON, "-c", PY_DEEP, PY_DEEP_LEVELS], "python3.11"),
        f"C, {C_DEEP_LEVELS} levels of recursion, frame pointers": ([deep_c, C_DEEP_LEVELS], "deep_fp"),
    }
    procs = {name: pinned(argv) for name, (argv, _comm) in workloads.items()}
    targets = [(name, procs[name].pid, comm) for name, (_argv, comm) in workloads.items()]
    results: dict = {name: {} for name in workloads}
    tables: list[float] = []
    try:
        time.sleep(1)                       # started: python imported, stacks at depth
        for p in procs.values():
            warm_cache(p.pid)
            os.kill(p.pid, signal.SIGSTOP)
        for r in range(args.rounds):
            for label, tool, parse in rotate(sample_tools([p.pid for p in procs.values()], tmp, env), r):
                by_workload, through = sample_cost(tool, targets, args.seconds, parse)
                for name, res in by_workload.items():
                    results[name].setdefault(label, []).append(res)
                if through is not None:
                    tables.append(through)
            print(f"part 1: round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    return report_sample_costs(args, results, tables, raw)


def sample_tools(pids: list[int], tmp: Path, env) -> list:
    """(label, Tool, parse) for each walker, user stacks only, sampling `pids` at HZ; parse
    gives the folded stacks and the share of them walked through tables (None: no tables)."""
    folded, summary = tmp / "s.folded", tmp / "s.json"

    def agent(unwind):
        argv = [AGENT, "profile", *(f"--pid={p}" for p in pids), "--hz", str(HZ), "-U",
                "--unwind", unwind, "-o", str(folded), "-o", str(summary), "--top", "0"]
        return Tool(f"ebpf-otlp --unwind {unwind}", argv, env)

    def parse_agent(_stdout):
        stats = json.loads(summary.read_text())["stats"]
        through = stats["unwound"].get("through tables")
        return folded.read_text(), None if through is None else through / max(stats["processed"], 1)

    peer = [shutil.which("profile-bpfcc") or "/usr/sbin/profile-bpfcc", "-F", str(HZ), "-U", "-f",
            "-p", ",".join(map(str, pids))]
    return [("ebpf-otlp --unwind dwarf", agent("dwarf"), parse_agent),
            ("ebpf-otlp --unwind fp", agent("fp"), parse_agent),
            ("profile-bpfcc", Tool("profile-bpfcc", peer, env), lambda out: (out, None))]


def sample_cost(tool: Tool, targets: list[tuple[str, int, str]], seconds: float, parse):
    """One tool's BPF ns per sample of each target (all stopped on entry and on return).
    The sampler fires on every CPU and returns at once for other processes, about as often
    as it samples a target: so first, with the targets stopped, every run is such a
    filtered one, and gives their cost; then each target in turn runs for `seconds`, and
    its samples (by comm in the tool's folded output) are charged the time of that phase
    that its filtered runs do not account for."""
    tool.start()
    time.sleep(FILTERED_S)
    phases = [bpf_prog_stats(tool.proc.pid, PERF_EVENT)]
    for _name, pid, _comm in targets:
        os.kill(pid, signal.SIGCONT)
        time.sleep(seconds)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.1)
        phases.append(bpf_prog_stats(tool.proc.pid, PERF_EVENT))
    folded, through = parse(tool.stop()["stdout"])
    filtered = phases[0][0] / max(phases[0][1], 1)
    out = {}
    for (name, _pid, comm), (ns0, runs0), (ns1, runs1) in zip(targets, phases, phases[1:]):
        samples, frames, missed = folded_frames(folded, comm)
        others = runs1 - runs0 - samples
        out[name] = {"ns": (ns1 - ns0 - others * filtered) / max(samples, 1), "frames": frames,
                     "missed": missed, "filtered": filtered, "samples": samples}
    return out, through


def report_sample_costs(args, results, tables, raw) -> list[str]:
    lines = [
        "### 1. BPF time per sample",
        "",
        f"Each tool samples three pinned workloads at {HZ} Hz, user stacks only (`-U`; the "
        "kernel stack of a sample taken in user mode is empty for all three), one workload "
        f"running at a time for {args.seconds:g} s, the others stopped. The time is the "
        "kernel's own accounting of the sampler's perf_event program "
        "(`kernel.bpf_stats_enabled`, `run_time_ns` / `run_cnt` from the tool's fdinfo: "
        "`on_sample`, profile-bpfcc's `do_perf_event`). The program runs on both CPUs and "
        "returns at once on the idle one, about as often as it samples the workload: so "
        "each tool run first holds every workload stopped "
        f"({FILTERED_S:g} s, every run filtered out) to price such a run, and charges each "
        "workload's samples (counted in the tool's folded output) with the rest of the time "
        "its phase took. Stacks the dwarf walker took through tables: "
        f"{100 * min(tables or [0]):.1f} % in its lowest run. *Frames* "
        "is the mean depth of the folded stacks the tool wrote (of the samples that have a "
        "user stack: a stack-id map refuses a stack whose hash bucket another one holds; "
        "the walk is paid all the same). The frame-pointer walker "
        "stops early where there are no frame pointers, so its cost there is that of a "
        "short, wrong stack; the third workload, built with frame pointers, is the "
        "like-for-like case.",
        "",
        "| workload | walker | frames per stack | BPF ns per sample | ns per frame "
        "| filtered run ns |",
        "|---|---|---|---|---|---|",
    ]
    ratio_rows = []
    for name, by_tool in results.items():
        for label, rs in by_tool.items():
            ns = [r["ns"] for r in rs]
            frames, missed = median([r["frames"] for r in rs]), median([r["missed"] for r in rs])
            lost = f" ({100 * missed:.0f} % of samples without one)" if missed > 0.005 else ""
            filtered = median([r["filtered"] for r in rs])
            lines.append(f"| {name} | `{label}` | {frames:.1f}{lost} | {cell(ns)} | "
                         f"{median(ns) / max(frames, 1):.0f} | {filtered:.0f} |")
            raw[f"1 {name} {label} ns/sample"] = ns
        dwarf = [r["ns"] for r in by_tool["ebpf-otlp --unwind dwarf"]]

        def ratio(other):
            return cell([a / b["ns"] for a, b in zip(dwarf, by_tool[other])], ".2f")
        ratio_rows.append(f"| {name} | {ratio('ebpf-otlp --unwind fp')} | {ratio('profile-bpfcc')} |")
    lines += ["", "Ratios, per round (same workload process, same round):", "",
              "| workload | dwarf / fp | dwarf / profile-bpfcc |", "|---|---|---|", *ratio_rows,
              "", "Target (issue): tables ≤ 3× the frame-pointer walker's cost per sample."]
    return lines


# -- 2. Table build time ----------------------------------------------------------------------

def build_time(args, tmp: Path, _env, raw) -> list[str]:
    """compile_table cold (cache off) and from the disk cache, each in a fresh interpreter."""
    cache = os.environ["EBPF_OTLP_UNWIND_CACHE"]
    objects = {"libc.so.6": LIBC, "libpython3.11.so.1.0": LIBPYTHON, "python3.11": PYTHON,
               f"{Path(CXX_LIB).name} (C++)": CXX_LIB}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = {name: {"cold": [], "warm": []} for name in objects}

    def timed(path, cache_env, *store):
        out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", TIME_TABLE, path, *store],
                             env={**env, "EBPF_OTLP_UNWIND_CACHE": cache_env},
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    for r in range(args.rounds):
        for name, path in objects.items():
            res[name]["cold"].append(timed(path, "off", cache))
            res[name]["warm"].append(timed(path, cache))
        print(f"part 2: round {r + 1}/{args.rounds} done", file=sys.stderr)
    lines = [
        "### 2. Building the tables",
        "",
        "`load_table` on one object in a fresh interpreter (`python -c`, after its imports and "
        "the build-ID read, so only the table is timed): *cold* with the cache disabled "
        "(`EBPF_OTLP_UNWIND_CACHE=off`), compiling .eh_frame; *warm* from the disk cache "
        "(read, checked, decoded). Peak RSS is the interpreter's (~30 MB of it is Python and "
        "the imports) or that of a child it compiled in, whichever is larger. Pinned to CPU 0.",
        "",
        "| object | file MB | rows | table MB (rows × 8 B) | cold s | warm ms | peak RSS cold MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, path in objects.items():
        cold, warm = res[name]["cold"], res[name]["warm"]
        rows = cold[0]["rows"]
        lines.append(f"| {name} | {os.path.getsize(path) / 2**20:.1f} | {rows:,} | "
                     f"{rows * ROW_BYTES / 2**20:.2f} | {cell([c['s'] for c in cold], '.2f')} | "
                     f"{cell([w['s'] * 1e3 for w in warm], '.1f')} | "
                     f"{median([c['peak_mb'] for c in cold]):.0f} |")
        raw[f"2 {name} cold s"] = [c["s"] for c in cold]
        raw[f"2 {name} warm s"] = [w["s"] for w in warm]
    return lines


# -- 3. Memory ----------------------------------------------------------------------------------

def bpf_maps(pid: int) -> list[dict[str, str]]:
    """The maps a process holds (fdinfo), each with its name from bpftool."""
    names = {m["id"]: m.get("name", "") for m in
             json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True,
                                       text=True, check=True).stdout)}
    maps = bpf_fdinfo(pid, "map")
    for m in maps:
        m["name"] = names.get(int(m.get("map_id", -1)), "")
    return maps


def lpm_entries(maps: list[dict[str, str]]) -> int | None:
    """Entries in the unwind_mappings trie (bpftool dump), None without one."""
    ids = [m["map_id"] for m in maps if int(m.get("map_type", -1)) == LPM_TRIE]
    if not ids:
        return None
    out = subprocess.run(["bpftool", "-j", "map", "dump", "id", ids[0]], capture_output=True,
                         text=True, check=True).stdout
    return len(json.loads(out))


def mapped_rows(pid: int) -> dict[str, int]:
    """Rows of each file a process maps, as the agent loads them (from the primed cache)."""
    from ebpf_otlp.symbolize.elf import ElfObject
    from ebpf_otlp.unwind.tables import load_table
    with open(f"/proc/{pid}/maps") as f:
        paths = {parts[5] for parts in (line.split(None, 5) for line in f) if len(parts) == 6}
    rows = {}
    for path in sorted(p.strip() for p in paths if p.startswith("/")):
        try:
            with open(path, "rb") as s:
                build_id = ElfObject(s, path, cache=None).build_id
        except Exception:              # not ELF (locale files): no table either way
            continue
        rows[os.path.realpath(path)] = len(load_table(path, build_id))
    return rows


def memory(args, tmp: Path, env, raw) -> list[str]:
    """Kernel and agent memory while profiling a process that maps libc, libpython and a
    large C++ library, --unwind dwarf against fp; and the agent's peak on a cold cache."""
    host = pinned([PYTHON, "-c", CXX_HOST])
    res = {u: {"VmRSS": [], "RssAnon": [], "maps_mb": [], "lpm": []} for u in ("dwarf", "fp")}
    try:
        while not Path(f"/proc/{host.pid}/maps").read_text().count(CXX_LIB):
            time.sleep(0.1)
        warm_cache(host.pid)
        rows = mapped_rows(host.pid)
        names = {}
        for r in range(args.rounds):
            for unwind in rotate(["dwarf", "fp"], r):
                t = Tool(f"--unwind {unwind}", [AGENT, "profile", "--pid", str(host.pid), "--unwind",
                                                unwind, "-o", str(tmp / "m.pb.gz"), "--top", "0"], env)
                t.start()
                time.sleep(args.seconds)
                maps = bpf_maps(t.proc.pid)
                names[unwind] = {m["name"]: int(m["memlock"]) for m in maps}
                res[unwind]["maps_mb"].append(sum(int(m["memlock"]) for m in maps) / 2**20)
                res[unwind]["lpm"].append(lpm_entries(maps))
                stats = t.stop()
                for k in ("VmRSS", "RssAnon"):
                    res[unwind][k].append(stats[k] / 1024)
            print(f"part 3: round {r + 1}/{args.rounds} done", file=sys.stderr)
        cold = cold_start(host.pid, tmp, env, target=median(res["dwarf"]["lpm"]))
    finally:
        host.kill()
        host.wait()
    for unwind, by in res.items():
        for k, xs in by.items():
            if None not in xs:
                raw[f"3 --unwind {unwind} {k}"] = xs
    return report_memory(args, rows, res, names, cold)


def cold_start(pid: int, tmp: Path, env, target: float, limit_s: float = 120) -> dict:
    """The agent with an empty unwind cache: its peak RSS while it compiles the tables (and
    that of any child process it compiles in), and how long until the trie holds what a
    warm start has."""
    t = Tool("cold", [AGENT, "profile", "--pid", str(pid), "--unwind", "dwarf",
                      "-o", str(tmp / "c.pb.gz"), "--top", "0"],
             {**env, "EBPF_OTLP_UNWIND_CACHE": str(tmp / "empty-cache")})
    t.start()
    entries, waited, child_kib = None, 0.0, 0
    while waited < limit_s:
        entries = lpm_entries(bpf_maps(t.proc.pid))
        if entries is not None and entries >= target:
            break
        for _ in range(5):
            child_kib = max(child_kib, children_rss_kib(t.proc.pid))
            time.sleep(0.1)
        waited = time.monotonic() - t.t_ready
    stats = t.stop()
    return {"VmRSS": stats.get("VmRSS", 0) / 1024, "RssAnon": stats.get("RssAnon", 0) / 1024,
            "child_mb": child_kib / 1024, "entries": entries, "seconds": waited,
            "complete": entries is not None and entries >= target}


def children_rss_kib(pid: int) -> int:
    """VmRSS of a process's children (each thread's), summed (0 for none or gone)."""
    total, kids = 0, []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += f.read().split()
    except OSError:
        pass
    for kid in kids:
        try:
            total += proc_rss_kib(int(kid)).get("VmRSS", 0)
        except OSError:
            continue
    return total


def report_memory(args, rows, res, names, cold) -> list[str]:
    big = {name: rows.get(os.path.realpath(path), 0) for name, path in
           (("libc.so.6", LIBC), ("libpython3.11.so.1.0", LIBPYTHON), (Path(CXX_LIB).name, CXX_LIB))}
    total = sum(rows.values())
    lines = [
        "### 3. Memory for the tables",
        "",
        f"The profiled process is `python3.11` (Debian's) that loads `{Path(LIBPYTHON).name}` and "
        f"`{Path(CXX_LIB).name}` (LLVM 15, C++) with ctypes and spins; it maps "
        f"{len(rows)} ELF files. Kernel side: the rows each object takes in `unwind_rows` "
        f"(8 B each; the array is preallocated at {TABLE_ROWS:,} rows = "
        f"{TABLE_ROWS * ROW_BYTES / 2**20:.0f} MiB whatever is loaded), the "
        "`unwind_mappings` trie's entries for this process (bpftool dump), and all the "
        "agent's BPF maps (`memlock` in fdinfo). Agent side: its peak VmRSS / RssAnon after "
        f"attach over {args.seconds:g} s (`ebpf-otlp profile --pid P`, default 99 Hz), tables "
        "from a warm cache.",
        "",
        "| object | rows | kernel MB (rows × 8 B) |",
        "|---|---|---|",
        *(f"| {name} | {n:,} | {n * ROW_BYTES / 2**20:.2f} |" for name, n in
          [*big.items(), (f"the other {len(rows) - len(big)} files", total - sum(big.values()))]),
        f"| **all** | {total:,} ({100 * total / TABLE_ROWS:.0f} % of the array) | "
        f"{total * ROW_BYTES / 2**20:.2f} |",
        "",
        "| | `--unwind dwarf` | `--unwind fp` |",
        "|---|---|---|",
    ]
    d, f = res["dwarf"], res["fp"]
    lines += [f"| agent VmRSS MB | {cell(d['VmRSS'], '.1f')} | {cell(f['VmRSS'], '.1f')} |",
              f"| agent RssAnon MB | {cell(d['RssAnon'], '.1f')} | {cell(f['RssAnon'], '.1f')} |",
              f"| all BPF maps, memlock MB | {median(d['maps_mb']):.1f} | {median(f['maps_mb']):.1f} |"]
    for name in ("unwind_rows", "user_stacks_0", "user_stacks_1", "unwind_mappings"):
        if name in names.get("dwarf", {}):
            lines.append(f"| of which `{name}` MB | {names['dwarf'][name] / 2**20:.2f} | — |")
    lines.append(f"| `unwind_mappings` entries | {median(d['lpm']):.0f} | — |")
    lines += ["", f"Cold cache (one run, empty unwind cache): the agent's peak VmRSS "
              f"{cold['VmRSS']:.0f} MB, RssAnon {cold['RssAnon']:.0f} MB while it compiles the "
              f"tables; its compiling child processes' peak VmRSS {cold['child_mb']:.0f} MB "
              "(0: it compiled in-process); " + (f"the trie held the warm start's entries "
              f"{cold['seconds']:.0f} s after attach." if cold["complete"] else
              f"the trie still held {cold['entries']} entries (a warm start: "
              f"{median(d['lpm']):.0f}) {cold['seconds']:.0f} s after attach, when the bench gave up.")]
    return lines


# -- 4. Against perf record --call-graph dwarf ---------------------------------------------------

def against_perf(args, tmp: Path, env, raw) -> list[str]:
    """The same fixed work alone, under `perf record --call-graph dwarf` and under
    `ebpf-otlp profile --unwind dwarf`, at 99 and 999 Hz, round by round."""
    (tmp / "gated.c").write_text(GATED)
    work = compile_c(tmp / "gated.c", tmp / "gated", "-fomit-frame-pointer", f"-I{WORKLOADS}",
                     f"-I{HERE}")
    probe = run_gated(work, 20)[0]
    iters = max(20, int(20 * args.seconds / probe["wall"]))
    perf = shutil.which("perf") or "/usr/bin/perf"
    data = tmp / "perf.data"
    outputs = {PERF: data, OURS: tmp / "p.pb.gz"}

    def tool(label, pid, hz):
        if label == PERF:
            return Tool(PERF, [perf, "record", "-e", "cpu-clock", "-F", str(hz), "--call-graph",
                               "dwarf", "-p", str(pid), "-o", str(data)], env,
                        ready=lambda p: holds_fd(p, "anon_inode:[perf_event]"))
        return Tool(OURS, [AGENT, "profile", "--pid", str(pid), "--hz", str(hz), "--unwind",
                           "dwarf", "-o", str(outputs[OURS]), "--top", "0"], env)

    res: dict = {}
    for r in range(args.rounds):
        for hz in (99, HZ):
            for label in rotate(["none", PERF, OURS], r):
                row = res.setdefault(hz, {}).setdefault(label, {})
                make = None if label == "none" else (lambda pid: tool(label, pid, hz))
                times, m = run_gated(work, iters, make, prime=r == 0)
                m["wall"] = times["wall"]
                if make:
                    m["data_kb"] = outputs[label].stat().st_size / 1024
                if label == PERF:
                    m["report"] = post_process([perf, "report", "-i", str(data), "--stdio"])
                    m["script"] = post_process([perf, "script", "-i", str(data)])
                for k, v in m.items():
                    row.setdefault(k, []).append(v)
        print(f"part 4: round {r + 1}/{args.rounds} done", file=sys.stderr)
    return report_against_perf(args, res, raw)


def run_gated(work: Path, iters: int, make_tool=None, prime=False) -> tuple[dict, dict]:
    """One run of the gated workload, under a tool if given: its own (wall, cpu) seconds,
    and the tool's CPU seconds by phase. *During* is the live threads' (ns, schedstat);
    start-up and after, in 10 ms ticks, count threads that have exited too."""
    w = pinned([work, iters], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    m = {}
    try:
        if make_tool:
            if prime:
                warm_cache(w.pid)
            before = cpu_of_children()
            t = make_tool(w.pid)
            t.start()
            settle(t.proc.pid)
            m["startup_s"] = proc_total_cpu_seconds(t.proc.pid)
            live = proc_cpu_seconds(t.proc.pid)
        w.stdin.write("\n")
        w.stdin.flush()
        wall, cpu = map(float, w.stdout.readline().split())
        if make_tool:
            m["during_s"] = proc_cpu_seconds(t.proc.pid) - live
            m["during_pct"] = 100 * m["during_s"] / wall
            end = proc_total_cpu_seconds(t.proc.pid)
            t.stop()
            m["after_s"] = cpu_of_children() - before - end
        return {"wall": wall, "cpu": cpu}, m
    finally:
        w.stdin.close()
        w.wait()


def settle(pid: int, limit_s: float = 15) -> None:
    """Wait until a tool that has attached is done starting (its helper threads: symbols,
    tables), using under 2 % of a core."""
    deadline = time.monotonic() + limit_s
    cpu = proc_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        cpu, before = proc_cpu_seconds(pid), cpu
        if 0 <= cpu - before < 0.005:
            break


def post_process(argv: list[str]) -> float:
    """CPU seconds of `perf report` / `perf script` on the recording (they do the unwinding)."""
    before = cpu_of_children()
    subprocess.run(["taskset", "-c", "0", *argv], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return cpu_of_children() - before


def report_against_perf(args, res, raw) -> list[str]:
    lines = [
        "### 4. Against `perf record --call-graph dwarf`",
        "",
        "A fixed amount of no_fp_chain's work (its `mid()`, built -O2 -fomit-frame-pointer, "
        f"about {args.seconds:g} s), self-timed, pinned; the tool attaches to it by pid "
        "before it starts (it waits on stdin) and stops after it ends. Slowdown is the median "
        "of per-round ratios against the same round's run without a tool. Tool CPU in phases "
        "(the whole life from rusage): *start-up* until attached "
        "and settled (under 2 % of a core: BCC's compile, symbols and tables for ebpf-otlp), "
        "*during* the workload's run, *after* it (perf: "
        "writing perf.data and its build-id pass; ebpf-otlp: last drain, symbolization, "
        "writing pprof). perf copies 8 KiB of stack per sample and unwinds later, in "
        "`perf report` / `perf script`, timed separately. Both take user and kernel stacks.",
        "",
        "| Hz | tool | workload slowdown | CPU during, % of one core | start-up CPU s "
        "| after CPU s | perf report CPU s | perf script CPU s | output KiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for hz, by in res.items():
        base = by["none"]["wall"]
        for label, row in by.items():
            if label == "none":
                continue
            slow = [100 * (w / b - 1) for w, b in zip(row["wall"], base)]
            raw[f"4 {hz} Hz {label} slowdown %"] = slow
            raw[f"4 {hz} Hz {label} during %"] = row["during_pct"]
            lines.append(f"| {hz} | `{label}` | {median(slow):+.2f} % ({spread(slow)}) | "
                         f"{cell(row['during_pct'], '.2f')} | {median(row['startup_s']):.2f} | "
                         f"{median(row['after_s']):.2f} | "
                         f"{cell(row['report'], '.2f') if 'report' in row else '—'} | "
                         f"{cell(row['script'], '.2f') if 'script' in row else '—'} | "
                         f"{median(row['data_kb']):,.0f} |")
        perf, ours = by[PERF], by[OURS]

        def cpu(row, post=(), startup=True):
            """CPU seconds per run: sampling and finishing (and perf's post-processing)."""
            keys = ("startup_s",) * startup + ("during_s", "after_s", *post)
            return [sum(x) for x in zip(*(row[k] for k in keys))]

        def ratio(a, b):
            return cell([x / y for x, y in zip(a, b)], ".2f")
        slow_ratio = [(o / b - 1) / (p / b - 1) if p != b else float("nan")
                      for o, p, b in zip(ours["wall"], perf["wall"], base)]
        summary.append(
            f"- {hz} Hz, ebpf-otlp / perf: CPU during the run "
            f"{ratio(ours['during_s'], perf['during_s'])}×; all CPU to a symbolized profile "
            f"(perf: record + report; ebpf-otlp: launch to exit) "
            f"{ratio(cpu(ours), cpu(perf, ('report',)))}×, without start-up "
            f"{ratio(cpu(ours, startup=False), cpu(perf, ('report',), startup=False))}×; "
            f"workload slowdown {cell(slow_ratio, '.2f')}× (meaningless where the slowdowns "
            "are within the run-to-run spread).")
    return lines + ["", "Ratios, same round:", "", *summary]


if __name__ == "__main__":
    sys.exit(main())
