"""trace-net's pure parts, fed with hand-made connections: results, payload bytes,
spans, metrics, JSON lines and the terminal."""

import errno
import json
import os
import threading
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from rich.console import Console

from ebpf_otlp.signals.net.collector import (SEEN_FIN_ACKED, SEEN_FIN_RECEIVED, SEEN_SYN_ACKED,
                                      _address, payload_bytes, result_of)
from ebpf_otlp.signals.net import json_out as net_json
from ebpf_otlp.signals.net import metrics as net_metrics
from ebpf_otlp.signals.net import spans as net_spans
from ebpf_otlp.signals.net import table as net_table
from ebpf_otlp.signals.net.lines import ConnectionLines
from ebpf_otlp.export.resource import build_resource
from ebpf_otlp.signals.net.records import Connection, DbOperation, HttpRequest, NetReport, UdpFlow

T0 = 1_700_000_000_000_000_000


def conn(**kw) -> Connection:
    base = dict(pid=10, process_name="curl", role="client", family=4, local_address="10.0.0.1",
                local_port=40000, peer_address="10.0.0.2", peer_port=443, start_ns=T0,
                end_ns=T0 + 2_000_000, handshake_ns=100_000, bytes_sent=100, bytes_received=5000,
                segs_in=5, segs_out=4, retransmits=0, srtt_us=50)
    base.update(kw)
    return Connection(**base)


def test_how_a_connection_ended():
    assert result_of(2, errno.ECONNREFUSED, False, True) == "refused"
    assert result_of(2, errno.ETIMEDOUT, False, False) == "timed_out"
    assert result_of(2, 0, False, False) == "failed"          # e.g. closed while connecting
    assert result_of(9, 0, False, False) == "normal"          # LAST_ACK → CLOSE
    assert result_of(1, errno.ECONNRESET, False, True) == "reset_received"
    assert result_of(1, 0, True, False) == "reset_sent"
    assert result_of(1, errno.ETIMEDOUT, False, False) == "timed_out"


def test_payload_leaves_out_syn_and_fin_sequence_numbers():
    # A client that sent 50 bytes and read 5000, closing cleanly: SYN and FIN acked, FIN in.
    seen = SEEN_SYN_ACKED | SEEN_FIN_ACKED | SEEN_FIN_RECEIVED
    assert payload_bytes(52, 5001, seen, clean_end=True) == (50, 5000)
    # A server: its SYN-ACK is not in bytes_acked.
    assert payload_bytes(5001, 51, SEEN_FIN_ACKED | SEEN_FIN_RECEIVED, True) == (5000, 50)
    # A reset: no FIN went either way, whatever the states said.
    assert payload_bytes(51, 10, SEEN_SYN_ACKED | SEEN_FIN_ACKED, clean_end=False) == (50, 10)


def test_ipv4_on_a_dual_stack_socket_is_named_as_ipv4():
    """::ffff:127.0.0.1 (an IPv6 socket's IPv4 peer) is 127.0.0.1 on the wire."""
    mapped = bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1])
    assert _address(10, mapped) == (4, "127.0.0.1")
    assert _address(10, bytes(15) + b"\x01") == (6, "::1")
    assert _address(2, bytes([10, 0, 0, 2]) + bytes(12)) == (4, "10.0.0.2")


def test_ipv6_span_names_bracket_the_address():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    net_spans.emit(provider.get_tracer("t"), [conn(family=6, local_address="fd00::1",
                                                   peer_address="fd00::2")], T0, T0 + 9_000_000)
    assert exporter.get_finished_spans()[0].name == "tcp [fd00::2]:443"


