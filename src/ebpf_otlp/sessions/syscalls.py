"""`ebpf-otlp syscalls`: counts, errors and latency per syscall and process → table, JSON,
OTLP metrics every interval."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

from ebpf_otlp.signals.syscalls import table as syscall_table
from ebpf_otlp.export.output_stage import FileTarget, OutputStage
from ebpf_otlp.signals.syscalls.processor import SyscallProcessor, SyscallSettings
from ebpf_otlp.engine.run import RunResult, capture, held_until_capture
from ebpf_otlp.engine.run import launch as launch_command

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class SyscallsConfig:
    trace: SyscallSettings = field(default_factory=SyscallSettings)
    duration_s: float | None = None
    command: list[str] = field(default_factory=list)   # launch mode
    by: str = "syscall"
    top: int = 20
    files: bool = False
    json_path: str | None = None
    otlp: OtlpSettings | None = None
    spool: Spool | None = None


def run(config: SyscallsConfig, console: Console, notices: Console, started_ns: int) -> RunResult:
    trace = config.trace
    launch = launch_command(config.command, trace)
    processor = SyscallProcessor(trace)
    files = [FileTarget(config.json_path, "json", "syscalls")] if config.json_path else []
    with held_until_capture(launch):
        stage = OutputStage.create(
            console, notices, files,
            {"syscalls": lambda r, c: syscall_table.render(r, c, config.by, config.top, config.files)},
            config.otlp, config.spool, lambda: {processor.collector.name: processor.collector.stats},
            trace.interval_s)
    target = launch.describe() if launch else f"pid {', '.join(map(str, trace.pids))}" if trace.pids \
        else f"comm {trace.comm}" if trace.comm else "all processes"
    mode = "counts only" if not trace.latency else "counts and latency" + (
        f", latency sampled above {trace.latency_budget:,.0f} calls/s" if trace.latency_budget else "")
    done = capture([processor], stage, notices, "syscalls", f"tracing syscalls of {target} ({mode})",
                   config.duration_s, launch, [] if launch else trace.pids, started_ns)
    if processor.collector.timing_error:
        notices.print(f"latency timing stopped early: {processor.collector.timing_error}", style="yellow")
    return done
