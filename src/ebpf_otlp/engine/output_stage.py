"""The one output stage: a capture's results go to every requested sink from here.

Sinks (export/sinks.py) are files (each in its format), the terminal, and an OpenTelemetry
Collector (export/otlp_output.py), all with one face. A result is a finished record
(`Profile`, `SyscallReport`); the stage finds its signal's descriptor (signals/registry.py)
and hands both on (`batch`): the descriptor says which encoders, OTLP signal and stream
apply. Commands only say which sinks they want.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from rich.console import Console

from ebpf_otlp.export.sinks import Batch, FileSink, FileTarget, Sink, TerminalSink
from ebpf_otlp.records import CollectorStats
from ebpf_otlp.signals import registry
from ebpf_otlp.signals.signal import Stream

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_output import OtlpOutput
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class OutputStage:
    console: Console                                  # results (tables)
    notices: Console                                  # progress, "wrote ..." and warnings
    files: FileSink
    terminal: TerminalSink
    otlp: "OtlpOutput | None" = None
    interval_s: float = 60.0                          # metrics to the collector this often
    live_terminal: bool = False                       # streams (trace-net's lines) on the terminal too
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
        file_sink = FileSink(file_targets, notices)
        file_sink.check()
        output = None
        if otlp:
            from ebpf_otlp.export.otlp_output import open_output   # the SDK loads only when used
            output = open_output(otlp, spool, stats, interval_s)
        return cls(console, notices, file_sink, TerminalSink(console, terminal), output,
                   interval_s, live_terminal, _next_metrics=time.monotonic() + interval_s)

    @property
    def sinks(self) -> list[Sink]:
        """In the order they are served: files first, the collector, the terminal last (a
        slow terminal never delays the files)."""
        return [self.files] + ([self.otlp] if self.otlp else []) + [self.terminal]

    @property
    def written(self) -> list[FileTarget]:
        return self.files.written

    def periodic(self, result) -> None:
        """While the capture runs: what its signal streams at once, and the cumulative
        metrics every interval."""
        self.stream(result, result.start_ns + result.duration_ns)
        if self.otlp and time.monotonic() >= self._next_metrics:
            self.otlp.export(batch([result]))
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

    def finish(self, results: list, command: str, start_ns: int, end_ns: int,
               span_attributes: dict) -> None:
        """Every sink gets the results (the streams' last connections before the
        collector's), then each shuts down: "wrote ..." lines, the OTLP summary."""
        final = batch(results, command, start_ns, end_ns,
                      {**span_attributes, **_span_attributes(results)}, final=True)
        self.files.export(final)
        for result in results:   # the last connections, and those still open
            self.stream(result, end_ns)
        self._close_streams()
        for sink in self.sinks[1:]:
            sink.export(final)
        self._shutdown()

    def _close_streams(self) -> None:
        for s in self.streams.values():
            s.close()

    def _shutdown(self) -> None:
        for sink in self.sinks:
            sink.shutdown()
        if self.otlp:
            self.notices.print(self.otlp.summary(), style="yellow" if self.otlp.spooled else "green",
                               highlight=False)

    def close(self) -> None:
        """The run ends without a final batch (the agent, or a failed capture): streams
        end, and what the OTLP output holds is flushed (spooling if need be)."""
        self._close_streams()
        if self.otlp:
            self.otlp.shutdown()

    abort = close


def batch(results: list, *args, **kw) -> Batch:
    """Results for the sinks, each with its signal's descriptor."""
    return Batch([(registry.of(r), r) for r in results], *args, **kw)


def _span_attributes(results: list) -> dict:
    """What the capture's span says of its results: how much was gathered and lost."""
    out = {}
    for r in results:
        signal = registry.of(r)
        out.update(signal.span_attributes(r))
        out[f"ebpf_otlp.{signal.title.replace(' ', '_').lower()}.lost"] = signal.stats(r).total_lost
    return out
