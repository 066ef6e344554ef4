"""Python frames named and put in their place: the merge with the native stack, what the
kernel is told of an interpreter, the kernel's records decoded, and code objects named
from a live process of each CPython on the machine."""

from __future__ import annotations

import ctypes as ct
import os
import re
from pathlib import Path

import pytest

from ebpf_otlp.pyframes import kernel, process
from ebpf_otlp.pyframes.layouts import LAYOUTS
from ebpf_otlp.pyframes.names import FRAME_TYPE, UNKNOWN, PythonNames, merge
from ebpf_otlp.records import Frame
from ebpf_otlp.symbolize.procmaps import parse_maps
from support.pythons import WORKLOAD, blocked, marked_lines  # noqa: F401 (blocked: a fixture)


def native(*names: str) -> list[Frame]:
    return [Frame(n, "/usr/lib/libpython3.so") for n in names]


def py(*names: str) -> list[Frame]:
    return [Frame(n, "app.py", line=1, frame_type=FRAME_TYPE) for n in names]


def labels(frames) -> list[str]:
    return [f.function for f in frames]


def test_each_run_of_python_frames_takes_its_eval_frames_place():
    stack = native("memcpy", "_PyEval_EvalFrameDefault", "PyObject_Call", "_PyEval_EvalFrameDefault.cold", "main")
    merged = merge(stack, py("key", "leaf", "outer"), [True, False, True])
    assert labels(merged) == ["memcpy", "key", "PyObject_Call", "leaf", "outer", "main"]


def test_python_frames_left_over_go_outermost_when_the_native_walk_was_cut():
    merged = merge(native("memcpy", "_PyEval_EvalFrameDefault"), py("key", "leaf", "outer"),
                   [True, False, True])
    assert labels(merged) == ["memcpy", "key", "leaf", "outer"]


def test_a_run_without_its_entry_still_replaces_the_next_eval_frame():
    # a Python walk cut short: its last run has no frame marked as the eval call's start
    merged = merge(native("_PyEval_EvalFrameDefault", "_PyEval_EvalFrameDefault", "main"),
                   py("a", "b"), [True, False])
    assert labels(merged) == ["a", "b", "main"]


def test_native_stacks_without_python_are_unchanged():
    stack = native("f", "_PyEval_EvalFrameDefault", "main")
    assert merge(stack, [], []) == stack


@pytest.mark.parametrize("version", sorted(LAYOUTS))
def test_the_kernel_is_told_the_layout_it_walks(version):
    from ebpf_otlp.pyframes.detect import Interpreter
    lay = LAYOUTS[version]
    proc = process.PythonProcess(1, Interpreter("/x", version, 0, 0x1000), lay, 0x5000, 0)
    entry = kernel.proc_entry(proc)
    assert entry["runtime"] == 0x5000
    assert entry["frame_code"] == lay.frame_code and entry["frame_previous"] == lay.frame_previous
    # one read covers every field of a frame the walk looks at, and stays within its buffer
    assert entry["frame_read"] >= max(lay.frame_code, lay.frame_previous, lay.frame_instr) + 4
    assert entry["frame_read"] > entry["frame_flag"] and entry["frame_read"] <= 128
    # the kernel reads the is_entry byte on 3.11 and the owner byte from 3.12; 3.10 has none
    if version == (3, 10):
        assert entry["flag_mask"] == 0 and entry["instr_mask"] == 0xFFFFFFFF   # int f_lasti
    else:
        assert entry["frame_flag"] == (lay.frame_is_entry if version == (3, 11) else lay.frame_owner)
        assert entry["flag_mask"] == 0xFF and entry["instr_mask"] == (1 << 64) - 1
    assert tuple(entry) == kernel.PY_PROC_FIELDS


def c_fields(struct: str) -> list[tuple[str, str]]:
    source = (Path(__file__).parents[2] / "bpf" / "lib" / "python.inc").read_text()
    body = source[source.index(f"struct {struct} {{"):]
    return re.findall(r"^\s+(?:struct )?(\w+) (\w+)(?:\[\w+\])?;", body[:body.index("};")], re.M)


