"""Python frames named, and put in their place in the native stack.

The kernel records a code object's address per frame; its name, file and line table are
read here from the process's memory at the drain after the sample (the process is most
likely still alive then; one that is gone has its frames as `<unknown python>`, counted).
A code object is known by (pid, address, first line): an address freed and reused by another
code object, defined elsewhere, is told apart."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Callable, Iterable

from ebpf_otlp.pyframes.detect import Interpreter
from ebpf_otlp.pyframes.process import (CodeInfo, Memory, PyFrame, PythonProcess, RawFrame, find,
                                        interpret, read_code)
from ebpf_otlp.records import CollectorStats, Frame, RawStackSample
from ebpf_otlp.symbolize.procmaps import MapEntry

if TYPE_CHECKING:
    from ebpf_otlp.symbolize.symbolizer import Symbolizer

FRAME_TYPE = "cpython"          # OpenTelemetry's profile.frame.type for CPython frames
UNKNOWN = "<unknown python>"
UNKNOWN_MODULE = "[python]"
EVAL_FRAME = "_PyEval_EvalFrameDefault"   # the native frame of an eval call (also its .cold part)


class PythonNames:
    """The Python processes found, and the code objects their samples named."""

    def __init__(self):
        self.processes: dict[int, PythonProcess] = {}
        # per pid, so forgetting a process costs its own entries only (one is forgotten at
        # every exec and first sight: 20 a second on a host that churns processes)
        self._code: dict[int, dict[tuple[int, int], CodeInfo | None]] = {}      # (code, first line)
        self._frames: dict[int, dict[tuple[int, int, int], Frame]] = {}         # ... and offset
        self._gens: dict[int, int] = {}    # pid -> the exec generation its entries are of
        self.unsupported: Counter[str] = Counter()   # "CPython 3.9: why" -> processes
        self.unnamed: Counter[str] = Counter()        # why -> distinct frames left <unknown python>

    def found(self, pid: int, entries: list[MapEntry], gen: int = 0) -> PythonProcess | None:
        """The interpreter of a process first seen, after its exec (`gen`: its execs), or
        seen again (a launched one, after each mapping of new code); None if it runs none,
        or one not walked here (counted by why). Seen again running the same interpreter,
        it keeps the names already read: the kernel sends each stack once."""
        found = find(pid, entries)
        if found is not None and found == self.processes.get(pid) and self._gens.get(pid) == gen:
            return found
        self.forget([pid])
        self._gens[pid] = gen
        if isinstance(found, Interpreter):
            self.unsupported[f"{found.name}: {found.unsupported}"] += 1
            return None
        if found is not None:
            self.processes[pid] = found
        return found

    def learn(self, pid: int, raw: Iterable[RawFrame]) -> None:
        """Read now the code objects of the kernel's frames not yet known, while the process lives."""
        proc = self.processes.get(pid)
        if proc is None:
            return
        known = self._code.setdefault(pid, {})
        new = [k for k in {(f.code, f.first_line) for f in interpret(proc, list(raw))} if k not in known]
        if not new:
            return
        try:
            mem = Memory(pid)
        except OSError:
            known.update(dict.fromkeys(new))
            return
        with mem:
            for code, first_line in new:
                try:
                    info = read_code(proc, mem, code)
                except (OSError, ValueError, UnicodeDecodeError):
                    info = None
                if info is not None and first_line and info.first_line != first_line:
                    info = None   # freed and reused since the sample
                known[(code, first_line)] = info

    def learn_from(self, stacks: Iterable[RawStackSample]) -> None:
        """learn() for the Python frames of drained stacks, one read of memory per process
        (the stacks its ring did not announce)."""
        by_pid: dict[int, set[RawFrame]] = {}
        for raw in stacks:
            if raw.python:
                by_pid.setdefault(raw.pid, set()).update(raw.python)
        for pid, frames in by_pid.items():
            self.learn(pid, frames)

    def frame(self, pid: int, f: PyFrame) -> Frame:
        frames = self._frames.setdefault(pid, {})
        key = (f.code, f.first_line, f.offset)
        frame = frames.get(key)
        if frame is None:
            info = self._code.get(pid, {}).get((f.code, f.first_line))
            if info is None:
                self.unnamed["code object not read (process gone, or the object freed)"] += 1
                frame = Frame(UNKNOWN, UNKNOWN_MODULE, frame_type=FRAME_TYPE)
            else:
                frame = Frame(info.qualname, info.filename, line=info.line_at(f.offset),
                              start_line=info.first_line, frame_type=FRAME_TYPE)
            frames[key] = frame
        return frame

    def stack(self, pid: int, raw: tuple[RawFrame, ...], native: list[Frame]) -> list[Frame]:
        """The user stack with the sample's Python frames merged in (Symbolizer.interpreted)."""
        proc = self.processes.get(pid)
        if proc is None:   # not known as Python any more (an exec since): nothing to name them by
            self.unnamed["the process no longer runs that interpreter"] += 1
            return native
        python = interpret(proc, list(raw))
        return merge(native, [self.frame(pid, f) for f in python], [f.entry for f in python])

    def stats(self) -> CollectorStats:
        """Frames left unnamed, as losses; interpreters not walked, by why."""
        return CollectorStats(lost={f"Python frame not named ({why})": n for why, n in self.unnamed.items()},
                              unwound={f"Python not walked: {why}": n for why, n in self.unsupported.items()})

    def forget(self, pids: Iterable[int]) -> None:
        for pid in pids:
            self.processes.pop(pid, None)
            self._code.pop(pid, None)
            self._frames.pop(pid, None)
            self._gens.pop(pid, None)


def remember(symbolizer: Symbolizer, names: PythonNames | None,
             walk: Callable[[int, PythonProcess], object], pid: int, gen: int = 0) -> bool:
    """A process first seen (or after its exec): its maps now, and, if it runs a Python
    walked here, `walk(pid, interpreter)` so its frames are walked from its next sample.
    False if it is gone."""
    if not symbolizer.remember(pid, gen):
        return False
    if names:
        proc = names.found(pid, symbolizer.processes[(pid, gen)].entries, gen)
        if proc:
            walk(pid, proc)
    return True


def merge(native: list[Frame], python: list[Frame], entries: list[bool]) -> list[Frame]:
    """One stack, leaf first: each run of Python frames (up to the one an eval call began
    with) in place of its `_PyEval_EvalFrameDefault` frame, as py-spy shows them. Runs left
    over (a native walk cut short) go outermost."""
    runs: list[list[Frame]] = [[]]
    for f, entry in zip(python, entries):
        runs[-1].append(f)
        if entry:
            runs.append([])
    runs = [r for r in runs if r]
    out: list[Frame] = []
    k = 0
    for f in native:
        if k < len(runs) and f.function.startswith(EVAL_FRAME):
            out += runs[k]
            k += 1
        else:
            out.append(f)
    for run in runs[k:]:
        out += run
    return out
