"""Connections go out as they close, not at the end: a line each on the terminal (lines.py)
and a span each to the collector (spans.py), as do HTTP requests as their responses end,
and database statements as their answers do.
Each update sends what is new in the report."""

from __future__ import annotations

from ebpf_otlp import __version__
from ebpf_otlp.signals.net import spans
from ebpf_otlp.signals.net.lines import ConnectionLines
from ebpf_otlp.signals.net.records import NetReport
from ebpf_otlp.signals.signal import Stream


class ConnectionStream(Stream):
    def __init__(self, console, otlp):
        self.lines = ConnectionLines(console) if console is not None else None
        self.otlp = otlp
        self.done = 0            # connections of the report already shown and sent
        self.done_requests = 0
        self.done_db = 0

    def update(self, report: NetReport, end_ns: int) -> None:
        fresh, requests = report.connections[self.done:], report.requests[self.done_requests:]
        db = report.db[self.done_db:]
        if fresh and self.lines:
            self.lines.add(fresh)
        if self.otlp and (fresh or requests or db):
            tracer = self.otlp.tracer_provider().get_tracer("ebpf-otlp.trace-net", __version__)
            spans.emit(tracer, fresh, report.start_ns, end_ns)
            spans.emit_requests(tracer, requests)
            spans.emit_db(tracer, db)
        self.done += len(fresh)
        self.done_requests += len(requests)
        self.done_db += len(db)

    def reset(self) -> None:
        self.done = self.done_requests = self.done_db = 0

    def close(self) -> None:
        """The lines end before the tables begin: they share the terminal."""
        if self.lines:
            self.lines.close()
            self.lines = None
