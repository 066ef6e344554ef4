"""The net signal (trace-net): every TCP connection, from its start to its close, the
requests on them (HTTP/1.x, HTTP/2, gRPC), database statements (PostgreSQL, MySQL and MariaDB, Redis), and UDP per
process and peer, as lines, a
summary, JSON lines, OTLP spans and metrics."""

from __future__ import annotations

from ebpf_otlp.signals.net.records import NetReport
from ebpf_otlp.signals.net.settings import NetSettings
from ebpf_otlp.signals.signal import Signal, encoded, later, metrics_to_otlp

HERE = "ebpf_otlp.signals.net"


def _describe(net, processor, target: str) -> str:
    """Said after the start: the hooks are chosen as the collector starts."""
    ports = f", ports {', '.join(map(str, net.ports))}" if net.ports else ""
    c = processor.collector
    requests = ""
    if c.requests:
        tls = (f", over TLS in {', '.join(c.tls_libraries)}" if c.tls_libraries else
               ", no libssl to probe for TLS" if c.tls else "")
        names = {"http": "HTTP/1.x and HTTP/2", "grpc": "gRPC", "postgres": "PostgreSQL", "mysql": "MySQL",
                 "redis": "Redis"}
        requests = f"; {', '.join(names[p] for p in c.protocols)} requests{tls}"
    return f"tracing TCP connections of {target}{ports} ({c.hooks}){requests}"


NET = Signal(
    name="trace-net", title="trace-net", result=NetReport, stats=lambda r: r.collection,
    formats={"jsonl": encoded(f"{HERE}.json_out:encode")}, to_otlp=metrics_to_otlp(f"{HERE}.metrics:build"),
    span_attributes=lambda r: {"ebpf_otlp.connections": len(r.connections), "ebpf_otlp.hooks": r.hooks},
    table="trace_net", settings_type=NetSettings, settings=NetSettings.from_table,
    processor=later(f"{HERE}.processor:NetProcessor"), bundle=(("connections.jsonl.gz", "jsonl"),),
    stream=later(f"{HERE}.stream:ConnectionStream"), command="trace-net", describe=_describe)
