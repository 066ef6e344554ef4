"""A live CPython process read from outside through /proc/PID/mem, never paused: where its
interpreter is, its threads' states, and the name, file and lines of a code object.

The kernel-side walk (bpf/lib/python.inc) records code object addresses and instruction
offsets; this names them. `walk()` is the same walk done from here, for threads the kernel
is not sampling and to check the kernel's against."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable, NamedTuple

from ebpf_otlp.pyframes import linetable
from ebpf_otlp.pyframes.detect import Interpreter, detect
from ebpf_otlp.pyframes.layouts import LAYOUTS, NONE, Layout
from ebpf_otlp.symbolize.elf import ElfObject
from ebpf_otlp.symbolize.procmaps import MapEntry, parse_maps

MAX_FRAMES = 64
MAX_THREADS = 4096
MAX_TEXT = 4096          # a name or file name longer than this is cut
FRAME_OWNED_BY_CSTACK = 3   # 3.12+: the shim frame an eval call from C begins with


class Memory:
    """Reads of another process's memory; OSError when an address is not mapped."""

    def __init__(self, pid: int):
        self.pid = pid
        self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)

    def read(self, addr: int, size: int) -> bytes:
        if addr <= 0:
            raise OSError(f"null address in process {self.pid}")
        data = os.pread(self._fd, size, addr)
        if len(data) != size:
            raise OSError(f"short read at {addr:#x} in process {self.pid}")
        return data

    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def i32(self, addr: int) -> int:
        return struct.unpack("<i", self.read(addr, 4))[0]

    def u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class PythonProcess:
    """A process's interpreter, with its addresses in that process."""
    pid: int
    interpreter: Interpreter
    layout: Layout
    runtime: int             # &_PyRuntime
    code_type: int           # &PyCode_Type (0: not known, objects are not type-checked)

    @property
    def version(self) -> tuple[int, int]:
        return self.interpreter.version


class _Files:
    """What find() reads from a file, kept by the file's identity (device, inode) as the
    mapping names it: parsing an interpreter's ELF costs 3-6 ms, and a Python service
    forks children (each one a Python process until its exec) many times a second."""

    MAX = 512

    def __init__(self):
        self._known: dict[tuple, object] = {}

    def get(self, key: tuple, read: Callable[[], object]):
        if key not in self._known:
            if len(self._known) >= self.MAX:
                self._known.clear()
            self._known[key] = read()
        return self._known[key]


_FILES = _Files()


def _detect(entry: MapEntry, open_path: str) -> Interpreter | None:
    """detect(), remembered; OSError when the file cannot be opened (not remembered)."""
    return _FILES.get(("detect", *entry.file_key, entry.path),
                      lambda: detect(entry.path, open_path, unreadable_raises=True))


def _load_bias(entry: MapEntry, open_path: str) -> int | None:
    """Runtime address minus ELF virtual address for the object mapped at `entry`."""
    def vaddr_of() -> int | None:
        with open(open_path, "rb") as f:
            return ElfObject(f, entry.path).offset_to_vaddr(entry.offset)
    vaddr = _FILES.get(("vaddr", *entry.file_key, entry.path, entry.offset), vaddr_of)
    return None if vaddr is None else entry.start - vaddr


def find(pid: int, entries: list[MapEntry] | None = None) -> PythonProcess | Interpreter | None:
    """The interpreter of process `pid`: a PythonProcess to walk, the Interpreter alone when
    its version or build is not walked (`unsupported` says why), or None if it has none.
    Files are opened through /proc/PID/root, so a container's interpreter is its own."""
    if entries is None:
        try:
            with open(f"/proc/{pid}/maps") as f:
                entries = parse_maps(f.read())
        except OSError:
            return None
    seen: set[str] = set()
    for entry in entries:
        if not entry.is_file or entry.path in seen or "python" not in os.path.basename(entry.path):
            continue
        seen.add(entry.path)
        open_path = f"/proc/{pid}/root{entry.path}"
        try:
            found = _detect(entry, open_path)
        except OSError:   # gone, or its root out of reach
            return None
        if found is None:
            continue
        if found.unsupported:
            return found
        try:
            bias = _load_bias(entry, open_path)
        except OSError:
            return None
        if bias is None:
            continue
        return PythonProcess(pid, found, LAYOUTS[found.version], bias + found.runtime_vaddr,
                             bias + found.code_type_vaddr if found.code_type_vaddr else 0)
    return None


@dataclass(frozen=True)
class ThreadState:
    address: int
    thread_id: int           # pthread_self(): the thread's fs base
    native_thread_id: int    # the kernel's tid (0 before 3.11)


def threads(proc: PythonProcess, mem: Memory) -> list[ThreadState]:
    """Every thread state of the main interpreter, first to last."""
    lay = proc.layout
    interp = mem.u64(proc.runtime + lay.runtime_interpreters_head)
    found, tstate = [], mem.u64(interp + lay.interp_threads_head) if interp else 0
    while tstate and len(found) < MAX_THREADS:
        native = mem.u64(tstate + lay.tstate_native_thread_id) if lay.tstate_native_thread_id != NONE else 0
        found.append(ThreadState(tstate, mem.u64(tstate + lay.tstate_thread_id), native))
        tstate = mem.u64(tstate + lay.tstate_next)
    return found


