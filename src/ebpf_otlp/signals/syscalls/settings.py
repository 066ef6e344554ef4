"""The syscalls signal's settings ([syscalls], `ebpf-otlp syscalls`): the one copy of its defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpf_otlp import values as v
from ebpf_otlp.signals.signal import from_table, toml
from ebpf_otlp.signals.syscalls import names as syscall_names


def numbers(names: list[str]) -> list[int]:
    out = []
    for name in names:
        nr = syscall_names.number(name)
        if nr is None:
            raise ValueError(f"unknown syscall {name!r}")
        out.append(nr)
    return out


@dataclass
class SyscallSettings:
    pids: list[int] = field(default_factory=list, metadata=toml("pids", v.PIDS))
    comm: str | None = field(default=None, metadata=toml("comm", v.comm))
    syscalls: list[int] = field(default_factory=list, metadata=toml("syscalls", v.strings, numbers))
    interval_s: float = field(default=10.0, metadata=toml("interval", v.check_duration))
    latency: bool = field(default=True, metadata=toml("latency", v.boolean))
    # syscalls/s timed in full; 0: no limit
    latency_budget: float = field(default=100_000, metadata=toml("latency_budget", v.count))
    # processes kept row by row in every output, the busiest first; the rest folded by
    # command name and container (records.fold); 0: all
    top_processes: int = field(default=100, metadata=toml("top_processes", v.count))
    # tracing every process: one is counted by pid once it has made this many syscalls,
    # before that under its command name and container, in the kernel; 0: all by pid
    name_after: int = field(default=1000, metadata=toml("name_after", v.count))
    follow_forks: bool = False
    include_self: bool = field(default=False, metadata=toml("include_self", v.boolean))

    @classmethod
    def from_table(cls, t: dict, path: str = "<config>") -> "SyscallSettings":
        return from_table(cls, t, path, "syscalls")
