"""Loads processes' unwind tables into the BPF maps of bpf/lib/unwind.inc.

Each object's rows go into `unwind_rows` once, shared by every process that maps it; each
process gets `unwind_mappings` entries ((pid, address prefix) → the object's rows and load
bias). When the rows are full, the least recently seen processes give their room back and
fall back to frame pointers; that is counted, like every object without a table.

Loading runs in a worker thread: compiling a large library's table takes a second or two
the first time (then it comes from the disk cache), and the capture loop must not wait.
"""

from __future__ import annotations

import functools
import glob
import io
import os
import re
import queue
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from ebpf_otlp.errors import AgentError
from ebpf_otlp.runtime.maps import write_run
from ebpf_otlp.symbolize.elf import ElfObject
from ebpf_otlp.symbolize.procmaps import VDSO, MapEntry, own_vdso, parse_maps
from ebpf_otlp.unwind.tables import UnwindTable, cached_table, compile_table, load_table

BIG_FILE = 32 << 20   # larger binaries' first compiles (seconds each) wait their turn
RECHECK_S = 10.0      # how often a sampled process's maps are read again (dlopen, exec)

# Where an unwound stack ended: enum unwind_end in bpf/lib/unwind.inc.
ENDS = ("complete", "no table (frame-pointer step failed)", "unsupported or bad CFA",
        "depth limit", "read fault")


def prefixes(start: int, end: int) -> list[tuple[int, int]]:
    """[start, end) as aligned power-of-two blocks: (block start, address bits that match)."""
    out = []
    while start < end:
        size = start & -start if start else 1 << 64
        while size > end - start:
            size >>= 1
        out.append((start, 64 - (size.bit_length() - 1)))
        start += size
    return out


def warm_in_background(pids: list[int]) -> threading.Thread:
    """Compile the named processes' tables into the disk cache in a daemon thread, begun
    while BPF compiles. Nobody waits for it: samples taken before a table is in are walked
    by frame pointers and merged under their site (records.merge_cut), and the worker loads
    each table as it is ready. The thread runs at its creator's nice (the prepare thread's
    19: the BPF compile goes first where CPUs are few) until Unwinder.start gives it the
    agent's after the attach; children compile at tables.CHILD_NICE."""
    def warm():
        for pid in pids:
            warm_tables(pid)
    thread = threading.Thread(target=warm, name="unwind-warm", daemon=True)
    thread.start()
    return thread


# What nearly every process maps: the dynamic loader and libc (from ebpf-otlp's own maps,
# so this host's copies), and the C++ and Python runtimes where installed.
COMMON_MAPPED = re.compile(r"/(ld-linux[^/]*\.so\.\d|libc\.so\.6|libm\.so\.6)$")
COMMON_INSTALLED = ("libstdc++.so.6", "libgcc_s.so.1", "libpython3.*.so.1.0")
LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64")


def common_objects() -> list[str]:
    """The files whose tables a cold cache should have first (issue 18: a first run looks
    like a warm one): each by its real path, once."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            found += [e.path for e in parse_maps(f.read()) if e.is_file and COMMON_MAPPED.search(e.path)]
    except OSError:
        pass
    for d in LIB_DIRS:
        for pattern in COMMON_INSTALLED:
            found += sorted(glob.glob(os.path.join(d, pattern)))
    seen, out = set(), []
    for path in found:
        real = os.path.realpath(path)
        if real not in seen and os.path.isfile(real):
            seen.add(real)
            out.append(real)
    return out


def warm_common_in_background() -> threading.Thread:
    """While BPF compiles: the common objects' tables into the disk cache (those already
    there cost a lookup each), compiled at the worker's priority (tables.CHILD_NICE).
    Nobody waits for it; a launched process held for a table being compiled here waits
    for that one compile (load_table compiles a build ID once)."""
    def warm():
        for path in common_objects():
            try:
                with open(path, "rb") as f:
                    build_id = ElfObject(f, path, cache=None).build_id
                if cached_table(build_id) is None:
                    load_table(path, build_id or None)
            except (OSError, AgentError):
                continue
    thread = threading.Thread(target=warm, name="unwind-warm-common", daemon=True)
    thread.start()
    return thread


def warm_tables(pid: int) -> None:
    """Compile (or find in the disk cache) the tables of every object a process maps."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            entries = sorted((e for e in parse_maps(f.read()) if e.is_file), key=_code_size)
    except OSError:
        return
    for entry in entries:
        try:
            path, build_id, _vaddr = _identify(pid, entry)
            load_table(path, build_id or None)
        except OSError:
            continue


