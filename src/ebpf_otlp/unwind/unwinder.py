"""What a collector does to walk user stacks with bpf/lib/unwind.inc: compile its program
with the unwinder (or, in `auto` mode, without it where the kernel refuses it), keep the
tables in step with the processes it sees, and report how stacks were walked."""

from __future__ import annotations

import ctypes as ct
import os
import signal
import threading
import time
from typing import Callable, Iterable

from ebpf_otlp.errors import AgentError
from ebpf_otlp.records import CollectorStats
from ebpf_otlp.runtime import loader
from ebpf_otlp.runtime.maps import drain_views, plain
from ebpf_otlp.runtime.processes import process_state, set_thread_nice
from ebpf_otlp.unwind.kernel_tables import ENDS, KernelTables, warm_common_in_background, warm_in_background

MODES = ("auto", "fp", "dwarf")
MAX_FRAMES = 127              # perf's default depth
UNWIND_ROWS = 1 << 21         # 16 MiB of rows: libc has ~28k, python3.11 ~65k, node ~370k
UNWIND_MAPPINGS = 1 << 18     # (pid, address prefix) entries, ~30 per mapped object
COUNTERS = 2 + len(ENDS)      # the program's STAT_UNWIND_TABLES, _FRAME_POINTERS, _END + i


class UserStack(tuple):
    """Return addresses, leaf first; `cut`: the walk stopped short of the outermost frame
    (no table yet, a rule it cannot follow, a read fault), so its callers are missing."""
    cut = False


CUT_ENDS = {i for i, why in enumerate(ENDS) if why not in ("complete", "depth limit")}


def frames(entry) -> UserStack:
    """The return addresses of a `struct user_stack` (bpf/lib/unwind.inc)."""
    stack = UserStack(entry.ips[:entry.len])
    stack.cut = entry.end in CUT_ENDS
    return stack


def is_cut(ips) -> bool:
    return getattr(ips, "cut", False)


def kernel_frames(entry) -> tuple[int, ...]:
    """The return addresses of a `struct kernel_stack` (bpf/lib/kernel_stacks.inc): up
    to the first zero, as bpf_get_stack leaves the rest."""
    ips = list(entry.ips)
    return tuple(ips[:ips.index(0)] if 0 in ips else ips)


def drain_stacks(table, decode=frames, known: dict | None = None) -> dict[int, tuple[int, ...]]:
    """Empty a map of stacks kept by content: hash -> frames. A stack in `known` (the last
    drain's, say: most stacks recur) is not decoded again, nor copied out of the buffer."""
    known = known or {}
    out = {}
    for k, v in drain_views(table):
        h = plain(k)
        got = known.get(h)
        out[h] = decode(v) if got is None else got
    return out


def look_up_stacks(table, hashes: Iterable[int], known: dict[int, tuple[int, ...]],
                   decode=frames) -> None:
    """Add to `known` the stacks of `hashes` it lacks, from a map that keeps them (read
    each once); a hash the map does not hold (0: no stack) stays out."""
    for h in set(hashes) - known.keys():
        try:
            known[h] = decode(table[table.Key(h)])
        except KeyError:
            pass


