"""Heap collector: allocator uprobes (bpf/heap.bpf.c) → sampled allocations and frees per
stack, and the sampled allocations still live."""

from __future__ import annotations

import ctypes as ct
import math
import os
import time
from typing import Callable

from ebpf_otlp.pyframes import kernel as pykernel
from ebpf_otlp.pyframes.process import PythonProcess
from ebpf_otlp.signals.collector import Collector, StatsEnum
from ebpf_otlp.signals.targets import Targets
from ebpf_otlp.errors import AgentError
from ebpf_otlp.records import RawStackSample
from ebpf_otlp.signals.heap.records import HeapCounts, HeapPeak, LiveAllocation
from ebpf_otlp.symbolize.elf import ElfObject
from ebpf_otlp.unwind import unwinder
from ebpf_otlp.unwind.unwinder import Unwinder, is_cut, look_up_stacks

# (symbol, entry program): the allocators a process may call; one return program, alloc_return.
ALLOCATORS = (("malloc", "malloc_enter"), ("calloc", "calloc_enter"), ("realloc", "realloc_enter"),
              ("reallocarray", "reallocarray_enter"), ("posix_memalign", "posix_memalign_enter"),
              ("aligned_alloc", "memalign_enter"), ("memalign", "memalign_enter"),
              ("valloc", "malloc_enter"), ("pvalloc", "malloc_enter"))
ALLOCATOR_FUNCTIONS = {name for name, *_ in ALLOCATORS} | {"free"}
# glibc's names for the same entry points and the paths that mmap for them.
GLIBC_MALLOC_INTERNALS = {"__libc_malloc", "__libc_calloc", "__libc_realloc", "__libc_memalign",
                          "__libc_valloc", "__libc_pvalloc", "__posix_memalign", "_mid_memalign",
                          "sysmalloc", "_int_malloc", "_int_realloc", "_int_memalign", "mremap_chunk",
                          "tcache_init", "malloc_hook_ini"}
# `enum heap_stat` of bpf/heap.bpf.c, in its order; the unwinder's counters, then the
# sampled bytes in use follow.
STATS = StatsEnum(("sampled", "freed", "live map full", "stack map full", "stack lost", "ring buffer full",
                   *pykernel.STATS), processed="sampled",
                  losses={"live map full": "free not matched (live-allocation map full)",
                          "stack map full": "allocation site dropped (stack-count map full)",
                          "stack lost": "allocation stack lost (stack-id collision)",
                          "ring buffer full": "new process not announced (ring buffer full)",
                          **pykernel.LOSSES},
                  extra=unwinder.COUNTERS)
STAT_INUSE_BYTES = STATS.size
PEAK_STEP = 1 / 32   # a high this much above the last one read the stacks' counts again
TEST_RDI = b"\x48\x85\xff"   # test %rdi,%rdi: single-stepped by uprobes; the next one is not


def exponential_draws(rate: int, n: int = 1024) -> list[int]:
    """Quantiles of an exponential distribution with mean `rate`: the kernel picks one at
    random for each new countdown (no floating point in BPF)."""
    return [max(1, min(int(-math.log(1 - (i + 0.5) / n) * rate), 2**32 - 1)) for i in range(n)]


def weight(size: float, rate: int) -> float:
    """How many allocations of `size` bytes one sample stands for (Go's unsampling)."""
    if rate <= 0 or size <= 0:
        return 1.0
    return 1.0 / -math.expm1(-size / rate)


def allocator_library(pids: list[int], explicit: str | None) -> str:
    """The allocator's library: --lib, else the libc the target maps (or this process's)."""
    if explicit:
        if not os.path.isfile(explicit):
            raise AgentError(f"--lib {explicit}: no such file")
        return explicit
    for pid in pids or [os.getpid()]:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    path = line.split(None, 5)[-1].strip()
                    if os.path.basename(path).startswith("libc.so"):
                        return path
        except OSError:
            continue
    raise AgentError(f"pid {', '.join(map(str, pids))} does not map libc: name its allocator with "
                     "--lib PATH (jemalloc, tcmalloc, or the executable itself if static)")


def elf_offsets(path: str, addrs: list[int]) -> list[int]:
    """File offsets of link-time addresses (uprobe_multi links take offsets)."""
    with open(path, "rb") as f:
        elf = ElfObject(f, path, cache=None)
        offsets = [elf.vaddr_to_offset(a) for a in addrs]
    if None in offsets:
        raise OSError(0, f"{path}: an allocator is outside the file's loaded segments")
    return offsets