def _code_size(entry: MapEntry) -> int:
    """Smallest first: a compile takes about as long as the code is large, and a process
    with one 100 MB library should get all its others' tables meanwhile."""
    return entry.end - entry.start


def _identify(pid: int, entry: MapEntry) -> tuple[str, str, int | None]:
    """How to open a mapped file (map_files reaches deleted files and other mount
    namespaces), its build ID, and the ELF virtual address at the mapping's start."""
    path = f"/proc/{pid}/map_files/{entry.start:x}-{entry.end:x}"
    with open(path, "rb") as stream:
        elf = ElfObject(stream, entry.path, cache=None)
        return path, elf.build_id, elf.offset_to_vaddr(entry.offset)


@functools.cache
def vdso_table() -> UnwindTable:
    """The vDSO's table, from this process's copy (every process maps the same image)."""
    image = own_vdso()
    return compile_table(io.BytesIO(image)) if image else UnwindTable(b"", "no vDSO")


def _signature(entry: MapEntry) -> tuple:
    return entry.start, entry.end, entry.offset, entry.file_key


def _big_endian(addr: int) -> int:
    """The u64 whose in-memory bytes are addr big-endian (the LPM trie matches bytes)."""
    return int.from_bytes(addr.to_bytes(8, "big"), "little")


@dataclass
class _Object:
    first_row: int
    rows: int
    users: set[int] = field(default_factory=set)   # pids mapping it


@dataclass
class _Process:
    maps_hash: int = 0                              # of /proc/PID/maps when loaded
    checked: float = 0.0                            # monotonic time of that reading
    keys: list = field(default_factory=list)        # its unwind_mappings keys, as tuples
    objects: set = field(default_factory=set)
    complete: bool = True                           # False: tables left for the worker
    # (start, end, offset, file) -> (object key, its keys): what a new reading keeps as it
    # was (a process held at each library's mapping is read again and again)
    entries: dict = field(default_factory=dict)


class RowSpace:
    """First-fit allocation of row ranges in the fixed-size rows array."""

    def __init__(self, size: int):
        self.size = size
        self.free: list[tuple[int, int]] = [(0, size)]   # (start, length), sorted

    def take(self, n: int) -> int | None:
        for i, (start, length) in enumerate(self.free):
            if length >= n:
                self.free[i:i + 1] = [(start + n, length - n)] if length > n else []
                return start
        return None

    def give(self, start: int, n: int) -> None:
        self.free.append((start, n))
        self.free.sort()
        merged = [self.free[0]]
        for s, n in self.free[1:]:
            last_s, last_n = merged[-1]
            if last_s + last_n == s:
                merged[-1] = (last_s, last_n + n)
            else:
                merged.append((s, n))
        self.free = merged

    @property
    def used(self) -> int:
        return self.size - sum(n for _s, n in self.free)


