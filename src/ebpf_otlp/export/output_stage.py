"""The one output stage: a capture's results go to every requested sink from here.

Sinks are files (each in its format), the terminal, and an OpenTelemetry Collector. A
result is a finished record (`Profile`, `SyscallReport`); its signal's descriptor
(signals/registry.py) says which encoders, OTLP signal and stream apply. Commands only say
which sinks they want.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from rich.console import Console

from ebpf_otlp.export import files, losses
from ebpf_otlp.records import CollectorStats
from ebpf_otlp.signals import registry
from ebpf_otlp.signals.signal import Stream

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_output import OtlpOutput
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class FileTarget:
    path: str
    fmt: str
    signal: str = "profile"  # the results it takes: those of this signal (registry name)

    def takes(self, result) -> bool:
        return registry.of(result).name == self.signal


@dataclass
class OutputStage:
    console: Console                                  # results (tables)
    notices: Console                                  # progress, "wrote ..." and warnings
    files: list[FileTarget] = field(default_factory=list)
    terminal: dict[str, Callable[[object, Console], None]] = field(default_factory=dict)   # by signal
    otlp: "OtlpOutput | None" = None
    interval_s: float = 60.0                          # metrics to the collector this often
    live_terminal: bool = False                       # streams (trace-net's lines) on the terminal too
    written: list[FileTarget] = field(default_factory=list)
    streams: dict[str, Stream] = field(default_factory=dict)
    _next_metrics: float = 0.0

    @classmethod
    def create(cls, console: Console, notices: Console, file_targets: list[FileTarget],
               terminal: dict[str, Callable[[object, Console], None]],
               otlp: "OtlpSettings | None", spool: "Spool | None",
               stats: Callable[[], dict[str, CollectorStats]], interval_s: float = 60.0,
               live_terminal: bool = False) -> "OutputStage":
        """Check every file can be written before the capture starts; open the OTLP
        output (and resend what earlier runs spooled) when a collector is named."""
        for target in file_targets:
            files.check_writable(target.path)
        output = None
        if otlp:
            from ebpf_otlp.export.otlp_output import open_output   # the SDK loads only when used
            output = open_output(otlp, spool, stats, interval_s)
        return cls(console, notices, list(file_targets), dict(terminal), output, interval_s,
                   live_terminal, _next_metrics=time.monotonic() + interval_s)

    def periodic(self, result) -> None:
        """While the capture runs: what its signal streams at once, and the cumulative
        metrics every interval."""
        self.stream(result, result.start_ns + result.duration_ns)
        if self.otlp and time.monotonic() >= self._next_metrics:
            self.otlp.send(result)
            self._next_metrics = time.monotonic() + self.interval_s

    def stream(self, result, end_ns: int) -> None:
        """What is new in `result` for its signal's stream, if it has one (trace-net:
        connections closed since the last call, a line and a span each)."""
        signal = registry.of(result)
        if signal.stream is None:
            return
        if signal.name not in self.streams:
            self.streams[signal.name] = signal.stream(self.console if self.live_terminal else None,
                                                      self.otlp)
        self.streams[signal.name].update(result, end_ns)

    def reset_streams(self) -> None:
        """The results start over (the agent began a new window)."""
        for s in self.streams.values():
            s.reset()

    def write_file(self, target: FileTarget, result) -> None:
        files.write_bytes(target.path, registry.of(result).formats[target.fmt](result))

    def close(self) -> None:
        self._close_streams()
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
        for result in results:   # the last connections, and those still open
            self.stream(result, end_ns)
        self._close_streams()
        if self.otlp:
            for result in results:
                self.otlp.send(result)   # profiles first: our transport names a failure best
            self.otlp.session_span(command, start_ns, end_ns,
                                   {**span_attributes, **_span_attributes(results)})
            self.otlp.close()
        for result in results:
            render = self.terminal.get(registry.of(result).name)
            if render:
                render(result, self.console)
        for result in results:
            signal = registry.of(result)
            losses.render(signal.stats(result), self.console, signal.title)
        for target in self.written:
            self.notices.print(f"wrote {target.fmt}: {target.path}", style="green", highlight=False)
        if self.otlp:
            self.notices.print(self.otlp.summary(), style="yellow" if self.otlp.spooled else "green",
                               highlight=False)

    def _close_streams(self) -> None:
        for s in self.streams.values():
            s.close()

    def abort(self) -> None:
        """The capture failed: flush what the OTLP output holds (spooling if need be)."""
        self.close()


def _span_attributes(results: list) -> dict:
    """What the capture's span says of its results: how much was gathered and lost."""
    out = {}
    for r in results:
        signal = registry.of(r)
        out.update(signal.span_attributes(r))
        out[f"ebpf_otlp.{signal.title.replace(' ', '_').lower()}.lost"] = signal.stats(r).total_lost
    return out