def test_user_space_knows_the_kernels_structs_field_by_field():
    assert tuple(name for _t, name in c_fields("py_proc")) == kernel.PY_PROC_FIELDS
    sizes = {"u32": 4, "s32": 4, "u64": 8, "py_stack": ct.sizeof(kernel._Stack), "py_frame": ct.sizeof(kernel._Frame)}
    for struct, mirror in (("py_frame", kernel._Frame), ("py_stack", kernel._Stack),
                           ("py_announcement", kernel.Announcement)):
        fields = c_fields(struct)
        assert [name for _t, name in fields] == [name for name, _c in mirror._fields_], struct
        assert [sizes[t] for t, _n in fields if t != "py_frame"] == [
            ct.sizeof(c) for name, c in mirror._fields_ if name != "frames"], struct


def test_a_new_stack_sent_by_the_kernel_decodes_to_its_frames():
    a = kernel.Announcement(tgid=42)
    a.st.len, a.st.cut = 2, 1
    a.st.frames[0] = kernel._Frame(0x7000, 0x7100, 3, 0)
    a.st.frames[1] = kernel._Frame(0x8000, 0x8100, 9, 1)
    a.st.frames[2] = kernel._Frame(0x9000, 0x9100, 9, 1)   # past len: not a frame
    pid, frames = kernel.announced(ct.addressof(a))
    assert pid == 42
    assert list(frames) == [process.RawFrame(0x7000, 0x7100, 0, 3), process.RawFrame(0x8000, 0x8100, 1, 9)]
    assert frames.cut


@pytest.mark.parametrize("version", sorted(LAYOUTS))
def test_raw_frames_become_offsets_and_eval_call_starts(version):
    from ebpf_otlp.pyframes.detect import Interpreter
    lay = LAYOUTS[version]
    proc = process.PythonProcess(1, Interpreter("/x", version, 0, 0x1000), lay, 0x5000, 0)
    if version == (3, 10):   # f_lasti in code units; -1 before the first instruction
        raw = [process.RawFrame(0x7000, 5, 0), process.RawFrame(0x8000, 0xFFFFFFFF, 0)]
        want = [process.PyFrame(0x7000, 10, True), process.PyFrame(0x8000, 0, True)]
    elif version == (3, 11):   # is_entry
        raw = [process.RawFrame(0x7000, 0x7000 + lay.code_bytecode + 6, 0),
               process.RawFrame(0x8000, 0x8000 + lay.code_bytecode, 1)]
        want = [process.PyFrame(0x7000, 6, False), process.PyFrame(0x8000, 0, True)]
    else:                      # a shim frame (owner 3) under the frame an eval call began with
        raw = [process.RawFrame(0x7000, 0x7000 + lay.code_bytecode + 6, 0),
               process.RawFrame(0x8000, 0x8000 + lay.code_bytecode + 2, 0),
               process.RawFrame(0x9000, 0, process.FRAME_OWNED_BY_CSTACK)]
        want = [process.PyFrame(0x7000, 6, False), process.PyFrame(0x8000, 2, True)]
    assert process.interpret(proc, raw) == want


def test_code_objects_are_named_with_file_and_line_while_the_process_lives(blocked):
    names = PythonNames()
    with open(f"/proc/{blocked.pid}/maps") as f:
        proc = names.found(blocked.pid, parse_maps(f.read()))
    assert proc is not None
    with process.Memory(blocked.pid) as mem:
        stacks = [process.walk_raw(proc, mem, t.address) for t in process.threads(proc, mem)]
        # the kernel records each code's first line too (a shim's "code" may be no code object)
        stacks = [[f._replace(first_line=mem.i32(f.code + proc.layout.code_firstlineno)) for f in s]
                  for s in stacks]
    raw = next(s for s in stacks if len(process.interpret(proc, s)) == 5)
    names.learn(blocked.pid, raw)
    frames = [names.frame(blocked.pid, f) for f in process.interpret(proc, raw)]
    lines = marked_lines()
    assert [f.label for f in frames] == [
        f"key (py_blocked.py:{lines['key']})", f"leaf (py_blocked.py:{lines['leaf']})",
        f"middle (py_blocked.py:{lines['middle']})", f"outer (py_blocked.py:{lines['outer']})",
        f"<module> (py_blocked.py:{lines['module']})"]
    assert all(f.frame_type == FRAME_TYPE and os.path.samefile(f.module, WORKLOAD) for f in frames)
    # a code object seen with another first line is another (the address freed and reused)
    stale = raw[0]._replace(first_line=raw[0].first_line + 1)
    names.learn(blocked.pid, [stale])
    assert names.frame(blocked.pid, process.interpret(proc, [stale])[0]).function == UNKNOWN
    assert names.stats().lost
    names.forget([blocked.pid])
    assert not names.processes


