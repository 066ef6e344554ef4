"""memleak live: a program that leaks known blocks from one function and churns many more
from another; the leak report, the heap profile, pprof and OTLP against what it did."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from support.collector import GrpcCollector
from conftest import ROOT, agent, agent_around, compile_c, in_pid_namespace, need_tool
from ebpf_otlp.export.otlp_profiles import decode_stacks
from support.pprof import load_pprof

pytestmark = pytest.mark.live

LEAKS, SIZE, CHURNS = 2000, 4096, 200_000
HEAP_TYPES = ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space",
              "peak_inuse_objects", "peak_inuse_space"]   # Go's four, then at the peak


@pytest.fixture(scope="module")
def leaker(tmp_path_factory):
    return compile_c("leaker.c", tmp_path_factory.mktemp("leak") / "leaker")


def run_leaker(binary, tmp_path, *args):
    r = agent("memleak", "--min-age", "1s", "-o", str(tmp_path / "heap.pb.gz"),
              "-o", str(tmp_path / "heap.json"), *args,
              "--", str(binary), str(LEAKS), str(SIZE), str(CHURNS), "2.5", "go")
    assert r.returncode == 0, r.stderr
    return r, json.loads((tmp_path / "heap.json").read_text())


def by_leaf(doc, name, value):
    i = [t["type"] for t in doc["sample_types"]].index(value)
    return sum(s["values"][i] for s in doc["samples"] if s["frames"] and s["frames"][0]["function"] == name)


def test_sampled_leak_report_and_heap_profile(leaker, tmp_path):
    """Sampled every ~8 KiB: the leaking function (with its caller) tops the leak report,
    its estimated bytes within 10 % of the truth; the churning function's in-use space is
    near zero while its allocated space is within 10 % of what it allocated."""
    r, doc = run_leaker(leaker, tmp_path, "--sample-bytes", "8KiB")
    top = doc["leaks"][0]
    assert top["frames"][:2] == ["leak", "main"], top["frames"]
    assert abs(top["bytes"] - LEAKS * SIZE) < 0.10 * LEAKS * SIZE, top
    churn_alloc = by_leaf(doc, "churn", "alloc_space")
    assert abs(churn_alloc - CHURNS * 64) < 0.10 * CHURNS * 64, churn_alloc
    assert by_leaf(doc, "churn", "inuse_space") < 0.02 * CHURNS * 64
    assert doc["default_sample_type"] == "inuse_space" and doc["estimated"] is True
    assert "estimated" in r.stderr and "leak ← main" in r.stderr   # launch mode: stdout is the command's
    assert "free+3" in r.stderr   # past the single-stepped `test %rdi,%rdi`
    assert "return probes on sampled calls only (uprobe sessions)" in r.stderr   # Linux 6.13+


def test_the_peak_of_a_program_that_frees_all_before_it_exits(tmp_path):
    """hold() keeps 20 MiB for 2 s and frees it; then nothing is in use, as in an interpreter
    after its teardown. The peak finds the 20 MiB at hold() although no drain (every 10 s)
    came while they were held; in use at the end is none of it."""
    binary = compile_c("peak_then_free.c", tmp_path / "peak_then_free")
    out = tmp_path / "heap.json"
    r = agent("memleak", "--sample-bytes", "8KiB", "-o", str(out), "-o", str(tmp_path / "heap.pb.gz"),
              "--", str(binary), "20", "2", "1")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    mib = 1 << 20
    peak = by_leaf(doc, "hold", "peak_inuse_space")
    assert abs(peak - 20 * mib) < 0.10 * 20 * mib, peak
    assert by_leaf(doc, "hold", "inuse_space") == 0
    assert doc["totals"]["inuse_space"] < 1 * mib, doc["totals"]
    assert doc["totals"]["peak_inuse_space"] >= peak and doc["peak_unix_ns"] > 0
    summary = next(line for line in r.stderr.splitlines() if line.startswith("allocated"))
    at_peak, at_end = re.search(r"in use ([\d.]+) MiB at the peak \([\d.]+ s in\), ([\d.]+) MiB at the end",
                                summary).groups()
    assert abs(float(at_peak) - 20) < 2 and float(at_end) < 1, summary
    assert "In use at the peak" in r.stderr and "hold ← main" in r.stderr
    prof = load_pprof(tmp_path / "heap.pb.gz")
    assert [prof.string_table[t.type] for t in prof.sample_type] == HEAP_TYPES


def test_every_call_is_exact(leaker, tmp_path):
    _, doc = run_leaker(leaker, tmp_path, "--every-call")
    assert by_leaf(doc, "leak", "alloc_objects") == LEAKS
    assert by_leaf(doc, "leak", "inuse_space") == LEAKS * SIZE
    assert by_leaf(doc, "churn", "alloc_objects") == CHURNS
    assert by_leaf(doc, "churn", "inuse_objects") == 0
    assert doc["leaks"][0]["objects"] == LEAKS and doc["estimated"] is False


def test_googles_pprof_reads_the_heap_profile(leaker, tmp_path):
    tool = need_tool("pprof", str(ROOT / ".tools" / "pprof"))
    run_leaker(leaker, tmp_path, "--sample-bytes", "8KiB")
    for index, top_fn in (("inuse_space", "leak"), ("alloc_space", "churn")):
        out = subprocess.run([tool, f"-sample_index={index}", "-top", str(tmp_path / "heap.pb.gz")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"Type: {index}" in out.stdout
        first = next(line for line in out.stdout.splitlines() if re.match(r"\s*[\d.]+\w*B?\s+[\d.]+%", line))
        assert first.split()[-1] == top_fn, out.stdout
    prof = load_pprof(tmp_path / "heap.pb.gz")
    s = prof.string_table
    assert [s[t.type] for t in prof.sample_type] == HEAP_TYPES
    assert prof.period == 8192 and s[prof.period_type.type] == "space"


def test_otlp_profiles_reach_the_collector(leaker, tmp_path):
    with GrpcCollector() as col:
        r = agent("memleak", "--sample-bytes", "8KiB", "--otlp-endpoint", col.endpoint,
                  "--", str(leaker), str(LEAKS), str(SIZE), str(CHURNS), "0.5", "go")
        assert r.returncode == 0, r.stderr
        [req] = col.received["profiles"]
    s = req.dictionary.string_table
    types = [s[p.sample_type.type_strindex] for rp in req.resource_profiles
             for sp in rp.scope_profiles for p in sp.profiles]
    assert types == HEAP_TYPES
    inuse = decode_stacks(req, "inuse_space")
    leak = sum(v for (_pid, stack), v in inuse.items() if stack and stack[-1] == "leak")
    assert abs(leak - LEAKS * SIZE) < 0.15 * LEAKS * SIZE


def test_a_static_executable_is_its_own_allocator(tmp_path):
    """A static executable maps no libc and exports nothing: --lib names it, and its malloc
    and free come from its .symtab; the leak is found by its function's name. (Its first
    stacks may be walked before its unwind tables arrive, and end sooner: rows by
    allocating function and caller are summed.)"""
    static = compile_c("leaker.c", tmp_path / "leaker_static", "-static")
    r, doc = run_leaker(static, tmp_path, "--sample-bytes", "8KiB", "--lib", str(static))
    leaked = sum(row["bytes"] for row in doc["leaks"] if row["frames"][:2] == ["leak", "main"])
    assert abs(leaked - LEAKS * SIZE) < 0.10 * LEAKS * SIZE, [(row["bytes"], row["frames"]) for row in doc["leaks"]]
    assert by_leaf(doc, "churn", "inuse_space") < 0.02 * CHURNS * 64   # its free is probed too
    assert f"probes on {static}" in r.stderr and "free+3" in r.stderr


# Inside the namespace: the leaker started there, memleak attached to it by its pid there.
IN_NAMESPACE = """
import subprocess, sys
sys.path.insert(0, sys.argv[3])
from conftest import agent_around
work = subprocess.Popen([sys.argv[1], sys.argv[4], sys.argv[5], "1000", "2.5"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
agent_around(work, "tracing", "memleak", "--pid", str(work.pid), "--min-age", "1s",
             "--sample-bytes", "8KiB", "-o", sys.argv[2])
print("inner pid", work.pid)
"""


def test_memleak_by_pid_inside_a_pid_namespace(leaker, tmp_path):
    """ebpf-otlp in its own pid namespace, as in a container: the pid given is that
    namespace's, and the leak is found under it."""
    out = tmp_path / "heap.json"
    r = in_pid_namespace(sys.executable, "-c", IN_NAMESPACE, str(leaker), str(out), str(ROOT / "tests"),
                         str(LEAKS), str(SIZE))
    assert r.returncode == 0, r.stderr
    inner = int(r.stdout.split("inner pid ")[1].split()[0])
    leaks = json.loads(out.read_text())["leaks"]
    assert leaks, r.stdout   # none at all: the kernel side matched no pid
    top = leaks[0]
    assert inner < 100 and top["pid"] == inner, (inner, top)
    assert top["frames"][:2] == ["leak", "main"], top["frames"]
    assert abs(top["bytes"] - LEAKS * SIZE) < 0.10 * LEAKS * SIZE, top


KINDS = {"grow": 100000, "aligned": 10000, "fresh": 30000, "arrays": 40000}   # alloc_kinds.c


@pytest.mark.parametrize("sampling,sessions", [("every call", "1"), ("64 KiB", "1"), ("64 KiB", "0")],
                         ids=["every call, uprobe sessions", "sampled, uprobe sessions",
                              "sampled, a return probe on every call"])
def test_realloc_reallocarray_and_posix_memalign(sampling, sessions, tmp_path):
    """Each of alloc_kinds' functions keeps n blocks of a known size: the leak report has
    each one's bytes (exactly, every call seen; within 10 % sampled), and nothing else.
    realloc(NULL, n) and reallocarray call the allocator again; counted twice (or the inner
    call taken for the outer's return), fresh had 20 % too many bytes and a row of 93 TB.
    Both ways the kernel can probe returns: uprobe sessions, and (before Linux 6.13) a
    return probe on every call."""
    binary = compile_c("alloc_kinds.c", tmp_path / "alloc_kinds")
    n, rate = (200, "--every-call") if sampling == "every call" else (3000, "--sample-bytes=64KiB")
    r = agent("memleak", rate, "--min-age", "0.5s", "-o", str(tmp_path / "h.json"),
              "--", str(binary), str(n), env={**os.environ, "EBPF_OTLP_UPROBE_SESSIONS": sessions})
    assert r.returncode == 0, r.stderr
    assert ("sampled calls only" if sessions == "1" else "every call (no uprobe sessions") in r.stderr
    doc = json.loads((tmp_path / "h.json").read_text())
    leaks: dict[str, float] = {}
    for row in doc["leaks"]:
        leaks[row["frames"][0]] = leaks.get(row["frames"][0], 0) + row["bytes"]
    for name, size in KINDS.items():
        if sampling == "every call":
            assert leaks.get(name) == n * size, (name, leaks)
        else:
            assert abs(leaks.get(name, 0) - n * size) < 0.10 * n * size, (name, leaks)
    others = sum(b for name, b in leaks.items() if name not in KINDS)
    assert others < 1 << 20, leaks   # the loader's mmaps, main's array


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    static = compile_c("hot.c", tmp_path / "hot_static", "-static")
    work = subprocess.Popen([str(static), "10"])
    try:
        cases = [(["--pid", str(work.pid)], "does not map libc"),
                 (["--pid", str(work.pid), "--sample-bytes", "0"], "--sample-bytes"),
                 (["--pid", str(work.pid), "--lib", "/usr/bin/true"], "not an allocator"),
                 ([], "name the process")]
        for args, words in cases:
            r = agent("memleak", "--duration", "1s", *args)
            assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        work.kill()


def test_mmap_and_munmap_are_allocations_and_frees(tmp_path):
    """Anonymous mmaps kept show as a leak from their caller, mmaps undone by munmap are
    allocated and freed, and a large malloc's own mmap is counted once, at malloc."""
    binary = compile_c("mmap_mix.c", tmp_path / "mmap_mix")
    out = tmp_path / "heap.json"
    work = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    _, printed, err = agent_around(work, "tracing", "memleak", "--pid", str(work.pid), "--min-age", "1s",
                                   "--sample-bytes", "64KiB", "-o", str(out))
    doc = json.loads(out.read_text())
    mib = 1 << 20
    leak = doc["leaks"][0]
    assert leak["frames"][:2] == ["mmap64", "map_some"], leak["frames"]
    assert abs(leak["bytes"] - 32 * mib) < 0.1 * 32 * mib, leak
    types = [t["type"] for t in doc["sample_types"]]

    def at(function):
        rows = [s["values"] for s in doc["samples"] if function in [f["function"] for f in s["frames"]]]
        return [sum(v[types.index(t)] for v in rows) for t in ("alloc_space", "inuse_space")]
    unmapped_alloc, unmapped_inuse = at("map_and_unmap")
    assert abs(unmapped_alloc - 200 * mib) < 0.1 * 200 * mib and unmapped_inuse == 0
    malloc_alloc, malloc_inuse = at("big_mallocs")
    assert abs(malloc_alloc - 200 * mib) < 0.1 * 200 * mib and malloc_inuse == 0   # not twice
    assert not any(s["frames"][0]["function"].startswith("mmap") and "big_mallocs" in
                   [f["function"] for f in s["frames"]] for s in doc["samples"])
