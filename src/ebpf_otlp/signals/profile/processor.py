"""The profile signal's processor: stacks counted across drains, symbolized at the end."""

from __future__ import annotations

import time
from collections import Counter

from ebpf_otlp.pyframes.names import PythonNames, remember
from ebpf_otlp.records import (MERGED_CUT, CollectorStats, Profile, RawStackSample, ValueType, add_values,
                               counted_shape, cpu_shape, merge_cut, off_cpu_shape)
from ebpf_otlp.runtime.perf import COUNTED
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.signals.profile.settings import CpuSettings
from ebpf_otlp.signals.profile.collector import CpuSampler
from ebpf_otlp.symbolize.symbolizer import Symbolizer
from ebpf_otlp.unwind.tables import function_table


class StackProcessor(Processor):
    """CPU (or off-CPU) stacks: counts raw stacks across drains, symbolizes at the end.

    The symbolizer snapshots each process the kernel announces while it lives, so a
    process that exits before the end is still named."""

    def __init__(self, settings: CpuSettings, symbolizer: Symbolizer | None = None):
        self.settings = settings
        self.python = PythonNames() if settings.python and settings.user_stacks else None
        self.symbolizer = symbolizer or Symbolizer(function_table=function_table, interpreted=self.python)
        self.collector = CpuSampler(
            settings.hz, settings.pids, settings.user_stacks, settings.kernel_stacks,
            settings.event, settings.drain_s, on_new_process=self._new_process,
            off_cpu=settings.off_cpu, min_block_ns=settings.min_block_ns,
            switch_budget=settings.switch_budget, follow_forks=settings.follow_forks,
            period=settings.period, unwind=settings.unwind, comm=settings.comm,
            include_self=settings.include_self, python=self.python is not None,
            on_python_stack=self.python.learn if self.python else lambda pid, frames: None)
        self.counts: Counter[RawStackSample] = Counter()
        self.window_start_ns = time.time_ns()
        self.request_index = None   # signals/links.py: samples labelled with the request served

    def prepare(self) -> None:
        """Snapshot the named processes and read their symbol tables (from the on-disk
        cache when warm) while BPF compiles."""
        for pid in self.settings.pids:
            self._new_process(pid, 0)
        if self.settings.user_stacks:   # a launched command: the common objects only
            self.collector.unwinder.warm([] if self.settings.follow_forks else self.settings.pids)
        self.symbolizer.prepare_symbols()

    def _new_process(self, pid: int, gen: int) -> bool:
        return remember(self.symbolizer, self.python, self.collector.walk_python, pid, gen)

    def add(self, records: list[tuple[RawStackSample, int]]) -> None:
        for raw, count in records:
            self.counts[raw] += count
        if self.python:   # named while the process lives
            self.python.learn_from(raw for raw, _count in records)

    def reset(self, start_ns: int | None = None) -> None:
        self.counts = Counter()
        self.window_start_ns = start_ns or time.time_ns()
        if self.request_index is not None:   # a request still under way may label the next window
            self.request_index.forget_before(self.window_start_ns)
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
        counts = self.counts if self.request_index is None else self.request_index.label(self.counts)
        samples = self.symbolizer.symbolize({raw: values(c) for raw, c in counts.items()})
        samples, merged = merge_cut(samples, add_values, lambda s: s.values[0])
        stats = self.collector.stats.merged(CollectorStats(lost=self.symbolizer.losses))
        if self.python:
            stats = stats.merged(self.python.stats())
        if merged and s.off_cpu:   # values are time: say how many stacks
            stats.unwound[f"stacks {MERGED_CUT}"] = len(merged)
        elif merged:
            stats.unwound[f"samples {MERGED_CUT}"] = sum(m.values[0] for m in merged)
        return Profile(samples=samples, start_ns=self.window_start_ns,
                       duration_ns=end_ns - self.window_start_ns, stats=stats, **shape)
