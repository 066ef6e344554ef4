"""Resolve raw stacks to frames, from snapshots and files kept while processes lived."""

from __future__ import annotations

import os

from ebpf_otlp.records import KERNEL_MODULE, ContainerInfo, Frame, Mapping, RawStackSample, StackSample
from ebpf_otlp.runtime.processes import container_of
from ebpf_otlp.symbolize.elf import ElfObject
from ebpf_otlp.symbolize.kernel import KernelSymbols
from ebpf_otlp.symbolize.perfmap import PerfMap
from ebpf_otlp.symbolize.procmaps import MapEntry, ProcessSnapshot, read_comm, snapshot

KERNEL_MAPPING = Mapping(KERNEL_MODULE)


class Symbolizer:
    """Keeps, per process and exec generation, a maps snapshot, and an open handle on each
    mapped file.

    `remember(pid, gen)` must be called while the process lives (the collector announces
    each process, and again after each exec, as soon as the kernel samples it); resolving
    happens at the end, each sample against the mappings of its own generation.
    """

    def __init__(self, kernel_symbols: KernelSymbols | None = None):
        self.kernel = kernel_symbols or KernelSymbols()
        self.processes: dict[tuple[int, int], ProcessSnapshot] = {}   # (pid, gen) -> snapshot
        self._latest: dict[int, int] = {}                              # pid -> newest gen
        self._files: dict[tuple[str, int], ElfObject | None] = {}
        self._perf_maps: dict[int, PerfMap] = {}
        self._refreshed: set[tuple[int, int]] = set()

    # -- while processes live -------------------------------------------------
    def remember(self, pid: int, gen: int = 0) -> bool:
        """Snapshot a process's maps and open its mapped files now; False if it is gone."""
        snap = snapshot(pid)
        if snap is None:
            return False
        self.processes[(pid, gen)] = snap
        self._latest[pid] = max(gen, self._latest.get(pid, gen))
        for entry in snap.entries:
            if entry.is_file and entry.file_key not in self._files:
                self._files[entry.file_key] = self._open(pid, entry)
        perf_map = self._perf_maps.setdefault(pid, PerfMap(pid))
        perf_map.refresh()
        return True

    def _open(self, pid: int, entry: MapEntry) -> ElfObject | None:
        """Hold the file open (parsed later, only if a sample lands in it)."""
        # map_files reaches deleted files and other mount namespaces; root/ the container's view.
        candidates = (f"/proc/{pid}/map_files/{entry.start:x}-{entry.end:x}",
                      f"/proc/{pid}/root{entry.path}", entry.path)
        for path in candidates:
            try:
                return ElfObject(open(path, "rb"), entry.path)
            except OSError:
                continue
        return None

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
        # Callers' addresses are return addresses: look up the call instruction before them.
        lookup = addr if leaf else addr - 1
        snap = self._snapshot_for(pid, gen, addr)
        entry = snap.find(addr) if snap else None
        if entry is None or not entry.is_file:
            perf_map = self._perf_maps.get(pid)
            name = perf_map.lookup(lookup) if perf_map else None
            if name:
                return Frame(name, "[jit]", addr, Mapping(f"/tmp/perf-{pid}.map"))
            module = (entry.path or "[anon]") if entry else "[unknown]"
            return Frame(f"[unknown] {module}" if entry else "[unknown]", module, addr)
        elf = self._files.get(entry.file_key)
        file_offset = lookup - entry.start + entry.offset
        mapping = Mapping(entry.path, entry.start, entry.end, entry.offset,
                          elf.build_id if elf else "")
        name = elf.function_at(file_offset) if elf else None
        if name is None:
            name = f"{os.path.basename(entry.path)}+{addr - entry.start + entry.offset:#x}"
        return Frame(name, entry.path, addr, mapping)

    def kernel_frame(self, addr: int) -> Frame:
        name = self.kernel.lookup(addr) or f"[kernel] {addr:#x}"
        return Frame(name, KERNEL_MODULE, addr, KERNEL_MAPPING, kernel=True)

    def frames(self, raw: RawStackSample) -> tuple[Frame, ...]:
        """Leaf first: kernel frames, then user frames."""
        kernel = [self.kernel_frame(a) for a in raw.kernel_ips]
        user = [self.user_frame(raw.pid, a, i == 0 and not kernel, raw.gen)
                for i, a in enumerate(raw.user_ips)]
        return tuple(kernel + user)

    def symbolize(self, counts: dict[RawStackSample, int]) -> list[StackSample]:
        self.refresh_perf_maps()
        return [StackSample(raw.pid, raw.tid, raw.thread_name, self.process_name(raw.pid, raw.gen),
                            self.frames(raw), count, self.container(raw.pid, raw.gen))
                for raw, count in counts.items()]
