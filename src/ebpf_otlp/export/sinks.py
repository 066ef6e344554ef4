"""Where finished results go, behind one small face, as the OpenTelemetry SDK's exporters:
`export(batch)` with a result, `flush()`, `shutdown()`. Files and the terminal are here; the
OTLP output (otlp_output.OtlpOutput) is the third. The output stage calls them in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console

from ebpf_otlp.export import files, losses
from ebpf_otlp.signals import registry


@dataclass
class Batch:
    """Finished results and the capture, window or interval they cover. `final`: the
    end of a capture (the OTLP output adds the capture's own span)."""
    results: list
    command: str = ""
    start_ns: int = 0
    end_ns: int = 0
    span_attributes: dict = field(default_factory=dict)
    final: bool = False


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

    def takes(self, result) -> bool:
        return registry.of(result).name == self.signal


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
            for result in batch.results:
                if target.takes(result):
                    files.write_bytes(target.path, registry.of(result).formats[target.fmt](result))
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
        for result in batch.results:
            render = self.renderers.get(registry.of(result).name)
            if render:
                render(result, self.console)
        for result in batch.results:
            signal = registry.of(result)
            losses.render(signal.stats(result), self.console, signal.title)
        return True