def test_spans_kind_status_and_attributes():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = conn(role="server", local_address="10.0.0.2", local_port=443,
                  peer_address="10.0.0.1", peer_port=40000, handshake_ns=None)
    refused = conn(result="refused", error="ECONNREFUSED", bytes_sent=0, bytes_received=0,
                   end_ns=T0 + 10_000)
    still_open = conn(result="open", end_ns=0)
    net_spans.emit(provider.get_tracer("t"), [conn(), server, refused, still_open], T0, T0 + 9_000_000)
    spans = exporter.get_finished_spans()
    client, srv, ref, op = spans
    assert client.kind == SpanKind.CLIENT and srv.kind == SpanKind.SERVER
    assert client.name == srv.name == "tcp 10.0.0.2:443"
    assert client.start_time == T0 and client.end_time == T0 + 2_000_000
    a = client.attributes
    assert a["network.peer.address"] == "10.0.0.2" and a["server.port"] == 443
    assert a["client.port"] == 40000 and a["process.pid"] == 10 and a["network.type"] == "ipv4"
    assert a["ebpf_otlp.tcp.bytes_sent"] == 100 and a["ebpf_otlp.tcp.rtt_us"] == 50
    assert srv.attributes["client.address"] == "10.0.0.1" and srv.attributes["server.address"] == "10.0.0.2"
    assert ref.status.status_code == StatusCode.ERROR and ref.attributes["error.type"] == "connection_refused"
    assert op.end_time == T0 + 9_000_000 and op.attributes["ebpf_otlp.tcp.open"] is True
    assert client.status.status_code == StatusCode.UNSET


def report(**kw) -> NetReport:
    conns = [conn(), conn(local_port=40001, retransmits=3), conn(result="reset_received"),
             conn(role="server", local_address="10.0.0.2", local_port=443, peer_address="10.0.0.9",
                  peer_port=51000, handshake_ns=None)]
    udp = [UdpFlow(10, "dig", "transmit", 4, "10.0.0.53", 53, bytes=300, datagrams=3)]
    return NetReport(conns, udp, T0, 5_000_000_000, "tracepoints", **kw)


def test_metrics_are_cumulative_and_bounded():
    data = net_metrics.build(report(), build_resource())
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    connections = metrics["ebpf_otlp.tcp.connections"].data.data_points
    assert sum(p.value for p in connections) == 4
    for p in connections:   # a client's ephemeral port is never an attribute
        assert 40000 not in p.attributes.values() and 51000 not in p.attributes.values()
        assert p.attributes["server.port"] == 443
    by_dir = {p.attributes["network.io.direction"]: 0 for p in metrics["ebpf_otlp.tcp.bytes"].data.data_points}
    for p in metrics["ebpf_otlp.tcp.bytes"].data.data_points:
        by_dir[p.attributes["network.io.direction"]] += p.value
    assert by_dir == {"transmit": 400, "receive": 20000}
    assert sum(p.value for p in metrics["ebpf_otlp.tcp.retransmits"].data.data_points) == 3
    [reset] = metrics["ebpf_otlp.tcp.resets"].data.data_points
    assert reset.value == 1 and reset.attributes["ebpf_otlp.tcp.reset.direction"] == "received"
    hs = metrics["ebpf_otlp.tcp.handshake.duration"].data.data_points
    assert sum(p.count for p in hs) == 3 and metrics["ebpf_otlp.tcp.handshake.duration"].unit == "s"
    assert sum(p.count for p in metrics["ebpf_otlp.tcp.connection.duration"].data.data_points) == 4
    [udp] = metrics["ebpf_otlp.udp.bytes"].data.data_points
    assert udp.value == 300 and udp.attributes["network.peer.port"] == 53


def test_rtt_from_every_ack_uses_the_kernel_histogram():
    data = net_metrics.build(report(rtt_log2_us={5: 7, 6: 3}), build_resource())
    rtt = next(m for m in data.resource_metrics[0].scope_metrics[0].metrics if m.name == "ebpf_otlp.tcp.rtt")
    [point] = rtt.data.data_points
    assert point.count == 10 and point.bucket_counts[5] == 7 and point.bucket_counts[6] == 3
    assert point.explicit_bounds[5] == 64 / 1e6   # bucket 5: [32 µs, 64 µs)


