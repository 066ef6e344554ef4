"""Resolve raw stacks to frames, from snapshots and files kept while processes lived."""

from __future__ import annotations

import errno
import os
import threading
from collections import Counter
from typing import Any, Callable

from ebpf_otlp.gcpause import gc_paused
from ebpf_otlp.records import KERNEL_MODULE, ContainerInfo, Frame, Mapping, RawStackSample, StackSample
from ebpf_otlp.runtime.processes import alive, container_of
from ebpf_otlp.symbolize.elf import ElfObject, VdsoImage
from ebpf_otlp.symbolize.kernel import KernelSymbols
from ebpf_otlp.symbolize.perfmap import PerfMap
from ebpf_otlp.symbolize.procmaps import VDSO, ProcessSnapshot, read_comm, snapshot

DEFAULT_MAX_OPEN_FILES = 512

# Losses, by cause. Files count once each, when a frame needs them; addresses once each.
FILE_MISSING = "symbol file missing"
TOO_MANY_OPEN = "too many open files"
FILE_UNREADABLE = "symbol file unreadable"
_TOO_MANY = {errno.EMFILE, errno.ENFILE}
_MISSING = {errno.ENOENT, errno.ENOTDIR, errno.ESRCH}


def _cause(errors: list[OSError]) -> str:
    codes = {e.errno for e in errors}
    if codes & _TOO_MANY:
        return TOO_MANY_OPEN
    return FILE_MISSING if codes <= _MISSING else FILE_UNREADABLE


class _MappedFile:
    """One mapped file: held open until its symbols are loaded, then closed (all it takes
    is in memory); or, past the open-file bound, only the paths to open it by later."""

    __slots__ = ("candidates", "paths", "path", "stream", "elf", "loss", "held", "loaded", "counted",
                 "functions", "lock")

    def __init__(self, candidates: tuple[str, ...], path: str):
        self.candidates, self.path = candidates, path
        self.paths = candidates   # kept: its call frame info is read by path, if a frame needs it
        self.stream = self.elf = self.loss = self.functions = None
        self.held = self.loaded = self.counted = False   # held: counts against the bound
        self.lock = threading.Lock()


class _NoFunctions:
    @staticmethod
    def function_at(vaddr: int) -> None:
        return None


_NO_FUNCTIONS = _NoFunctions()


