"""The one output stage: a capture's results go to every requested sink from here.

Sinks are files (each in its format), the terminal, and an OpenTelemetry Collector. A
result is a finished record (`Profile`, `SyscallReport`); which encoder, table or OTLP
signal applies follows from its type. Commands only say which sinks they want.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from rich.console import Console

import time

from ebpf_otlp.export import files, heap_out, losses, profile_files
from ebpf_otlp.signals.net import json_out as net_json
from ebpf_otlp.signals.syscalls import json_out as syscall_json
from ebpf_otlp.signals.net.lines import ConnectionLines
from ebpf_otlp.records import CollectorStats, HeapReport, Profile
from ebpf_otlp.signals.net.records import NetReport
from ebpf_otlp.signals.syscalls.records import SyscallReport

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_output import OtlpOutput
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool

# File formats by result type: format name -> encoder to bytes.
FILE_FORMATS: dict[type, dict[str, Callable[[object], bytes]]] = {
    Profile: profile_files.ENCODERS,
    SyscallReport: {"json": lambda r: syscall_json.encode(r).encode()},
    NetReport: {"jsonl": lambda r: net_json.encode(r).encode()},
    # A heap report is its profile in every profile format; its JSON adds the leak report.
    HeapReport: {**{fmt: (lambda r, e=encode: e(r.profile)) for fmt, encode in profile_files.ENCODERS.items()},
                 "json": lambda r: heap_out.encode(r).encode()},
}


@dataclass
class FileTarget:
    path: str
    fmt: str
    kind: type = Profile     # which results it takes
    only: str = ""           # and of those, only this one (result_name), e.g. "off-CPU profile"

    def takes(self, result) -> bool:
        return isinstance(result, self.kind) and (not self.only or result_name(result) == self.only)


@dataclass
class OutputStage:
    console: Console                                  # results (tables)
    notices: Console                                  # progress, "wrote ..." and warnings
    files: list[FileTarget] = field(default_factory=list)
    terminal: dict[type, Callable[[object, Console], None]] = field(default_factory=dict)
    otlp: "OtlpOutput | None" = None
    interval_s: float = 60.0                          # metrics to the collector this often
    lines: "ConnectionLines | None" = None            # trace-net: a terminal line per connection
    written: list[FileTarget] = field(default_factory=list)
    _connections_done: int = 0                        # connections already shown and sent
    _next_metrics: float = 0.0

    @classmethod
    def create(cls, console: Console, notices: Console, file_targets: list[FileTarget],
               terminal: dict[type, Callable[[object, Console], None]],
               otlp: "OtlpSettings | None", spool: "Spool | None",
               stats: Callable[[], dict[str, CollectorStats]], interval_s: float = 60.0,
               connection_lines: bool = False) -> "OutputStage":
        """Check every file can be written before the capture starts; open the OTLP
        output (and resend what earlier runs spooled) when a collector is named."""
        for target in file_targets:
            files.check_writable(target.path)
        output = None
        if otlp:
            from ebpf_otlp.export.otlp_output import open_output   # the SDK loads only when used
            output = open_output(otlp, spool, stats, interval_s)
        lines = ConnectionLines(console) if connection_lines else None
        return cls(console, notices, list(file_targets), dict(terminal), output, interval_s,
                   lines, _next_metrics=time.monotonic() + interval_s)

    def periodic(self, result) -> None:
        """While the capture runs: new connections (terminal lines, spans) at once, and the
        cumulative metrics every interval."""
        if isinstance(result, NetReport):
            self.new_connections(result, result.start_ns + result.duration_ns)
        if self.otlp and isinstance(result, (SyscallReport, NetReport)) and \
                time.monotonic() >= self._next_metrics:
            self.otlp.send(result)
            self._next_metrics = time.monotonic() + self.interval_s

    def new_connections(self, report: NetReport, end_ns: int) -> None:
        """The connections of `report` not shown or sent yet: a line each, a span each."""
        fresh = report.connections[self._connections_done:]
        if self.lines and fresh:
            self.lines.add(fresh)
        if self.otlp and fresh:
            self.otlp.send_connections(fresh, report.start_ns, end_ns)
        self._connections_done += len(fresh)

    def reset_connections(self) -> None:
        """The report's connections start over (the agent began a new window)."""
        self._connections_done = 0

    def write_file(self, target: FileTarget, result) -> None:
        files.write_bytes(target.path, FILE_FORMATS[target.kind][target.fmt](result))

    def close(self) -> None:
        if self.otlp:
            self.otlp.close()

    def finish(self, results: list, command: str, start_ns: int, end_ns: int,
               span_attributes: dict) -> None:
        """Write every file, send to the collector, then show the tables; the terminal
        comes last so a slow terminal never delays the files."""
        for target in self.files:
            for result in results:
                if target.takes(result):
                    self.write_file(target, result)
                    self.written.append(target)
        for result in results:
            if isinstance(result, NetReport):   # the last connections, and those still open
                self.new_connections(result, end_ns)
        self._close_lines()
        if self.otlp:
            for result in results:
                self.otlp.send(result)   # profiles first: our transport names a failure best
            self.otlp.session_span(command, start_ns, end_ns,
                                   {**span_attributes, **_span_attributes(results)})
            self.otlp.close()
        for result in results:
            render = self.terminal.get(type(result))
            if render:
                render(result, self.console)
        for result in results:
            losses.render(result_stats(result), self.console, result_name(result))
        for target in self.written:
            self.notices.print(f"wrote {target.fmt}: {target.path}", style="green", highlight=False)
        if self.otlp:
            self.notices.print(self.otlp.summary(), style="yellow" if self.otlp.spooled else "green",
                               highlight=False)

    def _close_lines(self) -> None:
        """The lines end before the tables begin: they share the terminal."""
        if self.lines:
            self.lines.close()
            self.lines = None

    def abort(self) -> None:
        """The capture failed: flush what the OTLP output holds (spooling if need be)."""
        self._close_lines()
        if self.otlp:
            self.otlp.close()


def result_stats(result) -> CollectorStats:
    return result.stats if isinstance(result, Profile) else result.collection


def result_name(result) -> str:
    if isinstance(result, Profile):
        return "off-CPU profile" if result.event == "sched_switch" else "profile"
    if isinstance(result, HeapReport):
        return "memleak"
    return "trace-net" if isinstance(result, NetReport) else "syscalls"


def _span_attributes(results: list) -> dict:
    """What the capture's span says of its results: how much was gathered and lost."""
    out = {}
    for r in results:
        if isinstance(r, Profile):
            out.update({"ebpf_otlp.event": r.event, "ebpf_otlp.sample_frequency_hz": r.frequency_hz,
                        f"ebpf_otlp.{r.shown.type}": r.total()})
        elif isinstance(r, NetReport):
            out["ebpf_otlp.connections"] = len(r.connections)
            out["ebpf_otlp.hooks"] = r.hooks
        elif isinstance(r, HeapReport):
            out["ebpf_otlp.heap.sampling_rate_bytes"] = r.rate
            out["ebpf_otlp.heap.leak_stacks"] = len(r.leaks)
        else:
            out["ebpf_otlp.syscalls"] = r.events
        out[f"ebpf_otlp.{result_name(r).replace(' ', '_').lower()}.lost"] = result_stats(r).total_lost
    return out
