"""What bpf/lib/python.inc is told and what it records: a process's entry in `py_procs`
(where its interpreter keeps what the walk reads) and the frames of a `struct py_stack`;
and KernelWalk, the user-space half of the walk in any program that includes it."""

from __future__ import annotations

import ctypes as ct
import threading
from typing import Callable

from ebpf_otlp.pyframes.layouts import NONE
from ebpf_otlp.pyframes.process import RawFrame, PythonProcess
from ebpf_otlp.records import CollectorStats
from ebpf_otlp.runtime.btf import kernel_offsets

PY_FRAMES = 64              # python.inc's
PY_PROCS = 4096             # Python processes walked at once (an LRU map: the oldest make room)
FSBASE = {"OFF_FSBASE": "task_struct.thread.fsbase"}   # the thread's fs base: its pthread_self()
_OFFSETS = ("interpreters_head", "threads_head", "tstate_next", "tstate_thread_id", "tstate_frame",
            "cframe_current_frame", "frame_previous", "frame_code", "frame_instr", "frame_flag",
            "code_firstlineno")
PY_PROC_FIELDS = ("runtime", "instr_mask", "flag_mask", "frame_read") + _OFFSETS   # struct py_proc
# python.inc's counters (STAT_PY_*), in their order in the including program's stat enum,
# and the losses among them.
STATS = ("py walked", "py cut", "py no thread", "py stack lost", "py announce dropped")
LOSSES = {"py cut": "Python stack cut short (deeper than 64 frames, or a read failed)",
          "py stack lost": "Python stack lost (stack map full)"}


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


class KernelWalk:
    """The user-space half of python.inc in one program: the processes it walks (py_procs),
    and the stacks it announces (py_new_stacks), handed to `on_stack(pid, frames)` outside
    the ring's callback, so their code objects are read while the process lives."""

    def __init__(self, on_stack: Callable[[int, PyStack], object]):
        self.on_stack = on_stack
        self._bpf = None
        self._pending: dict[int, PythonProcess] = {}   # named before the program loaded
        self._new: list[tuple[int, PyStack]] = []      # from the ring buffer
        self._lock = threading.Lock()   # processors name processes in a thread during the load

    @staticmethod
    def defines() -> dict:
        return dict(PYTHON_FRAMES=True, PY_PROCS=PY_PROCS, **kernel_offsets(FSBASE))

    def attach(self, bpf) -> None:
        """The program is loaded: walk what was named before, and listen to its ring."""
        with self._lock:
            self._bpf, pending, self._pending = bpf, self._pending, {}
        for pid, proc in pending.items():
            self.walk(pid, proc)
        bpf["py_new_stacks"].open_ring_buffer(lambda _ctx, data, _size: self._new.append(announced(data)))

    def walk(self, pid: int, proc: PythonProcess) -> None:
        """Walk the Python frames of process `pid` from its next sample."""
        with self._lock:
            if self._bpf is None:
                self._pending[pid] = proc
                return
        table = self._bpf["py_procs"]
        table[table.Key(pid)] = table.Leaf(**proc_entry(proc))

    def ring_fds(self) -> list[int]:
        return [self._bpf["py_new_stacks"].map_fd]

    def handle_events(self) -> None:
        new, self._new = self._new, []
        for pid, walked in new:
            self.on_stack(pid, walked)

    @staticmethod
    def report(stats: CollectorStats, counters: dict[str, int]) -> None:
        """What the walks did, beside the losses the program's StatsEnum reads."""
        stats.unwound.update({"Python stacks walked": counters["py walked"],
                              "Python threads without a thread state": counters["py no thread"]})
