"""The syscalls signal's records: per (process, syscall) stats, and the report of a window."""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpf_otlp.records import HOST, CollectorStats, ContainerInfo


@dataclass
class SyscallStats:
    """One (process, syscall) over a window: counts, errors by errno, bytes, latency.

    Latency fields (total_ns, min_ns, max_ns, hist) cover the `timed` calls only: all of
    them unless the entry hook was time-shared, when the timed calls are a sample and
    totals are estimated by scaling (est_total_ns)."""
    pid: int
    process_name: str
    nr: int
    syscall: str
    calls: int = 0
    errors: int = 0
    total_ns: int = 0
    min_ns: int = 0
    max_ns: int = 0
    bytes: int = 0
    errnos: dict[int, int] = field(default_factory=dict)     # errno -> calls that failed so
    hist: dict[int, int] = field(default_factory=dict)       # histogram.SCALE bucket -> calls
    timed: int = 0                                           # calls whose latency was measured
    container: ContainerInfo = HOST
    # pid 0: not one process but those of this name and container, folded (in the kernel
    # until they had made enough syscalls, or by fold()); `folded` counts those first seen
    folded: int = 0

    @property
    def is_folded(self) -> bool:
        return self.pid == 0

    @property
    def key(self) -> tuple:
        """What two drains' rows of the same process (or folded name) and syscall share."""
        return (self.pid, self.nr) if self.pid else (0, self.nr, self.process_name, self.container)

    @property
    def sampled(self) -> bool:
        return self.timed < self.calls

    @property
    def avg_ns(self) -> float:
        return self.total_ns / self.timed if self.timed else 0.0

    @property
    def est_total_ns(self) -> float:
        """Time in this syscall: measured, or scaled up from the timed sample."""
        return self.total_ns * self.calls / self.timed if self.timed else 0.0

    def merge(self, other: "SyscallStats") -> None:
        if other.timed:
            self.min_ns = other.min_ns if not self.timed else min(self.min_ns, other.min_ns)
        self.timed += other.timed
        self.calls += other.calls
        self.errors += other.errors
        self.total_ns += other.total_ns
        self.max_ns = max(self.max_ns, other.max_ns)
        self.bytes += other.bytes
        self.folded += other.folded
        self.process_name = self.process_name or other.process_name
        self.container = self.container if self.container != HOST else other.container
        for table, add in ((self.errnos, other.errnos), (self.hist, other.hist)):
            for k, v in add.items():
                table[k] = table.get(k, 0) + v


def fold(stats: list[SyscallStats], keep: int) -> list[SyscallStats]:
    """The `keep` busiest processes (by calls) row by row; every other process's rows
    merged per (command name, container, syscall) under pid 0, with the rows the kernel
    folded already, `folded` counting the processes each holds. Totals are unchanged.
    Short-lived processes (a build, a cron job's churn) would otherwise each leave their
    own rows: 1,200 `sh` children a minute made 25,000 rows of a window. keep 0: every
    process kept."""
    calls: dict[int, int] = {}
    for s in stats:
        if not s.is_folded:
            calls[s.pid] = calls.get(s.pid, 0) + s.calls
    if not keep or len(calls) <= keep:
        return stats
    kept = set(sorted(calls, key=lambda pid: (-calls[pid], pid))[:keep])
    out = [s for s in stats if s.pid in kept]
    merged: dict[tuple, SyscallStats] = {}
    members: dict[tuple, set[int]] = {}
    for s in stats:
        if s.pid in kept:
            continue
        key = (s.process_name, s.container, s.nr)
        row = merged.get(key)
        if row is None:
            row = merged[key] = SyscallStats(0, s.process_name, s.nr, s.syscall, container=s.container)
            members[key] = set()
        row.merge(s)
        if not s.is_folded:
            members[key].add(s.pid)
    for key, row in merged.items():
        row.folded += len(members[key])
        out.append(row)
    return out


@dataclass
class SyscallReport:
    """What `syscalls` gathered: cumulative per (process, syscall) since start_ns."""
    stats: list[SyscallStats]
    start_ns: int
    duration_ns: int
    latency: bool
    collection: CollectorStats = field(default_factory=CollectorStats)   # events, losses by cause
    latency_budget: float = 0        # syscalls/s timed in full (0: no limit)
    timing_share: float = 1.0        # lowest share of time every call was timed

    @property
    def events(self) -> int:
        """Syscall exits the kernel side counted."""
        return self.collection.processed

    @property
    def lost(self) -> dict[str, int]:
        return self.collection.lost

    @property
    def sampled(self) -> bool:
        """The entry hook was time-shared: latency is a sample for (some of) the capture."""
        return self.latency and self.timing_share < 1.0

    def time_in(self, s: SyscallStats) -> float:
        """Time spent in a row's calls: scaled up from the timed sample while the entry hook
        was time-shared (entries then are timed at random, whatever their length); else
        what was measured, since the only untimed calls are those already under way at the
        start, which are not a fair sample."""
        return s.est_total_ns if self.sampled else float(s.total_ns)

    def estimated(self, s: SyscallStats) -> bool:
        return self.sampled and s.sampled

    @property
    def timed_fraction(self) -> float:
        calls = sum(s.calls for s in self.stats)
        return sum(s.timed for s in self.stats) / calls if calls else 1.0
