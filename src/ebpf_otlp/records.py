"""Typed records: the contract between collectors, the symbolizer and exporters.

Collectors produce raw records (addresses); the symbolizer turns them into
symbolized ones (frames); exporters read only the symbolized ones, so unit tests
can feed them without a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KERNEL_MODULE = "[kernel.kallsyms]"


@dataclass(frozen=True)
class Mapping:
    """A file mapped into a process (or the kernel image), as pprof and OTLP describe it."""
    path: str
    start: int = 0
    end: int = 0
    file_offset: int = 0
    build_id: str = ""


@dataclass(frozen=True)
class Frame:
    """One resolved stack frame."""
    function: str            # symbol, or "module+0xoffset" when there is none
    module: str              # file path, "[kernel.kallsyms]", "[jit]", "[unknown]"
    address: int = 0         # the instruction address in the process (or kernel)
    mapping: Mapping | None = None
    kernel: bool = False
    inlined: bool = False

    @property
    def short_module(self) -> str:
        return self.module.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ContainerInfo:
    """The container and Kubernetes pod a process runs in; empty strings on the host."""
    container_id: str = ""
    pod_uid: str = ""

    def attributes(self) -> dict[str, str]:
        """As OpenTelemetry semantic-convention attributes."""
        out = {}
        if self.container_id:
            out["container.id"] = self.container_id
        if self.pod_uid:
            out["k8s.pod.uid"] = self.pod_uid
        return out


HOST = ContainerInfo()


@dataclass(frozen=True)
class RawStackSample:
    """What the sampler counted: addresses, leaf first, before symbolization."""
    pid: int
    tid: int
    thread_name: str
    user_ips: tuple[int, ...]
    kernel_ips: tuple[int, ...]
    gen: int = 0             # the process's exec generation: which mappings apply


@dataclass(frozen=True)
class StackSample:
    """A symbolized stack, leaf first, and how often it was seen."""
    pid: int
    tid: int
    thread_name: str
    process_name: str
    frames: tuple[Frame, ...]
    count: int
    container: ContainerInfo = HOST


@dataclass
class CollectionStats:
    """What the kernel side saw and what it could not keep: reported, never hidden."""
    samples: int = 0                 # samples the BPF program took
    lost_stack_collisions: int = 0   # stack ids lost to hash collisions
    lost_stack_errors: int = 0       # stack ids lost to a full map or failed unwind
    lost_counts_full: int = 0        # samples dropped because the count map was full
    lost_new_process_events: int = 0 # ring buffer full: a process was not snapshotted
    drains: int = 0
    share: float = 1.0               # lowest share of events handled (< 1: sampled, weighed up)

    @property
    def lost_samples(self) -> int:
        return self.lost_counts_full

    @property
    def lost_stacks(self) -> int:
        return self.lost_stack_collisions + self.lost_stack_errors


SAMPLES = ("samples", "count")              # (type, unit) of a sampled CPU profile's counts
OFF_CPU_TIME = ("off_cpu", "nanoseconds")   # ... and of an off-CPU profile's


@dataclass
class Profile:
    """A finished stack profile: what every profile exporter reads. Each sample's `count`
    is of `value_type`: samples taken (CPU), or nanoseconds off CPU."""
    samples: list[StackSample]
    start_ns: int
    duration_ns: int
    period_ns: int                   # nanoseconds of CPU time one sample stands for
    frequency_hz: int
    event: str = "cpu-clock"
    stats: CollectionStats = field(default_factory=CollectionStats)
    timing: dict[str, float | None] = field(default_factory=dict)   # attach / first-sample ms
    value_type: tuple[str, str] = SAMPLES

    @property
    def total_samples(self) -> int:
        """The sum of the counts: samples, or nanoseconds off CPU."""
        return sum(s.count for s in self.samples)

    @property
    def sampled(self) -> bool:
        return self.value_type == SAMPLES

    @property
    def sample_types(self) -> list[tuple[str, str]]:
        """pprof's sample types; a sampled CPU profile also carries CPU time."""
        return [SAMPLES, ("cpu", "nanoseconds")] if self.sampled else [self.value_type]

    def values(self, count: int) -> list[int]:
        return [count, count * self.period_ns] if self.sampled else [count]

    @property
    def period_type(self) -> tuple[str, str]:
        return ("cpu", "nanoseconds") if self.sampled else self.value_type

    @property
    def what(self) -> str:
        """What was measured, for titles: 'cpu-clock at 99 Hz' or 'off-CPU time'."""
        return f"{self.event} at {self.frequency_hz} Hz" if self.sampled else f"off-CPU time ({self.event})"

    def amount(self, count: int) -> str:
        """A count in words: '123 samples' or '1.234 s'."""
        return f"{count} samples" if self.sampled else f"{count / 1e9:.3f} s"


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
        self.process_name = self.process_name or other.process_name
        self.container = self.container if self.container != HOST else other.container
        for table, add in ((self.errnos, other.errnos), (self.hist, other.hist)):
            for k, v in add.items():
                table[k] = table.get(k, 0) + v


@dataclass
class SyscallReport:
    """What `syscalls` gathered: cumulative per (process, syscall) since start_ns."""
    stats: list[SyscallStats]
    start_ns: int
    duration_ns: int
    latency: bool
    events: int = 0                  # syscall exits the kernel side counted
    lost: dict[str, int] = field(default_factory=dict)   # kernel-side drops by cause
    latency_budget: float = 0        # syscalls/s timed in full (0: no limit)
    timing_share: float = 1.0        # lowest share of time every call was timed

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