def test_json_lines_and_terminal():
    r = report()
    lines = [json.loads(line) for line in net_json.encode(r).splitlines()]
    assert [d["type"] for d in lines] == ["tcp"] * 4 + ["udp"]
    assert lines[0]["duration_ns"] == 2_000_000 and lines[0]["bytes_received"] == 5000
    console = Console(record=True, width=200)
    net_table.render_summary(r, console)
    text = console.export_text()
    assert "10.0.0.1:40000" in net_table.line(r.connections[0]) and "2.00" in net_table.line(r.connections[0])
    assert "TCP connections by process and peer (4 over 5.0 s, tracepoints)" in text
    assert "10.0.0.53:53" in text
    v6 = conn(family=6, local_address="fd00::1", peer_address="fd00::2")
    assert "[fd00::2]:443" in net_table.line(v6)


def test_json_lines_hold_every_field_as_json_would_encode_it():
    """The rows are spliced by hand (for speed): each must decode to the record's fields."""
    from dataclasses import fields
    from ebpf_otlp.records import ContainerInfo
    box = ContainerInfo("c0ffee", "pod-1")
    odd = conn(process_name='a"b\\c\né☃', handshake_ns=None, srtt_us=None, container=box)
    r = NetReport([odd], [], T0, 1, "tracepoints", requests=[req(status=None, container=box)])
    tcp, http = [json.loads(line) for line in net_json.encode(r).splitlines()]
    want = {f.name: getattr(odd, f.name) for f in fields(Connection) if f.name != "container"}
    assert tcp == {"type": "tcp", **want, "duration_ns": 2_000_000,
                   "container.id": "c0ffee", "k8s.pod.uid": "pod-1"}
    x = r.requests[0]
    assert http == {"type": "http", **{f.name: getattr(x, f.name) for f in fields(HttpRequest)
                                       if f.name != "container"},
                    "duration_ns": 30_000_000, "container.id": "c0ffee", "k8s.pod.uid": "pod-1"}


def test_a_command_name_cannot_drive_the_terminal():
    assert "\\x1b[2J" in net_table.line(conn(process_name="a\x1b[2J"))


def test_connection_lines_in_order_and_what_came_too_late_is_said(tmp_path):
    out = tmp_path / "lines"
    with open(out, "w") as f:
        lines = ConnectionLines(Console(file=f))
        lines.add([conn(local_port=40000 + i) for i in range(3)] + [conn(local_port=50000, result="refused")])
        lines.close()
        late = ConnectionLines(Console(file=f), max_delay_s=0)   # every line is too late
        late.add([conn()] * 7)
        late.close()
    text = out.read_text().splitlines()
    assert text[0].startswith("    PID COMM") and len(text) == 1 + 4 + 1
    assert [t.split()[2] for t in text[1:5]] == ["10.0.0.1:40000", "10.0.0.1:40001", "10.0.0.1:40002",
                                                 "10.0.0.1:50000"]
    assert "refused" in text[4] and lines.not_shown == 0
    assert text[5].startswith("... 7 connections not shown: the terminal fell behind")
    assert late.not_shown == 7


