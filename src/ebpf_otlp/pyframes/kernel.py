"""What bpf/lib/python.inc is told and what it records: a process's entry in `py_procs`
(where its interpreter keeps what the walk reads) and the frames of a `struct py_stack`."""

from __future__ import annotations

import ctypes as ct

from ebpf_otlp.pyframes.layouts import NONE
from ebpf_otlp.pyframes.process import RawFrame, PythonProcess

PY_FRAMES = 64              # python.inc's
PY_PROCS = 4096             # Python processes walked at once (an LRU map: the oldest make room)
FSBASE = {"OFF_FSBASE": "task_struct.thread.fsbase"}   # the thread's fs base: its pthread_self()
_OFFSETS = ("interpreters_head", "threads_head", "tstate_next", "tstate_thread_id", "tstate_frame",
            "cframe_current_frame", "frame_previous", "frame_code", "frame_instr", "frame_flag",
            "code_firstlineno")
PY_PROC_FIELDS = ("runtime", "instr_mask", "flag_mask", "frame_read") + _OFFSETS   # struct py_proc


def proc_entry(proc: PythonProcess) -> dict[str, int]:
    """The process's py_procs entry (PY_PROC_FIELDS): its _PyRuntime and its version's layout."""
    lay = proc.layout
    flag = lay.frame_is_entry if proc.version == (3, 11) else lay.frame_owner
    lasti = proc.version == (3, 10)   # int f_lasti, not a pointer
    # Read at once: every field of a frame the walk looks at.
    ends = [lay.frame_previous + 8, lay.frame_code + 8, lay.frame_instr + (4 if lasti else 8)]
    return dict(runtime=proc.runtime, instr_mask=0xFFFFFFFF if lasti else (1 << 64) - 1,
                flag_mask=0 if flag == NONE else 0xFF, frame_read=max(ends + [flag + 1]),
                interpreters_head=lay.runtime_interpreters_head, threads_head=lay.interp_threads_head,
                tstate_next=lay.tstate_next, tstate_thread_id=lay.tstate_thread_id,
                tstate_frame=lay.tstate_frame, cframe_current_frame=lay.cframe_current_frame,
                frame_previous=lay.frame_previous, frame_code=lay.frame_code,
                frame_instr=lay.frame_instr, frame_flag=max(flag, 0),
                code_firstlineno=lay.code_firstlineno)


class _Frame(ct.Structure):
    _fields_ = [("code", ct.c_uint64), ("instr", ct.c_uint64), ("first_line", ct.c_int32),
                ("flag", ct.c_uint32)]


class _Stack(ct.Structure):
    _fields_ = [("len", ct.c_uint32), ("cut", ct.c_uint32), ("frames", _Frame * PY_FRAMES)]


class Announcement(ct.Structure):
    """struct py_announcement: a stack new to its process, sent through py_new_stacks."""
    _fields_ = [("tgid", ct.c_uint32), ("pad", ct.c_uint32), ("st", _Stack)]


def announced(data) -> tuple[int, "PyStack"]:
    """(pid, frames) of a py_new_stacks record, copied out of the ring."""
    a = ct.cast(data, ct.POINTER(Announcement)).contents
    return a.tgid, frames(a.st)


class PyStack(tuple):
    """Raw frames, innermost first; `cut`: deeper than the kernel walks, or a read failed."""
    cut = False


def frames(entry) -> PyStack:
    """The frames of a `struct py_stack`."""
    out = PyStack(RawFrame(f.code, f.instr, f.flag, f.first_line) for f in entry.frames[:entry.len])
    out.cut = bool(entry.cut)
    return out