def probe_offset(elf: ElfObject, vaddr: int, path: str) -> int:
    """Where to attach in a function: past a first `test %rdi,%rdi` (glibc's free), which
    the kernel would single-step (a second trap), since %rdi still holds the argument."""
    offset = elf.vaddr_to_offset(vaddr)
    if offset is None:
        return 0
    with open(path, "rb") as f:
        f.seek(offset)
        return 3 if f.read(3) == TEST_RDI else 0


class HeapCollector(Collector):
    """Samples allocations by bytes (`rate`, mean bytes between samples; 0: every call) in
    the processes `pids` (or a launched command and what it forks).

    With `python` (and the table unwinder), a sampled allocation's Python frames are walked
    too, for the processes named by walk_python() (as CpuSampler's)."""

    name = "memleak"

    def __init__(self, pids: list[int], rate: int, library: str | None = None,
                 symbol_prefix: str = "", no_free: bool = False, follow_forks: bool = False,
                 interval_s: float = 10.0, max_live: int = 1 << 18,
                 on_new_process: Callable[[int, int], object] = lambda pid, gen: None,
                 unwind: str = "fp", mmap: bool = True, python: bool = False,
                 on_python_stack: Callable[[int, tuple], object] = lambda pid, frames: None):
        super().__init__()
        self._python = pykernel.KernelWalk(on_python_stack) if python else None
        self._py_stacks: dict[int, tuple] = {}           # hash -> frames (py_stacks_0 is kept)
        self.mmap = mmap
        self.unwinder = Unwinder(unwind)
        self._unwound: dict[int, tuple[int, ...]] = {}   # hash -> frames (user_stacks is kept)
        self.targets = Targets(list(pids), follow_forks=follow_forks)
        self.pids, self.rate, self.library = list(pids), rate, library
        self.symbol_prefix, self.no_free, self.follow_forks = symbol_prefix, no_free, follow_forks
        self.interval_s, self.max_live = interval_s, max_live
        self.on_new_process = on_new_process
        self.attached: list[str] = []
        self.return_probes = ""
        self._links: list[int] = []
        self._probed: set[int] = set()        # processes the allocator's probes are on
        self._announced: list[int] = []
        self._bpf = None
        self._clock_offset = time.time_ns() - time.monotonic_ns()
        self._peak_inuse = 0                  # the highest sampled bytes in use read so far
        self._peak: HeapPeak | None = None    # the counts there, until the next drain

    def start(self) -> None:
        lib = allocator_library(self.pids, self.library)
        with open(lib, "rb") as f:
            elf = ElfObject(f, lib, cache=None)
            functions = elf.global_functions()   # .symtab too: a static executable's malloc
            symbols = {name: functions.get(self.symbol_prefix + name) for name, *_ in ALLOCATORS}
            free_at = functions.get(self.symbol_prefix + "free")
            free_off = probe_offset(elf, free_at, lib) if free_at else 0
        if not any(symbols.values()):
            raise AgentError(f"{lib} has no {self.symbol_prefix}malloc: not an allocator "
                             "(use --lib and --symbol-prefix for jemalloc, tcmalloc, ...)")
        self._bpf = self.unwinder.load("heap", {
            "RATE": self.rate, "MAX_LIVE": self.max_live, "MAX_STACKS": 1 << 16, "MAX_KEYS": 1 << 16,
            **self.targets.defines(), "SESSIONS": True, "MMAP": self.mmap,
            "HOLD_NEW_CODE": self.follow_forks, **(self._python.defines() if self._python else {})})
        if self._python and self.unwinder.tables:
            self._python.attach(self._bpf)
        else:   # the walk follows the table unwinder's
            self._python = None
        self.unwinder.start([] if self.follow_forks else self.pids)
        self.targets.install(self._bpf)
        draws = self._bpf["draws"]
        for i, d in enumerate(exponential_draws(self.rate or 1)):
            draws[ct.c_int(i)] = ct.c_uint32(d)
        # Probes for these processes only: a uprobe on every process's libc would make each
        # of them trap on every malloc (and linking one races with processes coming and
        # going). In launch mode what the command forks is probed at its exec (held there,
        # bpf/lib/hold.inc), before it runs; a child that forks without exec is not.
        chosen, seen = [], set()
        for name, entry in ALLOCATORS:
            addr = symbols[name]
            if addr and addr not in seen:   # aligned_alloc and memalign are one function
                seen.add(addr)
                chosen.append((name, entry, addr))
        self._plan = (lib, chosen, elf_offsets(lib, [c[2] for c in chosen]),
                      free_at + free_off if free_at and not self.no_free else None)
        self._sessions: dict[str, int] = {}
        try:
            self._load_sessions(chosen)
            for pid in self.pids:
                self._probe(pid)
            self.return_probes = "sampled calls only (uprobe sessions)"
        except OSError as e:   # before Linux 6.13: a return probe on every call
            self._close_links()
            self._sessions, self._probed = {}, set()
            for pid in self.pids:
                self._probe(pid)
            self.return_probes = f"every call (no uprobe sessions here: {e.strerror or e})"
        self.attached += [c[0] for c in chosen]
        if free_at and not self.no_free:
            self.attached.append(f"free+{free_off}" if free_off else "free")
        if self.mmap:   # the tracepoints attached as the program loaded
            self.attached.append("mmap" + ("" if self.no_free else ", munmap"))
            if self.no_free:
                self._bpf.detach_tracepoint(tp=b"syscalls:sys_enter_munmap")
        self.library = lib
        self._bpf["new_tasks"].open_ring_buffer(self._on_new_task)
        self.unwinder.hold(self._bpf, self.follow_forks)

    def _load_sessions(self, chosen: list) -> None:
        """The uprobe_multi session programs (Linux 6.13+), one per entry program (linking
        one raises OSError where the kernel has none; so does EBPF_OTLP_UPROBE_SESSIONS=0,
        which tries the older kernels' way here)."""
        from bcc import BPF

        from ebpf_otlp.runtime.uprobe_multi import BPF_TRACE_UPROBE_SESSION

        if os.environ.get("EBPF_OTLP_UPROBE_SESSIONS") == "0":
            raise OSError(0, "EBPF_OTLP_UPROBE_SESSIONS=0")
        for _name, entry, _addr in chosen:
            program = entry.replace("_enter", "_session")
            if program not in self._sessions:
                self._sessions[program] = self._bpf.load_func(
                    program.encode(), BPF.KPROBE, attach_type=BPF_TRACE_UPROBE_SESSION).fd

    def _probe(self, pid: int) -> None:
        """The allocator's probes, for one process (from before its exec, or while it is
        held at it: the breakpoints go in as it maps the library)."""
        from ebpf_otlp.runtime.uprobe_multi import link_session

        if pid in self._probed:
            return
        self._probed.add(pid)
        lib, chosen, offsets, free_addr = self._plan
        if self._sessions:
            by_program: dict[str, list[int]] = {}
            for (_name, entry, _addr), offset in zip(chosen, offsets):
                by_program.setdefault(entry.replace("_enter", "_session"), []).append(offset)
            for program, offs in by_program.items():
                self._links.append(link_session(self._sessions[program], lib, offs, pid))
        else:
            for _name, entry, addr in chosen:
                self._bpf.attach_uprobe(name=lib.encode(), addr=addr, fn_name=entry.encode(), pid=pid)
                self._bpf.attach_uretprobe(name=lib.encode(), addr=addr, fn_name=b"alloc_return", pid=pid)
        if free_addr is not None:
            self._bpf.attach_uprobe(name=lib.encode(), addr=free_addr, fn_name=b"free_enter", pid=pid)

    def _close_links(self) -> None:
        for fd in self._links:
            os.close(fd)
        self._links = []

    def walk_python(self, pid: int, proc: PythonProcess) -> None:
        """Walk the Python frames of process `pid`'s sampled allocations from now on."""
        if self._python:
            self._python.walk(pid, proc)

    def _on_new_task(self, _ctx, data, _size) -> None:
        pid, _gen, held = ct.cast(data, ct.POINTER(ct.c_uint32 * 3)).contents   # struct new_task
        self._announced.append((pid, bool(held)))

    def poll(self, timeout_ms: int) -> bool:
        self._bpf.ring_buffer_poll(timeout_ms)
        return True

    def ring_fds(self) -> list[int]:
        return [self._bpf["new_tasks"].map_fd] + (self._python.ring_fds() if self._python else [])

    def handle_events(self) -> None:
        announced, self._announced = self._announced, []
        for pid, held in announced:   # its maps first, while it lives
            try:
                if held:   # launch mode, at its exec: probed before it runs
                    self._probe(pid)
                self.on_new_process(pid, 0)
            finally:
                if held:   # hold.inc: its tables, then it runs on
                    self.unwinder.release(pid, self.stats)
        self.unwinder.seen(pid for pid, held in announced if not held)
        if self._python:
            self._python.handle_events()
        self._watch_peak()

    def _watch_peak(self) -> None:
        """Between drains (each turn of the capture loop): one counter says how many sampled
        bytes are in use; at a new high, the stacks' counts are read, so the peak is known by
        stack even when it comes and goes between drains (a program freeing all at exit)."""
        inuse = sum(self._bpf["stats"][ct.c_int(STAT_INUSE_BYTES)]) % 2**64   # CPUs' shares wrap
        if inuse > self._peak_inuse * (1 + PEAK_STEP):
            self._peak_inuse = inuse
            self._peak = HeapPeak(time.time_ns(), self._read_counts(self._resolver()[0]))

    def _resolver(self) -> tuple[Callable, dict]:
        """A key -> stack function, each stack walked once, and the stacks it walked."""
        stacks: dict[tuple, RawStackSample] = {}

        def stack(key) -> RawStackSample:
            k = (key.tgid, key.stack_id, key.caller, key.user_stack_hash, key.via_mmap, key.py_stack_hash)
            if k not in stacks:
                stacks[k] = self._stack(*k)
            return stacks[k]
        return stack, stacks

    def _read_counts(self, stack: Callable) -> list[HeapCounts]:
        return [HeapCounts(stack(k), v.allocs, v.alloc_bytes, v.frees, v.free_bytes, bool(k.via_mmap))
                for k, v in self._bpf["by_stack"].items()]

    def _stack(self, tgid: int, stack_id: int, caller: int, unwound: int, via_mmap: int,
               python: int) -> RawStackSample:
        """An allocator call's stack starts at its caller (ips[0] is inside the allocator);
        an mmap's, in the mmap wrapper, where the syscall was made."""
        if self.unwinder.tables:   # walked from the allocator's first instruction
            look_up_stacks(self._bpf["user_stacks"], (unwound,), self._unwound)
            ips = self._unwound.get(unwound, ())
            if python and self._python:
                look_up_stacks(self._bpf["py_stacks_0"], (python,), self._py_stacks, pykernel.frames)
            return RawStackSample(tgid, tgid, "", ips if via_mmap else ips[1:], (), cut=is_cut(ips),
                                  python=self._py_stacks.get(python, ()))
        ips = tuple(self._bpf["stacks"].walk(stack_id)) if stack_id >= 0 else ()
        if via_mmap:
            return RawStackSample(tgid, tgid, "", ips, ())
        # At the allocator's first instruction its caller is not yet on the frame chain:
        # the return address at the stack pointer names it.
        return RawStackSample(tgid, tgid, "", (caller, *ips[1:]) if caller else ips[1:], ())

    def drain(self) -> list:
        """Cumulative: every stack's sampled counts, and the sampled allocations still live;
        and the counts at the highest sampled bytes in use read since the last drain."""
        self.handle_events()
        stack, stacks = self._resolver()
        now = time.monotonic_ns()
        records: list = self._read_counts(stack)
        records += [LiveAllocation(stack(v.where), v.size, now - v.ts_ns, bool(v.where.via_mmap))
                    for v in self._bpf["live"].values()]
        if self._peak:
            records.append(self._peak)
            self._peak = None
        total = STATS.read(self._bpf["stats"], self.stats)
        self.unwinder.report(self.stats, total[STATS.extra_start:])
        if self._python:
            self._python.report(self.stats, {n: total[STATS[n]] for n in pykernel.STATS})
        self.stats.drains += 1
        self.unwinder.drained(tgid for tgid, *_ in stacks)
        return records

    def progress(self) -> str:
        taken = sum(self._bpf["stats"][ct.c_int(0)]) if self._bpf else self.stats.processed
        return f"{taken} allocations sampled"

    def stop(self) -> list:
        if self._bpf is None:
            return []
        self.unwinder.stop_holding(self.handle_pending)
        self.poll(0)
        records = self.drain()
        self._close_links()
        self.unwinder.stop()
        self._bpf.cleanup()
        self._bpf = None
        return records
