"""Python frames in the other signals with stacks: off-CPU time of a thread sleeping in
time.sleep, and memleak's heap profile and leak report of bytearrays kept and churned, each
in known Python functions at known lines (tests/workloads/py_sleepy.py, py_grow.py); on
Debian's python3.11 (the interpreter linked in) and pyenv's 3.12 (a shared libpython)."""

from __future__ import annotations

import json

import pytest

from conftest import WORKLOADS, agent
from ebpf_otlp.export import folded
from support.pythons import interpreter, marked_lines

pytestmark = pytest.mark.live

MIB = 1 << 20
PYTHONS = ("3.11-debian", "3.12")


def label(workload: str, name: str, line: str) -> str:
    return f"{name} ({workload}:{marked_lines(WORKLOADS / workload)[line]})"


@pytest.mark.parametrize("version", PYTHONS)
def test_off_cpu_time_in_time_sleep_under_its_python_caller(version, tmp_path):
    """2 s asleep in nap(): at least 90 % of the main thread's time off CPU is in stacks
    with <module>;main;nap at their lines, and that time is within 15 % of 2 s."""
    out = tmp_path / "off.folded"
    r = agent("profile", "--off-cpu", "-o", str(out), "--", interpreter(version),
              str(WORKLOADS / "py_sleepy.py"), "2")
    assert r.returncode == 0, r.stderr
    stacks = folded.parse(out.read_text())
    python = [label("py_sleepy.py", *n) for n in (("<module>", "module"), ("main", "main"), ("nap", "nap"))]
    in_nap = sum(n for st, n in stacks.items() if [f for f in st if "(py_sleepy.py:" in f] == python)
    total = sum(stacks.values())
    assert in_nap >= 0.9 * total, (in_nap, total, max(stacks, key=stacks.__getitem__))
    assert abs(in_nap / 1e9 - 2.0) < 0.3, in_nap / 1e9   # folded off-CPU values are ns


@pytest.mark.parametrize("version", PYTHONS)
def test_memleak_names_the_python_function_that_keeps_memory(version, tmp_path):
    """grow() keeps 48 MiB, churn() allocates 48 MiB and frees it: the leak report's top row
    is grow at its line under main and <module>, its bytes within 15 % of 48 MiB; churn's
    allocated space is within 15 % of 48 MiB and almost none of it in use."""
    out = tmp_path / "heap.json"
    r = agent("memleak", "--min-age", "1s", "--sample-bytes", "64KiB", "-o", str(out),
              "--", interpreter(version), str(WORKLOADS / "py_grow.py"), "48", "2.5")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    grow = label("py_grow.py", "grow", "grow")
    top = doc["leaks"][0]
    python = [f for f in top["frames"] if "(py_grow.py:" in f]
    assert python == [grow, label("py_grow.py", "main", "main_grow"),
                      label("py_grow.py", "<module>", "module")], doc["leaks"][:3]
    assert abs(top["bytes"] - 48 * MIB) < 0.15 * 48 * MIB, top

    def space(name: str, kind: str) -> int:
        i = [t["type"] for t in doc["sample_types"]].index(kind)
        return sum(s["values"][i] for s in doc["samples"]
                   if any(f["function"] == name and f["module"].endswith("py_grow.py") for f in s["frames"]))

    assert abs(space("churn", "alloc_space") - 48 * MIB) < 0.15 * 48 * MIB, space("churn", "alloc_space")
    assert space("churn", "inuse_space") < 0.05 * 48 * MIB
    assert abs(space("grow", "inuse_space") - 48 * MIB) < 0.15 * 48 * MIB
    assert "grow (py_grow.py:" in r.stderr   # the leak report's table
    assert "<unknown python>" not in r.stderr
