"""The heap signal's processor (memleak): sampled allocations weighed up to estimates."""

from __future__ import annotations

import dataclasses
import time

from ebpf_otlp.pyframes.names import PythonNames, remember
from ebpf_otlp.signals.heap.collector import ALLOCATOR_FUNCTIONS, GLIBC_MALLOC_INTERNALS, HeapCollector, weight
from ebpf_otlp.records import MERGED_CUT, CollectorStats, Profile, RawStackSample, add_values, merge_cut
from ebpf_otlp.signals.heap.records import HeapCounts, HeapPeak, HeapReport, LeakRow, heap_shape
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.signals.heap.settings import HeapSettings
from ebpf_otlp.symbolize.symbolizer import Symbolizer
from ebpf_otlp.unwind.tables import function_table


class HeapProcessor(Processor):
    """Sampled allocations per stack, weighed up to estimates: a heap profile with Go's four
    sample types and in use at the peak, and outstanding allocations older than min_age as a
    leak report, with their growth between drains.

    The peak is the highest estimated total in use among the readings of every stack's
    counts (each drain's, and those the collector takes at a new high between drains), by
    stack as it was then."""

    def __init__(self, settings: HeapSettings, symbolizer: Symbolizer | None = None):
        self.settings = settings
        self.python = PythonNames() if settings.python else None
        self.symbolizer = symbolizer or Symbolizer(function_table=function_table, interpreted=self.python)
        self.collector = HeapCollector(settings.pids, settings.rate, settings.library,
                                       settings.symbol_prefix, settings.no_free,
                                       settings.follow_forks, settings.interval_s,
                                       on_new_process=self._new_process, unwind=settings.unwind,
                                       mmap=settings.mmap, python=self.python is not None,
                                       on_python_stack=self.python.learn if self.python else None)
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
            self._new_process(pid)
        self.collector.unwinder.warm([] if self.settings.follow_forks else self.settings.pids)
        self.symbolizer.prepare_symbols()

    def _new_process(self, pid: int, _gen: int = 0) -> bool:
        return remember(self.symbolizer, self.python, self.collector.walk_python, pid)

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
        if self.python:   # named while the process lives
            self.python.learn_from(r.stack for r in records if not isinstance(r, HeapPeak))
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
        samples, merged = merge_cut(self.symbolizer.symbolize(values), add_values, lambda s: s.values[1])
        stats = self.collector.stats.merged(CollectorStats(lost=self.symbolizer.losses))
        if self.python:
            stats = stats.merged(self.python.stats())
        profile = Profile(samples=samples, start_ns=self.window_start_ns,
                          duration_ns=end_ns - self.window_start_ns, stats=stats, **heap_shape(rate))
        leaks = []
        for stack, (objects, bytes_, sampled) in self._outstanding().items():
            leaks.append(LeakRow(self.symbolizer.frames(stack), stack.pid,
                                 self.symbolizer.process_name(stack.pid), objects, bytes_, sampled,
                                 self.growth.get(stack), stack.cut))
        leaks, merged_rows = merge_cut(leaks, _add_leak, lambda r: r.bytes)
        if merged or merged_rows:
            stats.unwound[f"stacks {MERGED_CUT}"] = len(merged) + len(merged_rows)
        leaks.sort(key=lambda r: -r.bytes)
        return HeapReport(profile, leaks, rate, int(s.min_age_s * 1e9),
                          [self.collector.library or ""], self.peak_unix_ns)


def _add_leak(whole: LeakRow, cut: LeakRow) -> LeakRow:
    growth = None if whole.growth_bytes_per_s is None and cut.growth_bytes_per_s is None else \
        (whole.growth_bytes_per_s or 0.0) + (cut.growth_bytes_per_s or 0.0)
    return dataclasses.replace(whole, objects=whole.objects + cut.objects, bytes=whole.bytes + cut.bytes,
                               sampled=whole.sampled + cut.sampled, growth_bytes_per_s=growth)
