"""Processors: what each collector's drained records become.

A processor owns one collector, takes the records of each drain (`add`), and on demand
turns what it gathered into the finished result the output stage writes: a symbolized
`Profile`, a `SyscallReport`. Collectors stay ignorant of symbols and output; exporters
of BPF. `reset()` starts a new window (the agent's consecutive profiles).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ebpf_otlp.collectors.base import Collector
from ebpf_otlp.collectors.cpu import CpuSampler
from ebpf_otlp.collectors.heap import ALLOCATOR_FUNCTIONS, GLIBC_MALLOC_INTERNALS, HeapCollector, weight
from ebpf_otlp.collectors.syscalls import SyscallCollector
from ebpf_otlp.collectors.tcp import TcpCollector
from ebpf_otlp.records import (CollectorStats, Connection, HeapCounts, HeapPeak, HeapReport, LeakRow,
                               NetReport, Profile, RawStackSample,
                               SyscallReport, SyscallStats, UdpFlow, ValueType, counted_shape,
                               cpu_shape, heap_shape, off_cpu_shape)
from ebpf_otlp.runtime.perf import COUNTED
from ebpf_otlp.symbolize.symbolizer import Symbolizer


class Processor:
    collector: Collector
    periodic = False     # True: its result is exported at every drain (metrics), not only at the end

    def prepare(self) -> None:
        """Work that can overlap the collector's BPF compile (it runs in a thread)."""

    def add(self, records: list) -> None:
        raise NotImplementedError

    def result(self):
        raise NotImplementedError

    def reset(self, start_ns: int | None = None) -> None:
        """Begin a new window at start_ns (default now): the last one's end, so windows
        are contiguous."""
        raise NotImplementedError


@dataclass
class CpuSettings:
    hz: int = 99
    pids: list[int] = field(default_factory=list)   # empty: every process
    user_stacks: bool = True
    kernel_stacks: bool = True
    event: str = "cpu-clock"
    drain_s: float = 2.0
    off_cpu: bool = False                # weigh stacks by time off CPU, from sched_switch
    min_block_ns: int = 1000
    switch_budget: float = 5000          # off-CPU: switches/s walked in full (0: no limit)
    follow_forks: bool = False           # launch mode: trace what the targets fork
    period: int = 0                      # counted events (page-faults): one sample every N
    unwind: str = "auto"                 # user stacks: auto | fp | dwarf (tables from .eh_frame)
    comm: str | None = None              # only processes with this command name
    include_self: bool = False           # ebpf-otlp's own processes too


class StackProcessor(Processor):
    """CPU (or off-CPU) stacks: counts raw stacks across drains, symbolizes at the end.

    The symbolizer snapshots each process the kernel announces while it lives, so a
    process that exits before the end is still named."""

    def __init__(self, settings: CpuSettings, symbolizer: Symbolizer | None = None):
        self.settings = settings
        self.symbolizer = symbolizer or Symbolizer()
        self.collector = CpuSampler(
            settings.hz, settings.pids, settings.user_stacks, settings.kernel_stacks,
            settings.event, settings.drain_s, on_new_process=self.symbolizer.remember,
            off_cpu=settings.off_cpu, min_block_ns=settings.min_block_ns,
            switch_budget=settings.switch_budget, follow_forks=settings.follow_forks,
            period=settings.period, unwind=settings.unwind, comm=settings.comm,
            include_self=settings.include_self)
        self.counts: Counter[RawStackSample] = Counter()
        self.window_start_ns = time.time_ns()

    def prepare(self) -> None:
        """Snapshot the named processes and read their symbol tables (from the on-disk
        cache when warm) while BPF compiles."""
        for pid in self.settings.pids:
            self.symbolizer.remember(pid)
        if self.settings.user_stacks and not self.settings.follow_forks:
            self.collector.unwinder.warm(self.settings.pids)
        self.symbolizer.prepare_symbols()

    def add(self, records: list[tuple[RawStackSample, int]]) -> None:
        for raw, count in records:
            self.counts[raw] += count

    def reset(self, start_ns: int | None = None) -> None:
        self.counts = Counter()
        self.window_start_ns = start_ns or time.time_ns()
        self.symbolizer.forget_exited()   # a long-running agent keeps only live processes

    def result(self, end_ns: int | None = None) -> Profile:
        s = self.settings
        end_ns = end_ns or time.time_ns()
        if s.off_cpu:
            shape = off_cpu_shape()
        elif s.event in COUNTED:
            shape = counted_shape(s.event, ValueType(*COUNTED[s.event]), s.period)
        else:
            shape = cpu_shape(s.hz, s.event)
        period = shape["period"]
        values = (lambda c: (c,)) if s.off_cpu else (lambda c: (c, c * period))
        samples = self.symbolizer.symbolize({raw: values(c) for raw, c in self.counts.items()})
        stats = self.collector.stats.merged(CollectorStats(lost=self.symbolizer.losses))
        return Profile(samples=samples, start_ns=self.window_start_ns,
                       duration_ns=end_ns - self.window_start_ns, stats=stats, **shape)


