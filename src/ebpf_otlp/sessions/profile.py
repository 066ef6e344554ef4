"""`ebpf-otlp profile`: sample stacks (or time off CPU) → pprof / folded / SVG / JSON / OTLP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

from ebpf_otlp.signals.profile import table
from ebpf_otlp.export.output_stage import FileTarget, OutputStage
from ebpf_otlp.signals.profile.processor import CpuSettings, StackProcessor
from ebpf_otlp.runtime.perf import COUNTED
from ebpf_otlp.engine.run import RunResult, capture, held_until_capture
from ebpf_otlp.engine.run import launch as launch_command

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class ProfileConfig:
    cpu: CpuSettings = field(default_factory=CpuSettings)
    duration_s: float | None = None                  # None: until SIGINT/SIGTERM (or the command exits)
    command: list[str] = field(default_factory=list)  # launch mode: run this, follow what it forks
    outputs: list[tuple[str, str]] = field(default_factory=list)   # (path, format)
    top: int = 15
    otlp: OtlpSettings | None = None     # None: local files only
    spool: Spool | None = None


def run(config: ProfileConfig, console: Console, notices: Console, started_ns: int) -> RunResult:
    """Results (the table) go to `console`; progress and notices to `notices` (stderr)."""
    cpu = config.cpu
    launch = launch_command(config.command, cpu)
    processor = StackProcessor(cpu)
    signal = "off-cpu" if cpu.off_cpu else "profile"
    terminal = {signal: lambda p, c: table.render(p, c, config.top)} if config.top else {}
    with held_until_capture(launch):
        stage = OutputStage.create(console, notices,
                                   [FileTarget(p, f, signal) for p, f in config.outputs],
                                   terminal, config.otlp, config.spool,
                                   lambda: {processor.collector.name: processor.collector.stats})
    target = launch.describe() if launch else \
        f"pid {', '.join(map(str, cpu.pids))}" if cpu.pids else "all processes"
    what = (f"tracing off-CPU time of {target} (sched_switch, periods ≥ {cpu.min_block_ns / 1000:g} µs)"
            if cpu.off_cpu else f"sampling {target} every {cpu.period} {cpu.event}"
            if cpu.event in COUNTED else f"sampling {target} at {cpu.hz} Hz ({cpu.event})")
    return capture([processor], stage, notices, "profile", what, config.duration_s, launch,
                   [] if launch else cpu.pids, started_ns, {"process.pid": cpu.pids})