class RawFrame(NamedTuple):
    """One frame as the kernel's walk (bpf/lib/python.inc) records it, whatever the version:
    its code object, its instruction field (3.10: f_lasti; 3.11+: the instruction's
    address), its flag byte (3.11: is_entry; 3.12+: owner; 3.10: 0) and, as the kernel read
    it, the code's first line (0 where not read)."""
    code: int
    instr: int
    flag: int
    first_line: int = 0


class PyFrame(NamedTuple):
    """A frame made sense of: its code object and instruction (byte offset into the
    bytecode), whether an eval call from C began there (the native stack's
    _PyEval_EvalFrameDefault frame it belongs to ends with it), and the code's first line:
    with the address, what names a code object."""
    code: int
    offset: int
    entry: bool
    first_line: int = 0


def walk_raw(proc: PythonProcess, mem: Memory, tstate: int) -> list[RawFrame]:
    """The thread's frames, innermost first, up to MAX_FRAMES, read as the kernel reads them."""
    lay, version = proc.layout, proc.version
    frame = mem.u64(tstate + lay.tstate_frame)
    if lay.cframe_current_frame != NONE:   # 3.11, 3.12: through the _PyCFrame
        frame = mem.u64(frame + lay.cframe_current_frame) if frame else 0
    flag = lay.frame_is_entry if version == (3, 11) else lay.frame_owner
    frames: list[RawFrame] = []
    while frame and len(frames) < MAX_FRAMES:
        code = mem.u64(frame + lay.frame_code)
        instr = mem.i32(frame + lay.frame_instr) if version == (3, 10) else mem.u64(frame + lay.frame_instr)
        frames.append(RawFrame(code, instr, mem.u8(frame + flag) if flag != NONE else 0))
        frame = mem.u64(frame + lay.frame_previous)
    return frames


def interpret(proc: PythonProcess, raw: list[RawFrame]) -> list[PyFrame]:
    """The Python frames of a raw walk: instruction offsets, and where eval calls began."""
    lay, version = proc.layout, proc.version
    frames: list[PyFrame] = []
    for r in raw:
        if version == (3, 10):   # every Python call is its own eval call; f_lasti in code units
            lasti = r.instr & 0xFFFFFFFF
            frames.append(PyFrame(r.code, 0 if lasti >= 1 << 31 else lasti * 2, True, r.first_line))
        elif version == (3, 11):
            frames.append(PyFrame(r.code, r.instr - r.code - lay.code_bytecode, bool(r.flag), r.first_line))
        elif r.flag == FRAME_OWNED_BY_CSTACK:
            if frames:   # the shim under an eval call from C: the frame above began it
                frames[-1] = frames[-1]._replace(entry=True)
        else:
            frames.append(PyFrame(r.code, r.instr - r.code - lay.code_bytecode, False, r.first_line))
    return frames


def walk(proc: PythonProcess, mem: Memory, tstate: int) -> list[PyFrame]:
    """The thread's Python frames, innermost first."""
    return interpret(proc, walk_raw(proc, mem, tstate))


@dataclass(frozen=True)
class CodeInfo:
    qualname: str
    filename: str
    first_line: int
    lines: linetable.LineRanges

    def line_at(self, offset: int) -> int:
        """The line of the instruction at byte `offset`; the function's first line where
        the table names none."""
        line = self.lines.line_at(offset)
        return self.first_line if line is None else line


def read_code(proc: PythonProcess, mem: Memory, code: int) -> CodeInfo:
    """A code object's names and line table; OSError or ValueError when `code` is none."""
    lay = proc.layout
    if proc.code_type and mem.u64(code + 8) != proc.code_type:
        raise ValueError(f"{code:#x} is not a code object")
    name_field = lay.code_qualname if lay.code_qualname != NONE else lay.code_name
    first_line = mem.i32(code + lay.code_firstlineno)
    table = read_bytes(proc, mem, mem.u64(code + lay.code_linetable))
    return CodeInfo(read_str(proc, mem, mem.u64(code + name_field)),
                    read_str(proc, mem, mem.u64(code + lay.code_filename)),
                    first_line, linetable.decode(proc.version, table, first_line))


def read_bytes(proc: PythonProcess, mem: Memory, obj: int, limit: int = 1 << 20) -> bytes:
    lay = proc.layout
    size = mem.u64(obj + lay.bytes_size)
    if size > limit:
        raise ValueError(f"a bytes object of {size} bytes")
    return mem.read(obj + lay.bytes_data, size) if size else b""


_CODECS = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}


def read_str(proc: PythonProcess, mem: Memory, obj: int) -> str:
    """A compact str object's text (names and file names always are compact)."""
    lay = proc.layout
    length = mem.u64(obj + 16)
    state = mem.u8(obj + lay.unicode_state)
    kind, compact, ascii_ = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
    if not compact or kind not in _CODECS:
        raise ValueError(f"{obj:#x}: not a compact str")
    length = min(length, MAX_TEXT)
    if ascii_:
        return mem.read(obj + lay.unicode_ascii_data, length).decode("ascii", errors="replace")
    # PyCompactUnicodeObject: utf8_length, utf8 (and, before 3.12, wstr_length) follow
    data = obj + lay.unicode_ascii_data + (24 if proc.version < (3, 12) else 16)
    return mem.read(data, length * kind).decode(_CODECS[kind], errors="replace")