@dataclass
class SyscallSettings:
    pids: list[int] = field(default_factory=list)
    comm: str | None = None
    syscalls: list[int] = field(default_factory=list)
    interval_s: float = 10.0
    latency: bool = True
    latency_budget: float = 100_000   # syscalls/s timed in full; 0: no limit
    follow_forks: bool = False
    include_self: bool = False


class SyscallProcessor(Processor):
    """Cumulative stats per (process, syscall) since the start; exported every interval."""

    periodic = True

    def __init__(self, settings: SyscallSettings, max_keys: int = 262144):
        self.settings = settings
        self.collector = SyscallCollector(settings.pids, settings.comm, settings.syscalls,
                                          settings.latency, settings.latency_budget,
                                          max_keys=max_keys, interval_s=settings.interval_s,
                                          follow_forks=settings.follow_forks,
                                          include_self=settings.include_self)
        self.by_key: dict[tuple[int, int], SyscallStats] = {}
        self.window_start_ns = time.time_ns()

    def add(self, records: list[SyscallStats]) -> None:
        for s in records:
            have = self.by_key.get((s.pid, s.nr))
            if have is None:
                self.by_key[(s.pid, s.nr)] = s
            else:
                have.merge(s)

    def reset(self, start_ns: int | None = None) -> None:
        self.by_key = {}
        self.window_start_ns = start_ns or time.time_ns()

    def result(self, end_ns: int | None = None) -> SyscallReport:
        c = self.collector
        end_ns = end_ns or time.time_ns()
        return SyscallReport(list(self.by_key.values()), self.window_start_ns,
                             end_ns - self.window_start_ns, self.settings.latency,
                             CollectorStats(c.stats.processed, dict(c.stats.lost), c.stats.drains,
                                            c.stats.share),
                             self.settings.latency_budget, c.timing_share)


@dataclass
class NetSettings:
    pids: list[int] = field(default_factory=list)
    comm: str | None = None
    ports: list[int] = field(default_factory=list)
    hooks: str = "auto"                # auto, tracepoints or kprobes
    rtt: bool = False                  # RTT histogram from every ACK (tcp:tcp_probe)
    udp: bool = True
    max_conns: int = 65536
    interval_s: float = 10.0           # how often metrics are exported
    follow_forks: bool = False
    include_self: bool = False


class NetProcessor(Processor):
    """Connections as they close (each reaches the output stage once, at the next drain:
    spans and live table rows), UDP flows summed per process and peer; metrics cumulative."""

    periodic = True

    def __init__(self, settings: NetSettings):
        self.settings = settings
        self.collector = TcpCollector(settings.pids, settings.comm, settings.ports, settings.hooks,
                                      settings.rtt, settings.udp, settings.max_conns,
                                      follow_forks=settings.follow_forks,
                                      include_self=settings.include_self)
        self.connections: list[Connection] = []
        self.udp: dict[tuple, UdpFlow] = {}
        self.window_start_ns = time.time_ns()

    def add(self, records: list) -> None:
        for r in records:
            if isinstance(r, Connection):
                self.connections.append(r)
            else:
                have = self.udp.get(r.key)
                if have is None:
                    self.udp[r.key] = r
                else:
                    have.bytes += r.bytes
                    have.datagrams += r.datagrams

    def reset(self, start_ns: int | None = None) -> None:
        self.connections, self.udp = [], {}
        self.window_start_ns = start_ns or time.time_ns()

    def result(self, end_ns: int | None = None) -> NetReport:
        c = self.collector
        end_ns = end_ns or time.time_ns()
        return NetReport(list(self.connections), list(self.udp.values()), self.window_start_ns,
                         end_ns - self.window_start_ns, c.hooks,
                         CollectorStats(c.stats.processed, dict(c.stats.lost), c.stats.drains),
                         dict(c.rtt_log2_us))


@dataclass
class HeapSettings:
    pids: list[int] = field(default_factory=list)
    rate: int = 512 * 1024              # mean bytes between samples; 0: every allocation
    library: str | None = None          # --lib: the allocator's library (default: libc)
    symbol_prefix: str = ""             # --symbol-prefix, e.g. je_
    no_free: bool = False               # allocation profile only
    min_age_s: float = 5.0              # the leak report: outstanding longer than this
    interval_s: float = 10.0
    follow_forks: bool = False
    unwind: str = "auto"                # as CpuSettings.unwind
    mmap: bool = True                   # anonymous mmap/munmap as allocations and frees