class KernelTables:
    """The unwinder's maps, kept in step with the processes it samples."""

    def __init__(self, bpf, max_rows: int):
        self._rows = bpf["unwind_rows"]
        self._mappings = bpf["unwind_mappings"]
        self.space = RowSpace(max_rows)
        self._objects: dict[object, _Object] = {}
        self._processes: OrderedDict[int, _Process] = OrderedDict()   # least recent first
        self._lock = threading.RLock()   # and held around map writes: stop() closes them
        self._closed = False
        self._queue: queue.Queue = queue.Queue()   # (pid, fresh); None: stop
        self._thread: threading.Thread | None = None
        self.counts: Counter[str] = Counter()   # objects loaded/without tables, evictions
        self._first_seen: dict[int, float] = {}   # new pids asked for -> when (monotonic)
        self.ready_s: list[float] = []   # each new process: first asked for -> all its tables in

    # -- from the capture loop --------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="unwind-tables", daemon=True)
        self._thread.start()

    def want(self, pid: int, fresh: bool = False) -> None:
        """Load (or bring up to date) a process's tables soon, in the worker. `fresh`: it
        is new or has just exec'd, read its maps now rather than within RECHECK_S."""
        if fresh:
            with self._lock:
                if pid not in self._processes:
                    self._first_seen.setdefault(pid, time.monotonic())
        self._queue.put((pid, fresh))

    def stop(self) -> None:
        """No map writes after this returns (the maps are about to close); a compile still
        under way is left to finish in its daemon thread, for the disk cache."""
        with self._lock:
            self._closed = True
        if self._thread:
            self._queue.put(None)
            self._thread = None

    def _work(self) -> None:
        """Processes in the order they were seen, small objects first: a process whose
        only missing table is a large binary's waits until the queue is empty, so one
        100 MB binary does not hold back every other process's tables."""
        deferred: list[int] = []
        while True:
            try:
                item, limit = self._queue.get(timeout=0.1 if deferred else None), BIG_FILE
            except queue.Empty:
                item, limit = (deferred.pop(0), True), None
            if item is None:
                return
            pid, fresh = item
            try:
                if not self.update(pid, compile_limit=limit, fresh=fresh) and pid not in deferred:
                    deferred.append(pid)
            except Exception:      # one unreadable process must not stop the others
                self.counts["processes failed"] += 1

    # -- the work ---------------------------------------------------------------
    def update(self, pid: int, compile_limit: int | None = None, fresh: bool = True) -> bool:
        """Make the maps match the process's executable mappings now (it may have loaded
        libraries since it was first seen, or exec'd); forget it if it is gone. Tables not
        in the disk cache are compiled only for files up to `compile_limit` bytes (0: none;
        None: all): a large binary's first compile takes seconds. Returns False if some
        were left out for that reason. Unless `fresh`, a process read less than RECHECK_S
        ago is taken as it was (drains ask for every sampled process). The agent itself is
        left to frame pointers: it maps LLVM (170 MB of C++), whose tables would cost
        minutes to compile."""
        if pid == os.getpid():
            return True
        with self._lock:
            old = self._processes.get(pid)
            if old is not None:
                self._processes.move_to_end(pid)
                if not fresh and old.complete and time.monotonic() - old.checked < RECHECK_S:
                    return True
        try:
            with open(f"/proc/{pid}/maps") as f:
                text = f.read()
        except OSError:
            self.forget(pid)
            return True
        if old is not None and old.complete and old.maps_hash == hash(text):
            old.checked = time.monotonic()
            return True
        proc = _Process(maps_hash=hash(text), checked=time.monotonic())
        for entry in sorted(parse_maps(text), key=_code_size):
            if not (entry.is_file or entry.path == VDSO):
                continue
            kept = old.entries.get(_signature(entry)) if old is not None else None
            if kept is not None:   # mapped as before: its object and keys stay
                proc.entries[_signature(entry)] = kept
                proc.objects.add(kept[0])
                proc.keys += kept[1]
            else:
                self._add_mapping(pid, proc, entry, compile_limit)
        with self._lock:
            self._processes[pid] = proc
            self._processes.move_to_end(pid)
            if old is not None:
                self._release(pid, old, keep=proc)
            if proc.complete and pid in self._first_seen:
                self.ready_s.append(time.monotonic() - self._first_seen.pop(pid))
                del self.ready_s[:-4096]   # the latest, for the median and the longest
        return proc.complete

    def forget(self, pid: int) -> None:
        with self._lock:
            self._first_seen.pop(pid, None)   # one that exited before all its tables were in
            proc = self._processes.pop(pid, None)
            if proc is not None:
                self._release(pid, proc, keep=_Process())

    def _release(self, pid: int, proc: _Process, keep: _Process) -> None:
        """Drop what `proc` holds and `keep` does not (under the lock)."""
        if self._closed:
            return
        for key in set(proc.keys) - set(keep.keys):
            try:
                del self._mappings[self._mappings.Key(*key)]
            except KeyError:
                pass
        for obj_key in proc.objects - keep.objects:
            obj = self._objects.get(obj_key)
            if obj is None:
                continue
            obj.users.discard(pid)
            if not obj.users:
                del self._objects[obj_key]
                if obj.rows:
                    self.space.give(obj.first_row, obj.rows)

    def forget_exited(self) -> None:
        with self._lock:
            pids = set(self._processes) | set(self._first_seen)
        for pid in pids:
            if not os.path.exists(f"/proc/{pid}"):
                self.forget(pid)

    def _add_mapping(self, pid: int, proc: _Process, entry: MapEntry, compile_limit: int | None) -> None:
        try:
            if entry.path == VDSO:   # the kernel's, the same in every process
                obj_key, vaddr, path, build_id = VDSO, 0, "", ""
            else:
                path, build_id, vaddr = _identify(pid, entry)
                obj_key = build_id or entry.file_key
            with self._lock:
                obj = self._objects.get(obj_key)
            if obj is None:
                table = vdso_table() if obj_key == VDSO else cached_table(build_id)
                if table is None:
                    if compile_limit is not None and os.stat(path).st_size > compile_limit:
                        proc.complete = False
                        return
                    table = load_table(path, build_id or None)
                obj = self._place(obj_key, table, pid)
        except OSError:
            self.counts["objects unreadable"] += 1
            return
        if obj is None or vaddr is None:
            return
        with self._lock:
            obj.users.add(pid)
        proc.objects.add(obj_key)
        keys: list = []
        proc.entries[_signature(entry)] = (obj_key, keys)
        if not obj.rows:              # no table: frame pointers there, as without an entry
            return
        value = self._mappings.Leaf(entry.start, entry.end, entry.start - vaddr, obj.first_row, obj.rows)
        with self._lock:
            if self._closed:
                return
            for block, bits in prefixes(entry.start, entry.end):
                key = (32 + bits, pid, _big_endian(block))
                self._mappings[self._mappings.Key(*key)] = value
                keys.append(key)
        proc.keys += keys

    def _place(self, obj_key, table, pid: int) -> _Object | None:
        """Write an object's rows into free room, evicting the least recently seen
        processes if needed; None if it has no table or cannot fit."""
        n = len(table)
        if n == 0:   # remembered as such: not compiled again for every process mapping it
            self.counts[f"objects without a table ({table.source})"] += 1
            obj = _Object(0, 0)
            with self._lock:
                self._objects[obj_key] = obj
            return obj
        with self._lock:
            first = self.space.take(n)
        while first is None:
            victim = self._least_recent(besides=pid)
            if victim is None:
                self.counts["objects left to frame pointers (tables full)"] += 1
                return None
            self.forget(victim)
            self.counts["processes left to frame pointers (tables full)"] += 1
            with self._lock:
                first = self.space.take(n)
        with self._lock:
            if self._closed:
                return None
            write_run(self._rows, first, table.rows)
            obj = _Object(first, n)
            self._objects[obj_key] = obj
        self.counts["objects with a table"] += 1
        return obj

    def _least_recent(self, besides: int) -> int | None:
        with self._lock:
            return next((p for p in self._processes if p != besides), None)

    def loaded(self) -> dict[str, int]:
        with self._lock:
            return {"processes": len(self._processes), "objects": len(self._objects),
                    "rows": self.space.used}
