"""Reading a live CPython from outside (/proc/PID/mem), for each version on the machine: its
interpreter found, its threads, and each thread's frames named with the right lines, as
the interpreter itself stands (tests/workloads/py_blocked.py, held at known lines)."""

from __future__ import annotations

import os
import subprocess
import sys


from ebpf_otlp.pyframes import process
from support.pythons import blocked, marked_lines  # noqa: F401 (blocked: a fixture)

def named(proc, mem, frames):
    out = []
    for f in frames:
        info = process.read_code(proc, mem, f.code)
        out.append((info.qualname, os.path.basename(info.filename), info.line_at(f.offset), f.entry))
    return out


def test_a_blocked_interpreters_threads_and_frames(blocked):
    proc = process.find(blocked.pid)
    assert isinstance(proc, process.PythonProcess), proc
    lines = marked_lines()
    with process.Memory(blocked.pid) as mem:
        states = process.threads(proc, mem)
        assert len(states) == 2, states
        if proc.version >= (3, 11):
            tids = {int(t) for t in os.listdir(f"/proc/{blocked.pid}/task")}
            assert {s.native_thread_id for s in states} == tids
        stacks = [named(proc, mem, process.walk(proc, mem, s.address)) for s in states]
    main = next(s for s in stacks if s and s[0][0] == "key")
    worker = next(s for s in stacks if s is not main)
    name = "py_blocked.py"
    assert [f[:3] for f in main] == [("key", name, lines["key"]), ("leaf", name, lines["leaf"]),
                                     ("middle", name, lines["middle"]), ("outer", name, lines["outer"]),
                                     ("<module>", name, lines["module"])], main
    assert main[0][3] and main[4][3], main       # sorted() called key from C; <module> began it all
    if proc.version >= (3, 11):                  # Python calls Python within one eval call
        assert not any(f[3] for f in main[1:4]), main
    assert worker[0][:3] == ("worker", name, lines["worker"]), worker


def test_a_program_without_python_has_no_interpreter():
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert process.find(child.pid) is None
    finally:
        child.kill()
        child.wait()
    assert process.find(sys.maxsize % 4194304 + 4194304) is None   # no such process


def test_an_interpreter_file_is_read_once_for_every_process_that_maps_it(monkeypatch):
    """A Python service forking children (each a Python process until its exec) costs one
    ELF parse per interpreter file, not one per child; a file that cannot be opened (its
    process gone) is not remembered as no interpreter."""
    from ebpf_otlp.symbolize.procmaps import parse_maps

    reads = []
    real = process.detect
    monkeypatch.setattr(process, "_FILES", process._Files())
    monkeypatch.setattr(process, "detect", lambda *a, **kw: reads.append(a[0]) or real(*a, **kw))
    with open(f"/proc/{os.getpid()}/maps") as f:
        entries = parse_maps(f.read())
    assert process.find(2 ** 22 + 1, entries) is None   # no such pid: nothing to open
    first, again = process.find(os.getpid(), entries), process.find(os.getpid(), entries)
    assert isinstance(first, process.PythonProcess) and again == first
    assert len(reads) == 2, reads   # the failed open, then the one read
