"""Where finished results go, behind one small face, as the OpenTelemetry SDK's exporters:
`export(batch)` with a result, `flush()`, `shutdown()`. Files and the terminal are here; the
OTLP output (otlp_output.OtlpOutput) is the third. The output stage (engine/) calls them in
order. A batch carries each result's signal descriptor: a sink asks it for the result's
formats, table name, losses and OTLP form, and never imports the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console

from ebpf_otlp.export import files, losses

if TYPE_CHECKING:
    from ebpf_otlp.signals.signal import Signal


@dataclass
class Batch:
    """Finished results, each with its signal, and the capture, window or interval they
    cover. `final`: the end of a capture (the OTLP output adds the capture's own span)."""
    items: list[tuple["Signal", Any]]
    command: str = ""
    start_ns: int = 0
    end_ns: int = 0
    span_attributes: dict = field(default_factory=dict)
    final: bool = False

    @property
    def results(self) -> list:
        return [result for _, result in self.items]


class Sink:
    def export(self, batch: Batch) -> bool:
        """Hand the batch on; True when all of it went out (or was kept to resend)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Push out what is buffered."""

    def shutdown(self) -> None:
        """The last call: flush, release, and say what was done."""


@dataclass
class FileTarget:
    path: str
    fmt: str
    signal: str = "profile"  # the results it takes: those of this signal (registry name)


class FileSink(Sink):
    """Each target gets its signal's results in its format; at shutdown, "wrote ..."."""

    def __init__(self, targets: list[FileTarget], notices: Console | None = None):
        self.targets, self.notices = list(targets), notices
        self.written: list[FileTarget] = []

    def check(self) -> None:
        """Before the capture: every file can be written (a bad path fails at once)."""
        for target in self.targets:
            files.check_writable(target.path)

    def export(self, batch: Batch) -> bool:
        for target in self.targets:
            for signal, result in batch.items:
                if signal.name == target.signal:
                    files.write_bytes(target.path, files.for_path(target.path, signal.formats[target.fmt](result)))
                    self.written.append(target)
        return True

    def shutdown(self) -> None:
        if self.notices:
            for target in self.written:
                self.notices.print(f"wrote {target.fmt}: {target.path}", style="green", highlight=False)


class TerminalSink(Sink):
    """Each signal's table (where the command asked for one), then every result's losses."""

    def __init__(self, console: Console, renderers: dict[str, Callable[[object, Console], None]]):
        self.console, self.renderers = console, dict(renderers)

    def export(self, batch: Batch) -> bool:
        for signal, result in batch.items:
            render = self.renderers.get(signal.name)
            if render:
                render(result, self.console)
        for signal, result in batch.items:
            losses.render(signal.stats(result), self.console, signal.title)
        return True
