"""trace-net connections as OpenTelemetry spans: one per connection, kind CLIENT or SERVER,
from its start to its close, status ERROR with `error.type` when it failed; one per HTTP
request, by the HTTP semantic conventions, per gRPC call, by the RPC ones, and per
database statement, by the database ones."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

from ebpf_otlp.export.span_ids import IDS
from ebpf_otlp.signals.net.records import Connection, DbOperation, HttpRequest, endpoint, traceparent_ids

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


def _exchange_attributes(r: HttpRequest, server_address: str, server_port: int) -> dict:
    """What an HTTP request's span and a gRPC call's share: the server, the connection, the
    process, the client (a server's peer) and the user agent."""
    attrs = {
        "server.address": server_address, "server.port": server_port,
        "network.protocol.name": "http", "network.protocol.version": r.version,
        "network.transport": "tcp", "network.type": f"ipv{r.family}",
        "network.peer.address": r.peer_address, "network.peer.port": r.peer_port,
        "process.pid": r.pid, "process.executable.name": r.process_name,
        "ebpf_otlp.http.ended_by": r.ended_by,
        **r.container.attributes(),
    }
    if r.kind == "server":
        attrs.update({"client.address": r.peer_address, "client.port": r.peer_port})
    if r.user_agent:
        attrs["user_agent.original"] = r.user_agent
    return attrs


def request_attributes(r: HttpRequest) -> dict:
    """HTTP span attributes (semantic conventions, stable): the server's address from the
    Host header where it has one, else the socket's."""
    host, sep, port = r.host.rpartition(":")
    if not (sep and port.isdigit()):
        host, port = r.host, ""
    server_address, server_port = host or r.server[0], int(port) if port else r.server[1]
    path, _, query = r.target.partition("?")
    attrs = {"http.request.method": r.method, "url.scheme": r.scheme,
             **_exchange_attributes(r, server_address, server_port)}
    if r.kind == "server":
        attrs["url.path"] = path
        if query:
            attrs["url.query"] = query
    else:
        attrs["url.full"] = f"{r.scheme}://{endpoint(server_address, server_port)}{r.target}"
    if r.status is not None:
        attrs["http.response.status_code"] = r.status
    if r.route and r.kind == "server":
        attrs["http.route"] = r.route
    if r.request_body_bytes:
        attrs["http.request.body.size"] = r.request_body_bytes
    if r.response_body_bytes:
        attrs["http.response.body.size"] = r.response_body_bytes
    return attrs


def rpc_attributes(r: HttpRequest) -> dict:
    """gRPC span attributes (the RPC semantic conventions, v1.37): service and method from
    the :path, the status from the trailers."""
    attrs = {"rpc.system": r.rpc_system, "rpc.service": r.rpc_service, "rpc.method": r.rpc_method,
             **_exchange_attributes(r, *r.server)}
    if r.grpc_status is not None:
        attrs["rpc.grpc.status_code"] = r.grpc_status
    return attrs


def parent_of(traceparent: str):
    """The context a W3C traceparent header names (version 00), or None."""
    ids = traceparent_ids(traceparent)
    if ids is None:
        return None
    trace_id, span_id, flags = ids
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))
    return trace.set_span_in_context(NonRecordingSpan(remote))


def emit_requests(tracer: Tracer, requests: list[HttpRequest]) -> None:
    """Named by the method, and a server span by the route its path matched (--route):
    never the raw path, as the conventions say; ERROR for 5xx, and for 4xx on the client
    side. A gRPC call is named service/method, ERROR by its status (any but OK for a
    client, the server's own errors for a server). A request with a traceparent header
    joins that trace under the span it names."""
    for r in requests:
        kind = SpanKind.SERVER if r.kind == "server" else SpanKind.CLIENT
        if r.rpc_system:
            name, attrs = f"{r.rpc_service}/{r.rpc_method}", rpc_attributes(r)
        else:
            name = f"{r.method} {r.route}" if r.route and r.kind == "server" else r.method
            attrs = request_attributes(r)
        with IDS.preset(int(r.trace_id or "0", 16), int(r.span_id or "0", 16)):
            span = tracer.start_span(name, context=parent_of(r.traceparent) if r.traceparent else None,
                                     kind=kind, start_time=r.start_ns, attributes=attrs)
        if r.rpc_system and r.grpc_status is not None:
            if r.failed:
                span.set_attribute("error.type", str(r.grpc_status))
                span.set_status(Status(StatusCode.ERROR))
        elif r.status is None:
            span.set_attribute("error.type", "no_response")
            span.set_status(Status(StatusCode.ERROR, f"no response ({r.ended_by})"))
        elif r.failed:
            span.set_attribute("error.type", str(r.status))
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=r.end_ns)


def db_attributes(op: DbOperation) -> dict:
    """Database span attributes (the database conventions, v1.33): system, database,
    operation, table, the statement (sanitised unless asked), the server and the error."""
    address, port = op.server
    attrs = {"db.system.name": op.system, "db.operation.name": op.operation,
             "server.address": address, "server.port": port,
             "network.peer.address": op.peer_address, "network.peer.port": op.peer_port,
             "network.transport": "tcp", "network.type": f"ipv{op.family}",
             "process.pid": op.pid, "process.executable.name": op.process_name,
             **op.container.attributes()}
    for key, value in (("db.namespace", op.namespace), ("db.collection.name", op.collection),
                       ("db.query.text", op.query), ("db.response.status_code", op.status_code),
                       ("ebpf_otlp.db.prepared", op.prepared)):
        if value:
            attrs[key] = value
    if op.rows is not None:
        attrs["db.response.returned_rows"] = op.rows
    if op.truncated:
        attrs["ebpf_otlp.db.query.truncated"] = True
    return attrs


def db_span_name(op: DbOperation) -> str:
    """"{operation} {table}", else the operation, else the system (the conventions' order)."""
    if op.operation and op.collection:
        return f"{op.operation} {op.collection}"
    return op.operation or op.system


def emit_db(tracer: Tracer, operations: list[DbOperation]) -> None:
    """CLIENT spans where the traced process sent the statement, SERVER where it is the
    database; ERROR with the server's code, or when no answer came."""
    for op in operations:
        kind = SpanKind.SERVER if op.kind == "server" else SpanKind.CLIENT
        span = tracer.start_span(db_span_name(op), kind=kind, start_time=op.start_ns,
                                 attributes=db_attributes(op))
        if op.status_code:
            span.set_attribute("error.type", op.status_code)
            span.set_status(Status(StatusCode.ERROR, op.error))
        elif not op.end_ns:
            span.set_attribute("error.type", "no_response")
            span.set_status(Status(StatusCode.ERROR, f"no response ({op.ended_by})"))
        span.end(end_time=op.end_ns or op.start_ns)
