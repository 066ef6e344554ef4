"""The heap signal's records: sampled allocation counts per stack, live allocations, the
peak, the leak report, and the report of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpf_otlp.records import CollectorStats, Frame, Profile, RawStackSample, ValueType


@dataclass(frozen=True)
class HeapCounts:
    """Sampled allocations and frees at one stack (not yet weighed up), cumulative."""
    stack: RawStackSample       # user stack, the allocating function first
    allocs: int
    alloc_bytes: int
    frees: int
    free_bytes: int
    via_mmap: bool = False      # anonymous mmap/munmap, not allocator calls


@dataclass(frozen=True)
class LiveAllocation:
    """A sampled allocation not freed (yet), with its size and age."""
    stack: RawStackSample
    size: int
    age_ns: int
    via_mmap: bool = False


@dataclass
class HeapPeak:
    """Every stack's counts (HeapCounts) read at a new high-water mark of the sampled bytes
    in use, between drains: a peak may come and go within one interval."""
    unix_ns: int
    counts: list[HeapCounts]


@dataclass
class LeakRow:
    """Outstanding memory at one stack: allocations older than --min-age, weighed up."""
    frames: tuple[Frame, ...]
    pid: int
    process_name: str
    objects: float              # estimated
    bytes: float                # estimated
    sampled: int                # sampled allocations behind the estimate
    growth_bytes_per_s: float | None = None   # None: one reading only, no growth known
    cut: bool = False           # its user stack stopped short of the outermost frame


@dataclass
class HeapReport:
    """What `memleak` gathered: the heap profile (alloc and in-use, objects and space, and
    in use at the peak) and the leak report; estimates unless `rate` is 0 (every call
    recorded)."""
    profile: Profile
    leaks: list[LeakRow]
    rate: int                   # mean bytes between samples; 0: every allocation
    min_age_ns: int
    libraries: list[str] = field(default_factory=list)
    peak_unix_ns: int = 0       # when in use was highest (0: nothing ever was)

    @property
    def collection(self) -> CollectorStats:
        return self.profile.stats


# Go's four, then in use at the high-water mark of the whole heap (heaptrack's and memray's
# peak): what a program that frees all before it exits held while it ran.
HEAP_TYPES = (ValueType("alloc_objects", "count"), ValueType("alloc_space", "bytes"),
              ValueType("inuse_objects", "count"), ValueType("inuse_space", "bytes"),
              ValueType("peak_inuse_objects", "count"), ValueType("peak_inuse_space", "bytes"))


def heap_shape(rate: int) -> dict:
    """Go's heap profile and the peak: six values per stack, inuse_space by default, period
    the rate."""
    return dict(sample_types=HEAP_TYPES, period_type=ValueType("space", "bytes"),
                period=rate or 1, default_type="inuse_space", shown_type="inuse_space",
                event="malloc")
