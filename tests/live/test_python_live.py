"""Python functions, files and lines in sampled stacks, walked in the kernel, for each CPython
on the machine (Debian's 3.11, pyenv's 3.10-3.13): a launched workload with known answers
(tests/workloads/py_hot.py): its 3:1 split, its callers with their lines, Python called back
from C under the C frames that called it, and a thread in zlib's C code under its Python caller."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import WORKLOADS, agent, need_tool
from ebpf_otlp.export import folded
from support.pprof import load_pprof
from support.pythons import NAMES, interpreter, marked_lines

pytestmark = pytest.mark.live

WORKLOAD = WORKLOADS / "py_hot.py"
FILE = "py_hot.py"


@pytest.fixture(scope="module", params=NAMES)
def python_profile(request, tmp_path_factory):
    python = interpreter(request.param)
    d = tmp_path_factory.mktemp(f"py{request.param}")
    r = agent("profile", "--hz", "199", "-o", str(d / "cpu.folded"), "-o", str(d / "cpu.pb.gz"),
              "--", python, str(WORKLOAD), "4")
    assert r.returncode == 0, r.stderr
    return d, r, folded.parse((d / "cpu.folded").read_text())


def label(name: str, line: str) -> str:
    return f"{name} ({FILE}:{marked_lines(WORKLOAD)[line]})"


def python_names(stack: tuple[str, ...]) -> list[str]:
    return [n for n in stack if f"({FILE}:" in n]


def having(stacks: Counter, name: str) -> Counter:
    return Counter({st: n for st, n in stacks.items() if name in st})


def test_the_3_to_1_split_by_python_function(python_profile):
    _d, _r, stacks = python_profile
    a = sum(having(stacks, label("leaf_a", "leaf_a")).values())
    b = sum(having(stacks, label("leaf_b", "leaf_b")).values())
    assert a + b > 300 and abs(a / (a + b) - 0.75) <= 0.05, (a, b)   # 3:1, within 5 points


def test_python_callers_with_their_lines_in_place_of_the_interpreter(python_profile):
    _d, r, stacks = python_profile
    spin = re.compile(rf"spin \({FILE}:\d+\)")
    for leaf, line in (("leaf_a", "middle_a"), ("leaf_b", "middle_b")):
        found = having(stacks, label(leaf, leaf))
        whole = [st for st in found if python_names(st)[:4] == [
            label("<module>", "module"), label("outer", "outer"), label("middle", line), label(leaf, leaf)]]
        assert sum(found[st] for st in whole) >= 0.9 * sum(found.values()), list(found)[:3]
        # the leaf is spin, or the caller itself while it calls spin
        in_spin = [st for st in whole if spin.fullmatch(python_names(st)[-1])]
        assert all(len(python_names(st)) == 4 for st in whole if st not in in_spin), whole[:3]
        assert sum(found[st] for st in in_spin) >= 0.8 * sum(found.values()), whole[:3]
        # among the native frames that run them: the interpreter's start below <module>
        st = max(whole, key=found.__getitem__)
        assert "Py_RunMain" in st[:st.index(label("<module>", "module"))], st
        assert "_PyEval_EvalFrameDefault" not in st, st
    assert "<unknown python>" not in r.stderr


def test_python_called_back_from_c_sits_under_the_c_that_called_it(python_profile):
    _d, _r, stacks = python_profile
    found = having(stacks, label("key_fn", "key_fn"))
    assert found, "no sample in key_fn"
    st = max(found, key=found.__getitem__)
    middle, key = st.index(label("middle", "middle_sorted")), st.index(label("key_fn", "key_fn"))
    between = st[middle + 1:key]
    assert middle < key and between and not python_names(between), st
    if any(n.startswith("PyList_") or "sort" in n for n in st):   # a build with its static symbols
        assert any("sort" in n for n in between), st


def test_a_thread_in_c_code_has_its_python_caller(python_profile):
    _d, _r, stacks = python_profile
    found = having(stacks, label("compressor", "compressor"))
    assert sum(found.values()) > 50, sum(found.values())
    in_zlib = [st for st in found
               if any(n.startswith("deflate") or n.startswith("libz.so") for n in
                      st[st.index(label("compressor", "compressor")) + 1:])]
    assert sum(found[st] for st in in_zlib) >= 0.5 * sum(found.values()), list(found)[:3]


def test_pprof_has_python_functions_with_file_and_lines(python_profile):
    d, _r, _stacks = python_profile
    prof = load_pprof(d / "cpu.pb.gz")
    s = prof.string_table
    source = Path(WORKLOAD).read_text().splitlines()
    defined = {m.group(1): n for n, text in enumerate(source, 1) if (m := re.match(r"def (\w+)", text))}
    functions = {f.id: f for f in prof.function if s[f.name] == "leaf_a" and s[f.filename].endswith(FILE)}
    assert len(functions) == 1, functions
    (fid, leaf_a), = functions.items()
    assert leaf_a.start_line == defined["leaf_a"]
    lines = {ln.line for loc in prof.location for ln in loc.line if ln.function_id == fid}
    assert lines == {marked_lines(WORKLOAD)["leaf_a"]}, lines


def function_shares(stacks: Counter) -> dict[str, float]:
    """Each py_hot.py function's share (inclusive) of the main thread's samples in Python
    (those under <module>): the split the workload fixes, whatever the threads' shares of
    the CPUs were in that run."""
    total, having_ = 0, Counter()
    for st, n in stacks.items():
        names = {f.split(" (", 1)[0] for f in st if f"({FILE}:" in f}
        if "<module>" in names:
            total += n
            having_.update(dict.fromkeys(names, n))
    return {name: n / total for name, n in having_.items()}


@pytest.mark.parametrize("version", ("3.11-debian", "3.13"))
def test_the_same_shares_as_py_spy(version, tmp_path):
    """py-spy (from PyPI) and ebpf-otlp sample one run of the workload at once for 10 s,
    py-spy from outside at 99 Hz, ours at 999 Hz: each function's share of the main thread's
    Python samples is within 5 points of py-spy's (about 1,000 samples: 3 standard
    deviations of its estimate of the largest share)."""
    py_spy = need_tool("py-spy", str(Path(sys.executable).parent / "py-spy"))
    work = subprocess.Popen([interpreter(version), str(WORKLOAD), "16"])
    try:
        time.sleep(1)
        out = tmp_path / "py-spy.txt"
        spy = subprocess.Popen([py_spy, "record", "--rate", "99", "--duration", "10", "--format", "raw",
                                "--nonblocking", "--pid", str(work.pid), "--output", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        r = agent("profile", "-p", str(work.pid), "--hz", "999", "-d", "10", "-o", str(tmp_path / "ours.folded"))
        assert r.returncode == 0, r.stderr
        assert spy.wait(60) == 0, spy.stderr.read()
    finally:
        work.kill()
        work.wait()
    theirs = folded.parse(out.read_text())
    ours = folded.parse((tmp_path / "ours.folded").read_text())
    a, b = function_shares(ours), function_shares(theirs)
    assert sum(n for st, n in theirs.items() if any(f.startswith("<module> (") for f in st)) > 800, b
    for name in ("outer", "middle", "leaf_a", "leaf_b", "key_fn", "spin"):
        assert abs(a.get(name, 0) - b.get(name, 0)) <= 0.05, (name, a, b)