def test_connection_lines_never_wait_for_a_stuck_terminal():
    """The reader of the ring buffer hands lines over; a terminal that takes nothing costs it nothing."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 65536)
    except BlockingIOError:   # the pipe is full: a terminal that does not read
        pass
    os.set_blocking(write_end, True)
    writer = os.fdopen(write_end, "w")
    lines = ConnectionLines(Console(file=writer), max_delay_s=0.2)
    handed = threading.Thread(target=lambda: [lines.add([conn()] * 1000) for _ in range(20)])
    handed.start()
    handed.join(10)
    assert not handed.is_alive()
    time.sleep(0.3)   # the terminal is still stuck: every line handed over is now too late
    drained = threading.Thread(target=lambda: [None for _ in iter(lambda: os.read(read_end, 65536), b"")],
                               daemon=True)
    drained.start()
    lines.close()
    writer.close()
    drained.join(10)
    os.close(read_end)
    assert lines.not_shown >= 20_000 - ConnectionLines.BATCH


def req(**kw) -> HttpRequest:
    base = dict(pid=20, process_name="python3", kind="server", method="GET", target="/users/8812?x=1",
                version="1.1", status=200, start_ns=T0, end_ns=T0 + 30_000_000, local_address="10.0.0.2",
                local_port=8080, peer_address="10.0.0.1", peer_port=40000, family=4, host="api:8080")
    base.update(kw)
    return HttpRequest(**base)


def test_request_spans_follow_the_http_conventions():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    net_spans.emit_requests(provider.get_tracer("t"), [
        req(traceparent=f"00-{trace_id}-{parent}-01"), req(status=404), req(kind="client", status=404,
        local_address="10.0.0.1", local_port=40000, peer_address="10.0.0.2", peer_port=8080),
        req(status=None, ended_by="close"), req(traceparent="00-bad")])
    ok, not_found, client, unanswered, bad = exporter.get_finished_spans()
    assert ok.name == "GET" and ok.kind == SpanKind.SERVER and ok.end_time == T0 + 30_000_000
    assert (format(ok.context.trace_id, "032x"), format(ok.parent.span_id, "016x")) == (trace_id, parent)
    a = ok.attributes
    assert (a["url.path"], a["url.query"], a["server.address"], a["server.port"]) == ("/users/8812", "x=1", "api", 8080)
    assert a["http.response.status_code"] == 200 and a["client.address"] == "10.0.0.1"
    assert not_found.status.status_code == StatusCode.UNSET    # a 4xx is the client's error
    assert client.status.status_code == StatusCode.ERROR and client.attributes["error.type"] == "404"
    assert client.attributes["url.full"] == "http://api:8080/users/8812?x=1" and client.kind == SpanKind.CLIENT
    assert unanswered.status.status_code == StatusCode.ERROR and unanswered.attributes["error.type"] == "no_response"
    assert bad.parent is None


def test_request_durations_by_route_never_by_raw_path():
    r = report(requests=[req(), req(target="/users/17", end_ns=T0 + 200_000_000), req(status=500),
                         req(kind="client", local_port=40000, peer_port=8080)])
    data = net_metrics.build(r, build_resource())
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    served = {(p.attributes["http.route"], p.attributes["http.response.status_code"]): p
              for p in metrics["http.server.request.duration"].data.data_points}
    assert set(served) == {("/users/*", 200), ("/users/*", 500)}
    ok = served[("/users/*", 200)]
    assert ok.count == 2 and abs(ok.sum - 0.23) < 1e-9 and "error.type" not in ok.attributes
    assert served[("/users/*", 500)].attributes["error.type"] == "500"
    [made] = metrics["http.client.request.duration"].data.data_points
    assert made.attributes["server.port"] == 8080 and made.count == 1
    assert "http.server.request.duration" not in {m.name for m in net_metrics.build(report(), build_resource())
                                                  .resource_metrics[0].scope_metrics[0].metrics}


def grpc(**kw) -> HttpRequest:
    return req(**{"method": "POST", "target": "/demo.Greeter/SayHello", "version": "2",
                  "rpc_system": "grpc", "grpc_status": 0, **kw})


def test_grpc_spans_and_durations_follow_the_rpc_conventions():
    """Named service/method; the status from grpc-status: a client's error is any code but
    OK, a server's only its own (NOT_FOUND is the caller's)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    calls = [grpc(), grpc(grpc_status=5), grpc(grpc_status=13), grpc(kind="client", grpc_status=5)]
    net_spans.emit_requests(provider.get_tracer("t"), calls)
    ok, not_found, internal, client = exporter.get_finished_spans()
    assert ok.name == "demo.Greeter/SayHello" and ok.kind == SpanKind.SERVER
    a = ok.attributes
    assert (a["rpc.system"], a["rpc.service"], a["rpc.method"], a["rpc.grpc.status_code"]) == \
        ("grpc", "demo.Greeter", "SayHello", 0)
    assert "http.request.method" not in a and a["network.protocol.version"] == "2"
    assert not_found.status.status_code == StatusCode.UNSET
    assert internal.status.status_code == StatusCode.ERROR and internal.attributes["error.type"] == "13"
    assert client.status.status_code == StatusCode.ERROR and client.kind == SpanKind.CLIENT
    data = net_metrics.build(report(requests=calls), build_resource())
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    assert "http.server.request.duration" not in metrics
    served = {p.attributes["rpc.grpc.status_code"]: p for p in metrics["rpc.server.duration"].data.data_points}
    assert set(served) == {0, 5, 13} and abs(served[0].sum - 30.0) < 1e-9   # ms
    assert metrics["rpc.server.duration"].unit == "ms"
    [made] = metrics["rpc.client.duration"].data.data_points
    assert made.attributes["rpc.method"] == "SayHello"