class HeapProcessor(Processor):
    """Sampled allocations per stack, weighed up to estimates: a heap profile with Go's four
    sample types and in use at the peak, and outstanding allocations older than min_age as a
    leak report, with their growth between drains.

    The peak is the highest estimated total in use among the readings of every stack's
    counts (each drain's, and those the collector takes at a new high between drains), by
    stack as it was then."""

    def __init__(self, settings: HeapSettings, symbolizer: Symbolizer | None = None):
        self.settings = settings
        self.symbolizer = symbolizer or Symbolizer()
        self.collector = HeapCollector(settings.pids, settings.rate, settings.library,
                                       settings.symbol_prefix, settings.no_free,
                                       settings.follow_forks, settings.interval_s,
                                       on_new_process=self.symbolizer.remember, unwind=settings.unwind,
                                       mmap=settings.mmap)
        self.counts: dict[RawStackSample, HeapCounts] = {}
        self._allocators_mmap: dict[RawStackSample, bool] = {}
        self.live: list = []
        self.previous: dict[RawStackSample, tuple[float, float]] = {}   # (time, est bytes)
        self.growth: dict[RawStackSample, float] = {}
        self.window_start_ns = time.time_ns()
        self.peak_bytes = 0                                         # estimated, all stacks
        self.peak_unix_ns = 0
        self.peak: dict[RawStackSample, tuple[int, int]] = {}      # (objects, bytes) in use then

    def prepare(self) -> None:
        for pid in self.settings.pids:
            self.symbolizer.remember(pid)
        if not self.settings.follow_forks:
            self.collector.unwinder.warm(self.settings.pids)
        self.symbolizer.prepare_symbols()

    def _by_allocator(self, r) -> bool:
        """An mmap the allocator made for itself (a large malloc): its bytes were counted
        at malloc, so it is left out. Told by the allocator on its stack, named while the
        process lives."""
        if not r.via_mmap:
            return False
        if r.stack not in self._allocators_mmap:
            names = {self.settings.symbol_prefix + n for n in ALLOCATOR_FUNCTIONS}
            self._allocators_mmap[r.stack] = any(f.function in names or f.function in GLIBC_MALLOC_INTERNALS
                                                 for f in self.symbolizer.frames(r.stack))
        return self._allocators_mmap[r.stack]

    def add(self, records: list) -> None:
        """Each drain is cumulative: it replaces what the last one said."""
        peaks = [r for r in records if isinstance(r, HeapPeak)]
        records = [r for r in records if not isinstance(r, HeapPeak) and not self._by_allocator(r)]
        self.counts = {r.stack: r for r in records if isinstance(r, HeapCounts)}
        self.live = [r for r in records if not isinstance(r, HeapCounts)]
        for p in peaks:
            self._consider_peak(p.unix_ns, [c for c in p.counts if not self._by_allocator(c)])
        self._consider_peak(time.time_ns(), self.counts.values())
        now = time.monotonic()
        for stack, bytes_ in self._outstanding().items():
            then = self.previous.get(stack)
            if then and now > then[0]:
                self.growth[stack] = (bytes_[1] - then[1]) / (now - then[0])
            self.previous[stack] = (now, bytes_[1])

    def reset(self, start_ns: int | None = None) -> None:
        self.window_start_ns = start_ns or time.time_ns()

    def _weighed(self, c: HeapCounts) -> tuple[int, int, int, int]:
        """Estimated (alloc objects, alloc bytes, in-use objects, in-use bytes) at a stack,
        weighed by the average size of its samples, as Go does."""
        w = weight(c.alloc_bytes / c.allocs, self.settings.rate) if c.allocs else 1.0
        return (round(c.allocs * w), round(c.alloc_bytes * w),
                round((c.allocs - c.frees) * w), round((c.alloc_bytes - c.free_bytes) * w))

    def _consider_peak(self, unix_ns: int, counts) -> None:
        """A reading of every stack's counts: the peak if more is in use than at the last."""
        inuse = {c.stack: self._weighed(c)[2:] for c in counts}
        total = sum(b for _n, b in inuse.values())
        if total > self.peak_bytes:
            self.peak_bytes, self.peak_unix_ns, self.peak = total, unix_ns, inuse

    def _outstanding(self) -> dict[RawStackSample, list]:
        """Per stack: [estimated objects, estimated bytes, sampled] of live allocations older
        than min_age, each weighed by its own size."""
        rate, min_age = self.settings.rate, self.settings.min_age_s * 1e9
        out: dict[RawStackSample, list] = {}
        for a in self.live:
            if a.age_ns < min_age:
                continue
            w = weight(a.size, rate)
            row = out.setdefault(a.stack, [0.0, 0.0, 0])
            row[0] += w
            row[1] += w * a.size
            row[2] += 1
        return out

    def result(self, end_ns: int | None = None) -> HeapReport:
        s = self.settings
        end_ns = end_ns or time.time_ns()
        rate = s.rate
        values = {stack: self._weighed(c) + self.peak.get(stack, (0, 0))
                  for stack, c in self.counts.items()}
        samples = self.symbolizer.symbolize(values)
        stats = self.collector.stats.merged(CollectorStats(lost=self.symbolizer.losses))
        profile = Profile(samples=samples, start_ns=self.window_start_ns,
                          duration_ns=end_ns - self.window_start_ns, stats=stats, **heap_shape(rate))
        leaks = []
        for stack, (objects, bytes_, sampled) in self._outstanding().items():
            leaks.append(LeakRow(self.symbolizer.frames(stack), stack.pid,
                                 self.symbolizer.process_name(stack.pid), objects, bytes_, sampled,
                                 self.growth.get(stack)))
        leaks.sort(key=lambda r: -r.bytes)
        return HeapReport(profile, leaks, rate, int(s.min_age_s * 1e9),
                          [self.collector.library or ""], self.peak_unix_ns)
