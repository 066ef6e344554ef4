"""Typed records: the contract between collectors, the symbolizer and exporters.

Collectors produce raw records (addresses); the symbolizer turns them into
symbolized ones (frames); exporters read only the symbolized ones, so unit tests
can feed them without a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

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
    line: int = 0            # the source line, where known (Python frames: module is the file)
    start_line: int = 0      # the function's first line
    frame_type: str = ""     # OpenTelemetry's profile.frame.type where not native: "cpython"

    @property
    def short_module(self) -> str:
        return self.module.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """As stacks show it: the function, and its file and line where known."""
        return f"{self.function} ({self.short_module}:{self.line})" if self.line else self.function

    @property
    def location_key(self) -> tuple:
        """What makes two frames one location in pprof and OTLP: the same address in two
        processes is two locations when the code differs; two lines of one function, two."""
        return (self.mapping, self.address, self.function, self.module, self.line, self.start_line,
                self.frame_type)


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
    cut: bool = False        # the user stack stopped short of its outermost frame
    python: tuple = ()       # Python frames as the kernel walked them (pyframes.process.RawFrame)
    time_ns: int = 0         # when (wall clock, to 1.05 ms), where the sampler keeps it (SAMPLE_TIMES)
    span: tuple[str, str] = ()   # (trace id, span id) of the request its thread was serving


@dataclass(frozen=True)
class StackSample:
    """A symbolized stack, leaf first, with one value per sample type of its profile."""
    pid: int
    tid: int
    thread_name: str
    process_name: str
    frames: tuple[Frame, ...]
    values: tuple[int, ...]
    container: ContainerInfo = HOST
    cut: bool = False        # its user stack stopped short of the outermost frame
    span: tuple[str, str] = ()   # (trace id, span id), hex: the request its thread was serving


@dataclass
class CollectorStats:
    """What a collector handled and what it lost, by cause: reported, never hidden.

    Every collector keeps one; the terminal footer, the JSON outputs and the
    self-telemetry metric `ebpf_otlp.agent.events.dropped{cause}` read it."""
    processed: int = 0                                   # events the kernel side handled
    lost: dict[str, int] = field(default_factory=dict)   # cause -> events (or stacks) lost
    drains: int = 0
    share: float = 1.0   # lowest share of events handled in full (< 1: sampled, weighed up)
    unwound: dict[str, int] = field(default_factory=dict)   # user stacks by how they were walked

    @property
    def total_lost(self) -> int:
        return sum(self.lost.values())

    def set_lost(self, cause: str, count: int) -> None:
        """Record a cumulative loss count (kernel counters only grow); zero causes stay out."""
        if count:
            self.lost[cause] = count

    def merged(self, other: "CollectorStats") -> "CollectorStats":
        lost = dict(self.lost)
        for cause, n in other.lost.items():
            lost[cause] = lost.get(cause, 0) + n
        unwound = dict(self.unwound)
        for how, n in other.unwound.items():
            unwound[how] = unwound.get(how, 0) + n
        return CollectorStats(self.processed + other.processed, lost, self.drains + other.drains,
                              min(self.share, other.share), unwound)

    def since(self, earlier: "CollectorStats | None") -> "CollectorStats":
        """What these cumulative counts added to `earlier`'s: one window's share."""
        if earlier is None:
            return self
        lost = {c: n - earlier.lost.get(c, 0) for c, n in self.lost.items() if n > earlier.lost.get(c, 0)}
        return CollectorStats(self.processed - earlier.processed, lost, self.drains - earlier.drains,
                              self.share, {})

    def as_dict(self) -> dict:
        return {"processed": self.processed, "lost": dict(self.lost), "lost_total": self.total_lost,
                "drains": self.drains, "share": self.share, "unwound": dict(self.unwound)}


@dataclass(frozen=True)
class ValueType:
    """A pprof/OTLP (type, unit) pair, e.g. cpu/nanoseconds or inuse_space/bytes."""
    type: str
    unit: str

    def __str__(self) -> str:
        return f"{self.type}/{self.unit}"


SAMPLES = ValueType("samples", "count")
CPU_TIME = ValueType("cpu", "nanoseconds")
OFF_CPU_TIME = ValueType("off_cpu", "nanoseconds")


@dataclass
class Profile:
    """A finished stack profile: what every profile exporter reads.

    Each sample carries one value per entry of `sample_types`. `default_type` names the
    one readers show first (pprof's default_sample_type); `shown_type` the one our text
    outputs (folded, flame graph, table) weigh stacks by, which for a CPU profile is the
    sample count, as flamegraph.pl and BCC users expect."""
    samples: list[StackSample]
    sample_types: tuple[ValueType, ...]
    start_ns: int
    duration_ns: int
    period_type: ValueType
    period: int                      # in period_type's unit: what one sample stands for
    default_type: str = ""           # a sample type's name; "" means the last one
    shown_type: str = ""             # "" means default_type
    event: str = ""                  # what was measured: cpu-clock, sched_switch, malloc ...
    frequency_hz: int = 0            # sampling frequency, when sampled by time
    stats: CollectorStats = field(default_factory=CollectorStats)
    timing: dict[str, float | None] = field(default_factory=dict)   # attach / first-sample ms

    def index_of(self, type_name: str) -> int:
        for i, vt in enumerate(self.sample_types):
            if vt.type == type_name:
                return i
        raise KeyError(f"no sample type {type_name!r} in {[str(t) for t in self.sample_types]}")

    @property
    def default_index(self) -> int:
        return self.index_of(self.default_type) if self.default_type else len(self.sample_types) - 1

    @property
    def shown_index(self) -> int:
        return self.index_of(self.shown_type) if self.shown_type else self.default_index

    @property
    def shown(self) -> ValueType:
        return self.sample_types[self.shown_index]

    def value(self, sample: StackSample) -> int:
        """The sample's value of the shown type: what text outputs weigh its stack by."""
        return sample.values[self.shown_index]

    def total(self, index: int | None = None) -> int:
        i = self.shown_index if index is None else index
        return sum(s.values[i] for s in self.samples)

    @property
    def what(self) -> str:
        """What was measured, for titles: 'cpu-clock at 99 Hz', 'off_cpu/nanoseconds'."""
        if self.frequency_hz:
            return f"{self.event} at {self.frequency_hz} Hz"
        if self.period > 1 and self.period_type == self.shown:
            return f"{self.event}, a sample every {self.period}"
        return f"{self.shown} ({self.event})" if self.event else str(self.shown)

    def amount(self, value: int) -> str:
        """A value of the shown type in words: '123 samples', '1.234 s', '2.0 MiB'."""
        unit = self.shown.unit
        if unit == "nanoseconds":
            return f"{value / 1e9:.3f} s"
        if unit == "bytes":
            return f"{value / 2**20:.1f} MiB"
        return f"{value} {self.shown.type}"


def cpu_shape(hz: int, event: str = "cpu-clock") -> dict:
    """A CPU profile's Profile fields: samples and CPU time per stack, cpu by default (as
    pprof shows Go's), samples in the text outputs."""
    return dict(sample_types=(SAMPLES, CPU_TIME), period_type=CPU_TIME, period=1_000_000_000 // hz,
                default_type="cpu", shown_type="samples", event=event, frequency_hz=hz)


def counted_shape(event: str, kind: ValueType, period: int) -> dict:
    """A profile of an event sampled every `period` occurrences (page faults): samples, and
    the occurrences they stand for, which readers show by default."""
    return dict(sample_types=(SAMPLES, kind), period_type=kind, period=period,
                default_type=kind.type, shown_type=kind.type, event=event)


def off_cpu_shape() -> dict:
    """An off-CPU profile's Profile fields: nanoseconds off CPU per stack."""
    return dict(sample_types=(OFF_CPU_TIME,), period_type=OFF_CPU_TIME, period=1, event="sched_switch")


MERGED_CUT = "cut short, merged under their site's whole stack"


def merge_cut(items: list, add: Callable[[Any, Any], Any], weight: Callable[[Any], float]) -> tuple[list, list]:
    """One site, one row: each item (a StackSample or a leak row: `.pid`, `.frames` leaf
    first, `.cut`) whose user stack was cut short goes under the whole stack of the same
    process that it begins (the same frames, then its missing callers), the same thread's
    first, else the heaviest (`weight`); `add(whole, cut)` is the whole with the cut one's
    values added. A cut stack that begins no whole one stays as it is. Returns the items
    and the cut ones that were merged."""
    if not any(i.cut for i in items):
        return items, []
    def names(item) -> tuple:
        return tuple((f.function, f.module, f.line) for f in item.frames)

    whole = [i for i in items if not i.cut]
    by_pid: dict[int, list[int]] = {}
    for n, item in enumerate(whole):
        by_pid.setdefault(item.pid, []).append(n)
    whole_names = [names(i) for i in whole]
    kept, merged = [], []
    for item in items:
        if not item.cut:
            continue
        key = names(item)
        best = None
        for n in by_pid.get(item.pid, ()):
            if len(whole_names[n]) > len(key) and whole_names[n][:len(key)] == key:
                rank = (getattr(whole[n], "span", None) == getattr(item, "span", None),
                        getattr(whole[n], "tid", None) == getattr(item, "tid", None), weight(whole[n]))
                if best is None or rank > best[0]:
                    best = (rank, n)
        if best is None:
            kept.append(item)
        else:
            whole[best[1]] = add(whole[best[1]], item)
            merged.append(item)
    return whole + kept, merged


def add_values(whole: StackSample, cut: StackSample) -> StackSample:
    """A stack's sample with another's values added, type by type."""
    return replace(whole, values=tuple(a + b for a, b in zip(whole.values, cut.values)))
