"""A collector and processor without a kernel, for the pipeline core's unit tests (the
capture loop, the output stage, the agent's windows)."""

from __future__ import annotations

import time

from ebpf_otlp.errors import AgentError
from ebpf_otlp.signals.collector import Collector
from ebpf_otlp.signals.processor import Processor


class FakeCollector(Collector):
    """Hands out one record per drain, and one more at stop, as a BPF map would."""

    def __init__(self, name: str = "fake", interval_s: float = 0.1, fail: str = ""):
        super().__init__()
        self.name, self.interval_s, self.fail = name, interval_s, fail
        self.drains: list[float] = []
        self.started = self.stopped = False

    def start(self) -> None:
        if self.fail:
            raise AgentError(self.fail)
        self.started = True

    def drain(self) -> list:
        self.drains.append(time.monotonic())
        self.stats.processed += 1
        return [f"drain {len(self.drains)}"]

    def stop(self) -> list:
        self.stopped = True
        return ["at stop"]


class FakeProcessor(Processor):
    def __init__(self, collector: FakeCollector):
        self.collector = collector
        self.records: list = []
        self.resets = 0

    def add(self, records: list) -> None:
        self.records += records

    def result(self, end_ns: int | None = None):
        return list(self.records)

    def reset(self, start_ns: int | None = None) -> None:
        self.resets += 1
        self.records = []


class FakeOtlp:
    """An OTLP output that keeps what it is given: results sent, spans in memory."""

    def __init__(self):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.sent: list = []
        self.sessions: list[str] = []
        self.spans = InMemorySpanExporter()
        self._provider = TracerProvider()
        self._provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.spooled = 0
        self.closed = False

    def export(self, batch) -> bool:
        self.sent += batch.results
        if batch.final:
            self.sessions.append(batch.command)
        return True

    def shutdown(self) -> None:
        self.closed = True

    def tracer_provider(self):
        return self._provider

    def summary(self) -> str:
        return f"sent {len(self.sent)} result(s)"


class ResultProcessor(FakeProcessor):
    """A fake processor whose result is a real record: `make(records, end_ns)`."""

    def __init__(self, collector: FakeCollector, make, periodic: bool = False):
        super().__init__(collector)
        self.make, self.periodic = make, periodic

    def result(self, end_ns: int | None = None):
        return self.make(list(self.records), end_ns)
