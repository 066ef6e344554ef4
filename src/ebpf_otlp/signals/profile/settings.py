"""The profile signal's settings ([profile], `ebpf-otlp profile`): the one copy of its defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpf_otlp import values as v
from ebpf_otlp.signals.signal import from_table, toml

UNWIND = ("auto", "fp", "dwarf")


@dataclass
class CpuSettings:
    hz: int = field(default=99, metadata=toml("hz", v.positive_int))
    pids: list[int] = field(default_factory=list, metadata=toml("pids", v.PIDS))   # empty: every process
    user_stacks: bool = field(default=True, metadata=toml("user_stacks", v.boolean))
    kernel_stacks: bool = field(default=True, metadata=toml("kernel_stacks", v.boolean))
    event: str = "cpu-clock"
    drain_s: float = 2.0
    # weigh stacks by time off CPU, from sched_switch (the off-CPU signal of the same table)
    off_cpu: bool = field(default=False, metadata=toml("off_cpu", v.boolean))
    min_block_ns: int = field(default=1000, metadata=toml("min_block", v.check_duration, lambda s: int(s * 1e9)))
    # off-CPU: switches/s walked in full (0: no limit)
    switch_budget: float = field(default=5000, metadata=toml("switch_budget", v.count))
    follow_forks: bool = False           # launch mode: trace what the targets fork
    period: int = 100                    # counted events (page-faults): one sample every N
    # user stacks: auto | fp | dwarf (tables from .eh_frame)
    unwind: str = field(default="auto", metadata=toml("unwind", v.choice(*UNWIND)))
    comm: str | None = field(default=None, metadata=toml("comm", v.comm))   # only this command name
    include_self: bool = field(default=False, metadata=toml("include_self", v.boolean))
    # CPython 3.10-3.13 functions, files and lines in place of the interpreter's frames
    python: bool = field(default=True, metadata=toml("python", v.boolean))

    @classmethod
    def from_table(cls, t: dict, off_cpu: bool, path: str = "<config>") -> "CpuSettings":
        """[profile]: the on-CPU profile, or (off_cpu) the off-CPU one it asks for."""
        s = from_table(cls, t, path, "profile")
        s.off_cpu = off_cpu
        return s
