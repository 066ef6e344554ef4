"""The memleak signal's settings ([memleak], `ebpf-otlp memleak`): the one copy of its defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from ebpf_otlp import values as v
from ebpf_otlp.errors import AgentError
from ebpf_otlp.signals.signal import from_table, toml

from ebpf_otlp.signals.profile.settings import UNWIND


@dataclass
class HeapSettings:
    pids: list[int] = field(default_factory=list, metadata=toml("pids", v.PIDS))
    # mean bytes between samples; 0: every allocation
    rate: int = field(default=512 * 1024, metadata=toml("sample_bytes", v.parse_size))
    # --lib: the allocator's library (default: libc)
    library: str | None = field(default=None, metadata=toml("lib", v.string))
    symbol_prefix: str = field(default="", metadata=toml("symbol_prefix", v.string))   # e.g. je_
    no_free: bool = field(default=False, metadata=toml("no_free", v.boolean))   # allocations only
    # the leak report: outstanding longer than this
    min_age_s: float = field(default=5.0, metadata=toml("min_age", v.check_duration))
    interval_s: float = 10.0
    follow_forks: bool = False
    unwind: str = field(default="auto", metadata=toml("unwind", v.choice(*UNWIND)))   # as CpuSettings.unwind
    # anonymous mmap/munmap as allocations and frees
    mmap: bool = field(default=True, metadata=toml("mmap", v.boolean))
    # CPython 3.10-3.13 functions, files and lines in place of the interpreter's frames
    python: bool = field(default=True, metadata=toml("python", v.boolean))

    TOML_EXTRA = {"every_call": v.boolean}   # sample_bytes 0

    @classmethod
    def from_table(cls, t: dict, path: str = "<config>") -> "HeapSettings":
        if not t.get("pids"):
            raise AgentError(f"{path}: [memleak] pids: name the processes whose allocations to trace")
        s = from_table(cls, t, path, "memleak")
        if t.get("every_call"):
            s.rate = 0
        return s
