"""trace-net connections as OpenTelemetry spans: one per connection, kind CLIENT or SERVER,
from its start to its close, status ERROR with `error.type` when it failed."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from ebpf_otlp.signals.net.records import Connection, endpoint

ERROR_TYPES = {"refused": "connection_refused", "timed_out": "timed_out", "failed": "connect_failed",
               "reset_sent": "reset", "reset_received": "reset"}


def attributes(c: Connection) -> dict:
    """Semantic-convention names where they exist; the TCP figures under ebpf_otlp.tcp.*."""
    server_address, server_port = c.server
    attrs = {
        "network.transport": "tcp", "network.type": f"ipv{c.family}",
        "network.local.address": c.local_address, "network.local.port": c.local_port,
        "network.peer.address": c.peer_address, "network.peer.port": c.peer_port,
        "server.address": server_address, "server.port": server_port,
        "process.pid": c.pid, "process.executable.name": c.process_name,
        "network.tcp.handshake.role": c.role or "unknown",
        "ebpf_otlp.tcp.result": c.result,
        "ebpf_otlp.tcp.bytes_sent": c.bytes_sent, "ebpf_otlp.tcp.bytes_received": c.bytes_received,
        "ebpf_otlp.tcp.segments_in": c.segs_in, "ebpf_otlp.tcp.segments_out": c.segs_out,
        "ebpf_otlp.tcp.retransmits": c.retransmits,
        **c.container.attributes(),
    }
    if c.role == "server":
        attrs["client.address"], attrs["client.port"] = c.peer_address, c.peer_port
    elif c.role == "client":
        attrs["client.address"], attrs["client.port"] = c.local_address, c.local_port
    if c.srtt_us is not None:
        attrs["ebpf_otlp.tcp.rtt_us"] = c.srtt_us
    if c.handshake_ns is not None:
        attrs["ebpf_otlp.tcp.handshake_ns"] = c.handshake_ns
    if c.error:
        attrs["ebpf_otlp.tcp.socket_error"] = c.error
    if c.result == "open":
        attrs["ebpf_otlp.tcp.open"] = True
    if not c.start_ns:
        attrs["ebpf_otlp.tcp.started_before_capture"] = True
    return attrs


def emit(tracer: Tracer, connections: list[Connection], capture_start_ns: int, end_ns: int) -> None:
    """Connections that began before the capture start at its start; open ones end at its end."""
    for c in connections:
        kind = SpanKind.SERVER if c.role == "server" else SpanKind.CLIENT
        span = tracer.start_span(f"tcp {endpoint(*c.server)}", kind=kind,
                                 start_time=c.start_ns or capture_start_ns, attributes=attributes(c))
        if c.failed:
            error = ERROR_TYPES[c.result]
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, c.error or error))
        span.end(end_time=c.end_ns or end_ns)
