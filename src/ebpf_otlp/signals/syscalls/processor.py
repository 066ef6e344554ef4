"""The syscalls signal's processor: cumulative stats per (process, syscall)."""

from __future__ import annotations

import time

from ebpf_otlp.records import CollectorStats
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.signals.syscalls.settings import SyscallSettings
from ebpf_otlp.signals.syscalls.collector import SyscallCollector
from ebpf_otlp.signals.syscalls.records import SyscallReport, SyscallStats, fold


class SyscallProcessor(Processor):
    """Cumulative stats per (process, syscall) since the start; exported every interval."""

    periodic = True

    def __init__(self, settings: SyscallSettings, max_keys: int = 262144):
        self.settings = settings
        self.collector = SyscallCollector(settings.pids, settings.comm, settings.syscalls,
                                          settings.latency, settings.latency_budget,
                                          max_keys=max_keys, interval_s=settings.interval_s,
                                          follow_forks=settings.follow_forks,
                                          include_self=settings.include_self,
                                          name_after=settings.name_after)
        self.by_key: dict[tuple, SyscallStats] = {}
        self.window_start_ns = time.time_ns()

    def add(self, records: list[SyscallStats]) -> None:
        for s in records:
            have = self.by_key.get(s.key)
            if have is None:
                self.by_key[s.key] = s
            else:
                have.merge(s)

    def reset(self, start_ns: int | None = None) -> None:
        self.by_key = {}
        self.window_start_ns = start_ns or time.time_ns()

    def result(self, end_ns: int | None = None) -> SyscallReport:
        c = self.collector
        end_ns = end_ns or time.time_ns()
        return SyscallReport(fold(list(self.by_key.values()), self.settings.top_processes),
                             self.window_start_ns,
                             end_ns - self.window_start_ns, self.settings.latency,
                             CollectorStats(c.stats.processed, dict(c.stats.lost), c.stats.drains,
                                            c.stats.share),
                             self.settings.latency_budget, c.timing_share)