def c_enum(source: str, enum: str) -> list[str]:
    text = (Path(__file__).parents[2] / "bpf" / source).read_text()
    body = text[text.index(f"enum {enum} {{"):]
    return re.findall(r"^\s+(STAT_\w+)", body[:body.index("};")], re.M)


@pytest.mark.parametrize("source,enum,module", [("cpu_sampler.bpf.c", "sampler_stat", "profile"),
                                                 ("heap.bpf.c", "heap_stat", "heap")])
def test_each_program_counts_the_python_walk_where_its_mirror_reads_it(source, enum, module):
    """A StatsEnum mirrors its program's enum by position: python.inc's STAT_PY_* sit where
    the mirror has pyframes' counters, and the mirror ends where the unwinder's begin."""
    import importlib
    stats = importlib.import_module(f"ebpf_otlp.signals.{module}.collector").STATS
    members = c_enum(source, enum)
    assert len(stats.index) == members.index("STAT_UNWIND_TABLES"), members
    for name in kernel.STATS:
        assert members[stats[name]] == "STAT_" + name.upper().replace(" ", "_"), (name, members)


def test_the_walk_named_before_the_program_loaded_starts_once_it_has():
    """KernelWalk: processes named while BPF compiles are walked at attach; stacks the ring
    announces reach on_stack at handle_events, not inside the ring's callback."""
    from ebpf_otlp.pyframes.detect import Interpreter

    class Table(dict):
        Key = staticmethod(lambda pid: pid)
        Leaf = staticmethod(lambda **fields: fields)

    class Ring:
        map_fd = 7

        def open_ring_buffer(self, callback):
            self.callback = callback

    got = []
    walk = kernel.KernelWalk(lambda pid, frames: got.append((pid, list(frames))))
    proc = process.PythonProcess(5, Interpreter("/x", (3, 12), 0, 0x1000), LAYOUTS[(3, 12)], 0x5000, 0)
    walk.walk(5, proc)
    bpf = {"py_procs": Table(), "py_new_stacks": Ring()}
    walk.attach(bpf)
    assert bpf["py_procs"] == {5: kernel.proc_entry(proc)} and walk.ring_fds() == [7]
    a = kernel.Announcement(tgid=5)
    a.st.len = 1
    a.st.frames[0] = kernel._Frame(0x7000, 0x7100, 3, 0)
    bpf["py_new_stacks"].callback(None, ct.addressof(a), ct.sizeof(a))
    assert got == []
    walk.handle_events()
    assert got == [(5, [process.RawFrame(0x7000, 0x7100, 0, 3)])]


def test_a_process_seen_again_keeps_the_names_read_and_an_exec_drops_them(monkeypatch):
    """A launched process is announced again after each mapping of new code (an extension
    module imported late): the kernel sends each stack once, so the names read from the first
    ones must stay. After an exec (a new generation) they are another program's: dropped."""
    from ebpf_otlp.pyframes import names as names_module
    from ebpf_otlp.pyframes.detect import Interpreter
    proc = process.PythonProcess(5, Interpreter("/x", (3, 12), 0, 0x1000), LAYOUTS[(3, 12)], 0x5000, 0)
    monkeypatch.setattr(names_module, "find", lambda pid, entries: proc)
    names = PythonNames()
    assert names.found(5, [], gen=0) == proc
    names._code[5] = {(0x7000, 3): None}   # as learn() leaves a code object it read
    assert names.found(5, [], gen=0) == proc and 5 in names._code
    assert names.found(5, [], gen=1) == proc and 5 not in names._code
