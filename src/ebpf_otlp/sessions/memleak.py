"""`ebpf-otlp memleak`: sampled heap profiles and leak reports from allocator uprobes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

from ebpf_otlp.export import heap_out
from ebpf_otlp.export.output_stage import FileTarget, OutputStage
from ebpf_otlp.processors import HeapProcessor, HeapSettings
from ebpf_otlp.engine.run import RunResult, capture, held_until_capture
from ebpf_otlp.engine.run import launch as launch_command

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class MemleakConfig:
    heap: HeapSettings = field(default_factory=HeapSettings)
    duration_s: float | None = None
    command: list[str] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)   # (path, format)
    top: int = 10
    otlp: OtlpSettings | None = None
    spool: Spool | None = None


def run(config: MemleakConfig, console: Console, notices: Console, started_ns: int) -> RunResult:
    heap = config.heap
    launch = launch_command(config.command, heap)
    processor = HeapProcessor(heap)
    terminal = {"memleak": lambda r, c: heap_out.render(r, c, config.top)} if config.top else {}
    with held_until_capture(launch):
        stage = OutputStage.create(console, notices,
                                   [FileTarget(p, f, "memleak") for p, f in config.outputs], terminal,
                                   config.otlp, config.spool,
                                   lambda: {processor.collector.name: processor.collector.stats},
                                   heap.interval_s)
    target = launch.describe() if launch else f"pid {', '.join(map(str, heap.pids))}"
    how = "every allocation" if not heap.rate else f"one allocation per ~{heap.rate / 1024:g} KiB"
    return capture([processor], stage, notices, "memleak",
                   lambda: f"tracing allocations of {target} ({how}; probes: "
                           f"{', '.join(processor.collector.attached)}; return probes on "
                           f"{processor.collector.return_probes})",
                   config.duration_s, launch, [] if launch else heap.pids, started_ns)