def db(**kw) -> DbOperation:
    base = dict(pid=30, process_name="psql", kind="client", system="postgresql", namespace="shop",
                operation="SELECT", collection="users", query="SELECT * FROM users WHERE id = ?",
                status_code="", start_ns=T0, end_ns=T0 + 2_000_000, local_address="127.0.0.1",
                local_port=41000, peer_address="127.0.0.1", peer_port=5432, family=4, rows=1)
    base.update(kw)
    return DbOperation(**base)


def test_database_spans_metrics_and_table_follow_the_database_conventions():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ops = [db(), db(status_code="42601", error="syntax error", operation="SELEC", collection="", rows=None),
           db(operation="BEGIN", collection="", query="BEGIN", rows=None, end_ns=0, ended_by="close"),
           db(kind="server", process_name="postgres", local_port=5432, peer_port=41000)]
    net_spans.emit_db(provider.get_tracer("t"), ops)
    ok, failed, unanswered, served = exporter.get_finished_spans()
    assert (ok.name, ok.kind, ok.end_time) == ("SELECT users", SpanKind.CLIENT, T0 + 2_000_000)
    a = ok.attributes
    assert (a["db.system.name"], a["db.namespace"], a["db.operation.name"], a["db.collection.name"]) == \
        ("postgresql", "shop", "SELECT", "users")
    assert (a["db.query.text"], a["server.address"], a["server.port"]) == \
        ("SELECT * FROM users WHERE id = ?", "127.0.0.1", 5432)
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "42601"
    assert failed.attributes["db.response.status_code"] == "42601" and failed.name == "SELEC"
    assert unanswered.attributes["error.type"] == "no_response"
    assert served.kind == SpanKind.SERVER and served.attributes["server.port"] == 5432
    r = report(db=ops)
    metrics = {m.name: m for m in net_metrics.build(r, build_resource()).resource_metrics[0].scope_metrics[0].metrics}
    client = metrics["db.client.operation.duration"].data.data_points
    assert sum(p.count for p in client) == 2   # the unanswered one has no duration
    assert all("db.query.text" not in p.attributes for p in client)
    assert {p.attributes.get("error.type") for p in client} == {None, "42601"}
    [server] = metrics["db.server.operation.duration"].data.data_points
    assert server.count == 1
    console = Console(record=True, width=200)
    net_table.render_summary(r, console)
    text = console.export_text()
    assert "Database statements by process, operation and table (4)" in text and "users" in text
    rows = [json.loads(line) for line in net_json.encode(r).splitlines() if '"type": "db"' in line]
    assert [d["operation"] for d in rows] == ["SELECT", "SELEC", "BEGIN", "SELECT"]
    assert rows[0]["duration_ns"] == 2_000_000 and rows[2]["duration_ns"] is None