class Unwinder:
    """`mode` is what the user asked for; after load(), `tables` says what runs."""

    def __init__(self, mode: str):
        if mode not in MODES:
            raise ValueError(f"unwind mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode
        self.kernel: KernelTables | None = None
        self._warming: threading.Thread | None = None
        self.refused = ""          # auto mode: why the kernel took the frame-pointer program
        self._holding = None       # the program that holds launched processes (hold.inc)

    @property
    def tables(self) -> bool:
        return self.kernel is not None

    def load(self, program: str, defines: dict):
        """The compiled program: with the table unwinder unless the mode is fp; `auto`
        falls back to the kernel's frame-pointer walker if this kernel refuses it."""
        if self.mode == "fp":
            return loader.load(program, defines)
        try:
            bpf = loader.load(program, dict(defines, UNWIND_TABLES=True, MAX_FRAMES=MAX_FRAMES,
                                            UNWIND_ROWS=UNWIND_ROWS, UNWIND_MAPPINGS=UNWIND_MAPPINGS))
        except AgentError as e:
            if self.mode == "dwarf":
                raise
            self.refused = str(e)
            return loader.load(program, defines)
        self.kernel = KernelTables(bpf, UNWIND_ROWS)
        return bpf

    def warm(self, pids: list[int]) -> None:
        """While BPF compiles (from the prepare thread): the named processes' tables into
        the disk cache (the user asked for these: at the agent's priority once attached);
        and those of the objects nearly every process maps, so a cold cache's first run looks
        like a warm one (launch mode, new processes in --all)."""
        if self.mode == "fp":
            return
        if pids:
            self._warming = warm_in_background(pids)
        warm_common_in_background()

    def start(self, pids: Iterable[int]) -> None:
        """Load the tables of processes known now that are ready (cached, or compiled by
        warm() while BPF compiled); the rest come from the worker as they are ready, and
        warm() goes on at the agent's priority. Sampling never waits for a table: the
        start-up stays within profile-bpfcc's with a cold cache (bench/start_latency.py)."""
        if not self.kernel:
            return
        if self._warming is not None and self._warming.is_alive():
            set_thread_nice(self._warming.native_id)
        for pid in pids:
            if not self.kernel.update(pid, compile_limit=0):
                self.kernel.want(pid, fresh=True)
        self.kernel.start()

    def seen(self, pids: Iterable[int]) -> None:
        """Processes the program announced (new, or just exec'd): their tables now."""
        if self.kernel:
            for pid in set(pids):
                self.kernel.want(pid, fresh=True)

    # -- launch mode: processes held at new code (bpf/lib/hold.inc) -------------------------
    HELD = "holds for tables (exec, executable mappings)"

    def hold(self, bpf, follow_forks: bool) -> bool:
        """Launch mode with tables: have the program stop each launched process at its exec
        and at each executable mapping (its HOLD_NEW_CODE define was set), until released."""
        self._holding = bpf if follow_forks and self.kernel else None
        if self._holding is not None:
            self._holding["holding"][ct.c_int(0)] = ct.c_uint32(1)
        return self._holding is not None

    def release(self, pid: int, stats: CollectorStats) -> None:
        """A held process: its tables, every one (compiled now if not cached), then it
        runs on, whatever happened."""
        try:
            if self.kernel:
                self.kernel.update(pid, compile_limit=None, fresh=True)
            stats.unwound[self.HELD] = stats.unwound.get(self.HELD, 0) + 1
        finally:
            _continue(pid)

    def stop_holding(self, handle_pending: Callable[[], None]) -> None:
        """No more holds; `handle_pending` takes what is in the ring (a hold in flight on
        another CPU lands there within microseconds), and any launched process still
        stopped is let go."""
        bpf, self._holding = self._holding, None
        if bpf is None:
            return
        bpf["holding"][ct.c_int(0)] = ct.c_uint32(0)
        time.sleep(0.02)
        handle_pending()
        for key in bpf["pid_filter"].keys():
            if process_state(key.value) == "T":
                _continue(key.value)

    def drained(self, pids: Iterable[int]) -> None:
        """After a drain: the sampled processes' tables brought up to date (libraries
        loaded since), and exited processes let go."""
        if self.kernel:
            self.kernel.forget_exited()
            for pid in set(pids):
                self.kernel.want(pid)

    def stop(self) -> None:
        if self.kernel:
            self.kernel.stop()

    def report(self, stats: CollectorStats, counters: list[int]) -> None:
        """Fill `stats` from the program's unwind counters (COUNTERS of them, in order):
        how stacks were walked, and each walk cut short, by why, as a loss."""
        if self.refused:
            stats.unwound["frame pointers only (this kernel refused the table unwinder)"] = 1
        if not self.kernel:
            return
        stats.unwound.update({"through tables": counters[0], "frame pointers only": counters[1]})
        for i, why in enumerate(ENDS[1:], start=1):
            stats.set_lost(f"user stack cut short ({why})", counters[2 + i])
        stats.unwound.update(self.kernel.counts)
        ready = sorted(self.kernel.ready_s)
        if ready:   # how soon a process first seen had every table (issue 18: within 1 s)
            stats.unwound.update({
                "new processes whose tables loaded": len(ready),
                "ms from first seen to all tables, median": round(ready[len(ready) // 2] * 1000),
                "ms at most": round(ready[-1] * 1000)})


def _continue(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


