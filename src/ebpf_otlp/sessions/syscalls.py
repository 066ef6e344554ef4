"""`ebpf-otlp syscalls`: counts, errors and latency per syscall and process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

from ebpf_otlp.collectors.syscalls import SyscallCollector
from ebpf_otlp.errors import AgentError
from ebpf_otlp.export import files, syscall_json, syscall_table
from ebpf_otlp.records import CollectionStats, SyscallReport, SyscallStats
from ebpf_otlp.runtime.capture import StopOnSignal, run_capture
from ebpf_otlp.runtime.processes import alive

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class SyscallsConfig:
    pids: list[int] = field(default_factory=list)
    comm: str | None = None
    syscalls: list[int] = field(default_factory=list)
    duration_s: float | None = None
    interval_s: float = 10.0
    latency: bool = True
    latency_budget: float = 100_000   # syscalls/s timed in full; 0: no limit
    by: str = "syscall"
    top: int = 20
    files: bool = False
    json_path: str | None = None
    otlp: OtlpSettings | None = None
    spool: Spool | None = None


class Totals:
    """Cumulative stats per (process, syscall) since the start."""

    def __init__(self):
        self.by_key: dict[tuple[int, int], SyscallStats] = {}

    def add(self, stats: list[SyscallStats]) -> None:
        for s in stats:
            have = self.by_key.get((s.pid, s.nr))
            if have is None:
                self.by_key[(s.pid, s.nr)] = s
            else:
                have.merge(s)


def run(config: SyscallsConfig, console: Console, notices: Console) -> SyscallReport:
    totals = Totals()
    collector = SyscallCollector(config.pids, config.comm, config.syscalls, config.latency,
                                 config.latency_budget)
    with StopOnSignal() as stop:
        output = None
        if config.otlp:
            from ebpf_otlp.export.otlp_output import open_output
            output = open_output(config.otlp, config.spool, "syscalls",
                                 lambda: CollectionStats(samples=collector.counters["events"]),
                                 config.interval_s)
        collector.start()
        started = time.time_ns()
        try:
            if config.pids and not any(alive(p) for p in config.pids):
                raise AgentError(f"pid {', '.join(map(str, config.pids))} exited before tracing began")
            what = f"pid {', '.join(map(str, config.pids))}" if config.pids else \
                f"comm {config.comm}" if config.comm else "all processes"
            mode = "counts only" if not config.latency else "counts and latency" + (
                f", latency sampled above {config.latency_budget:,.0f} calls/s"
                if config.latency_budget else "")
            notices.print(f"tracing syscalls of {what} ({mode}); Ctrl-C to stop early",
                          style="dim", highlight=False)
            next_drain = time.monotonic() + config.interval_s

            def step() -> None:
                nonlocal next_drain
                stop.wait(min(0.5, max(next_drain - time.monotonic(), 0.01)))
                if time.monotonic() >= next_drain:
                    totals.add(collector.drain())
                    next_drain = time.monotonic() + config.interval_s
                    if output:
                        output.export_metrics(_metrics(report_of(totals, config, collector, started),
                                                       output))

            run_capture(step, config.duration_s, notices, stop,
                        status=lambda: f"{collector.counters['events']} syscalls",
                        label="tracing syscalls")
            if stop.stopped:
                notices.print(f"{stop.signal_name}: stopping, writing what was gathered", style="yellow")
        finally:
            totals.add(collector.stop())
        if collector.timing_error:
            notices.print(f"latency timing stopped early: {collector.timing_error}", style="yellow")
        report = report_of(totals, config, collector, started)
        if config.json_path:
            files.write_text(config.json_path, syscall_json.encode(report))
        if output:
            output.export_metrics(_metrics(report, output))
            output.close()
    syscall_table.render(report, console, config.by, config.top, config.files)
    if config.json_path:
        notices.print(f"wrote json: {config.json_path}", style="green", highlight=False)
    if output:
        notices.print(output.summary(), style="yellow" if output.spooled else "green", highlight=False)
    return report


def report_of(totals: Totals, config: SyscallsConfig, collector: SyscallCollector,
              started: int) -> SyscallReport:
    counters = dict(collector.counters)
    events = counters.pop("events", 0)
    return SyscallReport(list(totals.by_key.values()), started, time.time_ns() - started,
                         config.latency, events, counters, config.latency_budget,
                         collector.timing_share)


def _metrics(report: SyscallReport, output):
    from ebpf_otlp.export import syscall_metrics
    return syscall_metrics.build(report, output.resource)