class Symbolizer:
    """Keeps, per process and exec generation, a maps snapshot, and a handle on each mapped
    file until its symbols are loaded.

    `remember(pid, gen)` must be called while the process lives (the collector announces
    each process, and again after each exec, as soon as the kernel samples it); resolving
    happens at the end, each sample against the mappings of its own generation.

    At most `max_open_files` files are held open, so system-wide profiling cannot run out
    of descriptors; past that, a file is opened when a frame (or prepare_symbols) needs it,
    which works while its process lives or its path still holds it. Loading a file's
    symbols closes it, so the bound only counts files not yet loaded.

    prepare_symbols() may run in another thread while remember() runs in this one: the
    file table has a lock, and each file one around its open and parse.
    """

    def __init__(self, kernel_symbols: KernelSymbols | None = None,
                 max_open_files: int = DEFAULT_MAX_OPEN_FILES,
                 function_table: Callable[[tuple[str, ...], ElfObject], Any] | None = None,
                 interpreted: Any = None):
        # (paths, elf) -> what knows where each function starts (.function_at(vaddr)): for
        # stripped code, the unwind tables (unwind.tables.function_table); None: symbols only.
        self.function_table = function_table or (lambda paths, elf: _NO_FUNCTIONS)
        # What names an interpreter's frames and puts them among the native ones
        # (pyframes.names.PythonNames): .stack(pid, frames, native) and .forget(pids).
        self.interpreted = interpreted
        self.kernel = kernel_symbols or KernelSymbols()
        self.kernel_mapping = Mapping(KERNEL_MODULE, build_id=self.kernel.build_id)
        self.max_open_files = max_open_files
        self.processes: dict[tuple[int, int], ProcessSnapshot] = {}   # (pid, gen) -> snapshot
        self._latest: dict[int, int] = {}                              # pid -> newest gen
        self._files: dict[tuple[str, int], _MappedFile] = {}
        self._open_files = 0
        self._lock = threading.Lock()      # _files, _open_files, _losses
        self._losses: Counter[str] = Counter()
        self._perf_maps: dict[int, PerfMap] = {}
        self._vdso: dict[bytes, VdsoImage] = {}   # image -> its symbols: one per kernel and ABI
        self._refreshed: set[tuple[int, int]] = set()
        self._frame_cache: dict[tuple, Frame] = {}
        self._mapping_cache: dict[tuple, Mapping] = {}
        self._kernel_cache: dict[int, Frame] = {}
        self._caller_cache: dict[tuple[int, int], dict[int, Frame]] = {}

    # -- while processes live -------------------------------------------------
    def remember(self, pid: int, gen: int = 0) -> bool:
        """Snapshot a process's maps and open its mapped files now; False if it is gone."""
        snap = snapshot(pid)
        if snap is None:
            return False
        if snap.vdso:
            vdso = self._vdso.get(snap.vdso)
            if vdso is None:
                vdso = self._vdso[snap.vdso] = VdsoImage(snap.vdso).load()
            snap.vdso = vdso.image            # the one copy, not one per process
        self.processes[(pid, gen)] = snap
        self._latest[pid] = max(gen, self._latest.get(pid, gen))
        for entry in snap.entries:
            if not entry.is_file:
                continue
            with self._lock:   # opened before others can see it: no per-file lock needed
                if entry.file_key in self._files:
                    continue
                # map_files reaches deleted files and other mount namespaces; root/ the container's view.
                mapped = _MappedFile((f"/proc/{pid}/map_files/{entry.start:x}-{entry.end:x}",
                                      f"/proc/{pid}/root{entry.path}", entry.path), entry.path)
                if self._open_files < self.max_open_files:
                    mapped.held = self._open(mapped, keep_open=True)
                    self._open_files += mapped.held
                self._files[entry.file_key] = mapped
        perf_map = self._perf_maps.setdefault(pid, PerfMap(pid))
        perf_map.refresh()
        return True

    def forget_exited(self) -> int:
        """Drop the snapshots of processes that have exited (their samples were symbolized
        at the end of a window) and the files no remaining process maps, so an agent's state
        follows the live processes, not all that ever ran. Returns how many were dropped."""
        gone = {pid for pid, _gen in self.processes if not alive(pid)}
        if not gone:
            return 0
        self.processes = {k: v for k, v in self.processes.items() if k[0] not in gone}
        for pid in gone:
            self._latest.pop(pid, None)
            self._perf_maps.pop(pid, None)
        if self.interpreted:
            self.interpreted.forget(gone)
        self._refreshed = {k for k in self._refreshed if k[0] not in gone}
        used = {e.file_key for snap in self.processes.values() for e in snap.entries if e.is_file}
        with self._lock:
            unused = [k for k in self._files if k not in used]
            dropped = [self._files.pop(k) for k in unused]
        for mapped in dropped:
            with mapped.lock:
                self._release(mapped)
        return len(gone)

    def _open(self, mapped: _MappedFile, keep_open: bool) -> bool:
        """Open the file by its first reachable path (one thread at a time). Out of
        descriptors while remembering, it stays to be opened later; else a failure is final."""
        errors = []
        for path in mapped.candidates:
            try:
                mapped.stream = open(path, "rb")
            except OSError as e:
                errors.append(e)
                continue
            mapped.elf = ElfObject(mapped.stream, mapped.path)
            return True
        if not (keep_open and _cause(errors) == TOO_MANY_OPEN):
            mapped.loss = _cause(errors)
            mapped.candidates = ()
        return False

    def _elf(self, key: tuple[str, int]) -> ElfObject | None:
        """The file's ELF object with all its symbols loaded (opened now if it was not held),
        or None if it cannot be read."""
        mapped = self._files.get(key)
        if mapped is None:
            return None
        if not mapped.loaded:
            with mapped.lock:
                if not mapped.loaded:
                    if mapped.elf is None and mapped.loss is None:
                        self._open(mapped, keep_open=False)
                    try:
                        if mapped.elf is not None:
                            mapped.elf.load()
                    except Exception:   # a malformed file must not stop symbolizing the rest
                        mapped.elf, mapped.loss = None, FILE_UNREADABLE
                    self._release(mapped)
                    mapped.candidates = ()
                    mapped.loaded = True
        return mapped.elf

    def _function_offset(self, key: tuple[str, int], elf: ElfObject, file_offset: int) -> int | None:
        """The file offset where the function holding file_offset starts, from the file's
        call frame info (each FDE covers one function): where no symbol names a stripped
        file's code, its frames still add up by function."""
        mapped = self._files.get(key)
        vaddr = elf.offset_to_vaddr(file_offset)
        if mapped is None or vaddr is None:
            return None
        if mapped.functions is None:
            with mapped.lock:
                if mapped.functions is None:
                    mapped.functions = self.function_table(mapped.paths, elf)
        start = mapped.functions.function_at(vaddr)
        return None if start is None else elf.vaddr_to_offset(start)

    def _release(self, mapped: _MappedFile) -> None:
        if mapped.stream is not None:
            mapped.stream.close()
            mapped.stream = None
        if mapped.held:
            mapped.held = False
            with self._lock:
                self._open_files -= 1

    def prepare_symbols(self) -> int:
        """Load the build IDs and symbol tables of every file the processes remembered so far
        map (from the disk cache, or parsed and cached), so that they are ready before samples
        arrive. Meant to run in a thread while BPF compiles. Returns how many files are ready."""
        with self._lock:
            keys = list(self._files)
        self.kernel.load()
        return sum(self._elf(key) is not None for key in keys)

    @property
    def losses(self) -> dict[str, int]:
        """What could not be resolved, by cause (only causes that occurred)."""
        with self._lock:
            return {cause: n for cause, n in self._losses.items() if n}

    def _lost_file(self, key: tuple[str, int]) -> None:
        with self._lock:
            mapped = self._files.get(key)
            if mapped and mapped.loss and not mapped.counted:
                mapped.counted = True
                self._losses[mapped.loss] += 1

    def close(self) -> None:
        """Let go of the files still held; a later frame opens them again by path."""
        with self._lock:
            held = [m for m in self._files.values() if m.stream is not None]
        for mapped in held:
            with mapped.lock:
                if not mapped.loaded:
                    self._release(mapped)
                    mapped.elf = None

    def refresh_perf_maps(self) -> None:
        for perf_map in self._perf_maps.values():
            perf_map.refresh()

    # -- at the end -----------------------------------------------------------
    def _snapshot(self, pid: int, gen: int) -> ProcessSnapshot | None:
        """The generation's own snapshot; else (its announcement was lost) the newest."""
        snap = self.processes.get((pid, gen))
        if snap is None and pid in self._latest:
            snap = self.processes.get((pid, self._latest[pid]))
        return snap

    def process_name(self, pid: int, gen: int = 0) -> str:
        snap = self._snapshot(pid, gen)
        return snap.name if snap else (read_comm(pid) or "")

    def container(self, pid: int, gen: int = 0) -> ContainerInfo:
        snap = self._snapshot(pid, gen)
        return snap.container if snap else container_of(pid)

    def _snapshot_for(self, pid: int, gen: int, addr: int) -> ProcessSnapshot | None:
        snap = self._snapshot(pid, gen)
        newest = gen >= self._latest.get(pid, gen)   # only the newest maps can be re-read
        if (snap is None or snap.find(addr) is None) and newest and (pid, gen) not in self._refreshed:
            # Mapped after the snapshot (dlopen, JIT): look again once, if it still lives.
            self._refreshed.add((pid, gen))
            if self.remember(pid, gen):
                snap = self.processes[(pid, gen)]
        return snap

    def user_frame(self, pid: int, addr: int, leaf: bool, gen: int = 0) -> Frame:
        key = (pid, gen, addr, leaf)
        frame = self._frame_cache.get(key)
        if frame is None:
            frame = self._frame_cache[key] = self._user_frame(pid, addr, leaf, gen)
        return frame

    def _user_frame(self, pid: int, addr: int, leaf: bool, gen: int) -> Frame:
        # Callers' addresses are return addresses: look up the call instruction before them.
        lookup = addr if leaf else addr - 1
        snap = self._snapshot_for(pid, gen, addr)
        entry = snap.find(addr) if snap else None
        vdso = entry is not None and entry.path == VDSO and self._vdso.get(snap.vdso)
        if vdso:
            elf = vdso
        elif entry is None or not entry.is_file:
            perf_map = self._perf_maps.get(pid)
            name = perf_map.lookup(lookup) if perf_map else None
            if name:
                return Frame(name, "[jit]", addr, Mapping(f"/tmp/perf-{pid}.map"))
            module = (entry.path or "[anon]") if entry else "[unknown]"
            return Frame(f"[unknown] {module}" if entry else "[unknown]", module, addr)
        else:
            elf = self._elf(entry.file_key)
            if elf is None:
                self._lost_file(entry.file_key)
        file_offset = lookup - entry.start + entry.offset
        mapping = self._mapping_cache.get((pid, gen, entry.start))
        if mapping is None:
            mapping = self._mapping_cache[(pid, gen, entry.start)] = Mapping(
                entry.path, entry.start, entry.end, entry.offset, elf.build_id if elf else "")
        name = elf.function_at(file_offset) if elf else None
        if name is None:
            start = self._function_offset(entry.file_key, elf, file_offset) if elf and not vdso else None
            name = f"{os.path.basename(entry.path)}+{addr - entry.start + entry.offset if start is None else start:#x}"
        return Frame(name, entry.path, addr, mapping)

    def kernel_frame(self, addr: int) -> Frame:
        frame = self._kernel_cache.get(addr)
        if frame is None:
            name = self.kernel.lookup(addr) or f"[kernel] {addr:#x}"
            frame = self._kernel_cache[addr] = Frame(name, KERNEL_MODULE, addr, self.kernel_mapping,
                                                     kernel=True)
        return frame

    def frames(self, raw: RawStackSample) -> tuple[Frame, ...]:
        """Leaf first: kernel frames, then user frames (an interpreter's frames in place of
        the native frames that run them)."""
        kernel = [self.kernel_frame(a) for a in raw.kernel_ips]
        user: list[Frame] = []
        if raw.user_ips:
            # Only the first user frame can be a leaf; the rest share one cache per process.
            user.append(self.user_frame(raw.pid, raw.user_ips[0], not kernel, raw.gen))
            callers = self._caller_cache.setdefault((raw.pid, raw.gen), {})
            for a in raw.user_ips[1:]:
                frame = callers.get(a)
                if frame is None:
                    frame = callers[a] = self._user_frame(raw.pid, a, False, raw.gen)
                user.append(frame)
        if raw.python and self.interpreted:
            user = self.interpreted.stack(raw.pid, raw.python, user)
        return tuple(kernel + user)

    def symbolize(self, counts: dict[RawStackSample, tuple[int, ...]]) -> list[StackSample]:
        """Stacks with their values (one per sample type). Frames are resolved once per
        address in a pass, and the same Frame object is shared by every stack that has it
        (exporters intern by identity first)."""
        self.refresh_perf_maps()
        self._frame_cache, self._mapping_cache, self._kernel_cache = {}, {}, {}
        self._caller_cache = {}
        try:
            with gc_paused():
                return [StackSample(raw.pid, raw.tid, raw.thread_name,
                                    self.process_name(raw.pid, raw.gen), self.frames(raw), values,
                                    self.container(raw.pid, raw.gen), raw.cut, raw.span)
                        for raw, values in counts.items()]
        finally:   # a pass's caches: maps and perf maps may change before the next one
            self._frame_cache, self._mapping_cache, self._kernel_cache = {}, {}, {}
            self._caller_cache = {}
