"""`ebpf-otlp trace-net`: every TCP connection as a span and a line, TCP and UDP metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

from ebpf_otlp.signals.net import table as net_table
from ebpf_otlp.export.output_stage import FileTarget, OutputStage
from ebpf_otlp.signals.net.processor import NetProcessor, NetSettings
from ebpf_otlp.engine.run import RunResult, capture, held_until_capture
from ebpf_otlp.engine.run import launch as launch_command

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class TraceNetConfig:
    net: NetSettings = field(default_factory=NetSettings)
    duration_s: float | None = None
    command: list[str] = field(default_factory=list)   # launch mode
    top: int = 20
    lines: bool | None = None                           # a line per connection (None: on a terminal)
    jsonl_path: str | None = None
    otlp: OtlpSettings | None = None
    spool: Spool | None = None


def run(config: TraceNetConfig, console: Console, notices: Console, started_ns: int) -> RunResult:
    net = config.net
    launch = launch_command(config.command, net)
    processor = NetProcessor(net)
    files = [FileTarget(config.jsonl_path, "jsonl", "trace-net")] if config.jsonl_path else []
    terminal = {"trace-net": lambda r, c: net_table.render_summary(r, c, config.top)} if config.top else {}
    lines = console.is_terminal if config.lines is None else config.lines
    with held_until_capture(launch):
        stage = OutputStage.create(console, notices, files, terminal, config.otlp, config.spool,
                                   lambda: {processor.collector.name: processor.collector.stats},
                                   net.interval_s, live_terminal=lines)
    target = launch.describe() if launch else f"pid {', '.join(map(str, net.pids))}" if net.pids \
        else f"comm {net.comm}" if net.comm else "all processes"
    ports = f", ports {', '.join(map(str, net.ports))}" if net.ports else ""
    # The hooks are chosen as the collector starts: the notice, after it, says which.
    return capture([processor], stage, notices, "trace-net",
                   lambda: f"tracing TCP connections of {target}{ports} "
                           f"({processor.collector.hooks})",
                   config.duration_s, launch, [] if launch else net.pids, started_ns,
                   progress=not lines)   # the lines are the progress, on the same terminal
