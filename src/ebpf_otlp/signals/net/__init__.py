"""The net signal (trace-net): every TCP connection, from its start to its close, and UDP
per process and peer, as lines, a summary, JSON lines, OTLP spans and metrics."""

from __future__ import annotations

from ebpf_otlp.signals.net.records import NetReport
from ebpf_otlp.signals.signal import Signal


def _jsonl(report: NetReport) -> bytes:
    from ebpf_otlp.signals.net import json_out
    return json_out.encode(report).encode()


def _to_otlp(out, report: NetReport) -> None:
    from ebpf_otlp.signals.net import metrics
    out.export_metrics(metrics.build(report, out.resource, out.metric_temporality))


def _settings(table: dict, path: str):
    from ebpf_otlp.signals.net.processor import NetSettings
    return NetSettings.from_table(table, path)


def _processor(settings):
    from ebpf_otlp.signals.net.processor import NetProcessor
    return NetProcessor(settings)


def _stream(console, otlp):
    from ebpf_otlp.signals.net.stream import ConnectionStream
    return ConnectionStream(console, otlp)


def _describe(net, processor, target: str) -> str:
    """Said after the start: the hooks are chosen as the collector starts."""
    ports = f", ports {', '.join(map(str, net.ports))}" if net.ports else ""
    return f"tracing TCP connections of {target}{ports} ({processor.collector.hooks})"


NET = Signal(
    name="trace-net", title="trace-net", result=NetReport, stats=lambda r: r.collection,
    formats={"jsonl": _jsonl}, to_otlp=_to_otlp,
    span_attributes=lambda r: {"ebpf_otlp.connections": len(r.connections), "ebpf_otlp.hooks": r.hooks},
    table="trace_net", settings=_settings, processor=_processor,
    bundle=(("connections.jsonl", "jsonl"),), stream=_stream, command="trace-net",
    describe=_describe)
