"""trace-net as OTLP metrics, cumulative since the capture began, on the SDK's data model.

  ebpf_otlp.tcp.connections          Sum {connection}, by role and result
  ebpf_otlp.tcp.connection.duration  Histogram s, by role
  ebpf_otlp.tcp.handshake.duration   Histogram s (clients: SYN_SENT → ESTABLISHED)
  ebpf_otlp.tcp.bytes                Sum By, network.io.direction
  ebpf_otlp.tcp.retransmits          Sum {segment}
  ebpf_otlp.tcp.resets               Sum {reset}, ebpf_otlp.tcp.reset.direction sent/received
  ebpf_otlp.tcp.rtt                  Histogram s: smoothed RTT at close, or every ACK (--rtt)
  ebpf_otlp.udp.bytes / .datagrams   Sum, per process, peer and direction
  http.server.request.duration       Histogram s, HTTP requests served (semantic conventions)
  http.client.request.duration       Histogram s, HTTP requests made
  db.client.operation.duration       Histogram s, database statements (client side)
  db.server.operation.duration       Histogram s, the same, the database's side
  rpc.server.duration                Histogram ms, gRPC calls served (RPC conventions, v1.37)
  rpc.client.duration                Histogram ms, gRPC calls made

Attributes stay bounded: the server side's address and port (never a client's ephemeral
port), the process and its container, the role (`network.tcp.handshake.role` in the open
semantic-conventions proposal for TCP metrics). HTTP metrics carry a route, never a raw
path: `http.route` folds the path segments that look like ids (routes.py).
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ebpf_otlp import __version__
from ebpf_otlp.signals.net.records import Connection, DbOperation, HttpRequest, NetReport
from ebpf_otlp.signals.net.routes import route_of

# Seconds: 100 µs to 100 s, the range of connections from loopback RPCs to long transfers.
DURATION_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 100.0)
RTT_BOUNDS = tuple((1 << i) / 1e6 for i in range(1, 24))   # 2 µs … 8.4 s, powers of two
# The HTTP conventions' advice for http.*.request.duration.
HTTP_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
RPC_BOUNDS = tuple(b * 1000 for b in HTTP_BOUNDS)   # the same, in ms as rpc.*.duration has it
# The database conventions' advice for db.client.operation.duration.
DB_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


def _base(c: Connection) -> dict:
    server_address, server_port = c.server
    attrs = {"network.transport": "tcp", "network.type": f"ipv{c.family}",
             "network.tcp.handshake.role": c.role or "unknown",
             "server.address": server_address, "server.port": server_port,
             "process.executable.name": c.process_name}
    return {**attrs, **c.container.attributes()}


def _http(r: HttpRequest) -> dict:
    """The conventions' attributes for request durations, all of bounded cardinality."""
    server = r.server
    attrs = {"http.request.method": r.method, "url.scheme": r.scheme, "http.route": r.route or route_of(r.target),
             "network.protocol.name": "http", "network.protocol.version": r.version,
             "server.address": server[0], "server.port": server[1],
             "process.executable.name": r.process_name, **r.container.attributes()}
    if r.status is not None:
        attrs["http.response.status_code"] = r.status
    if r.failed:
        attrs["error.type"] = str(r.status) if r.status is not None else "no_response"
    return attrs


def _rpc(r: HttpRequest) -> dict:
    server = r.server
    attrs = {"rpc.system": r.rpc_system, "rpc.service": r.rpc_service, "rpc.method": r.rpc_method,
             "server.address": server[0], "server.port": server[1],
             "process.executable.name": r.process_name, **r.container.attributes()}
    if r.grpc_status is not None:
        attrs["rpc.grpc.status_code"] = r.grpc_status
    return attrs


def _db(op: DbOperation) -> dict:
    """The conventions' low-cardinality attributes: never the statement's text."""
    server = op.server
    attrs = {"db.system.name": op.system, "db.operation.name": op.operation,
             "server.address": server[0], "server.port": server[1],
             "process.executable.name": op.process_name, **op.container.attributes()}
    for key, value in (("db.namespace", op.namespace), ("db.collection.name", op.collection),
                       ("db.response.status_code", op.status_code), ("error.type", op.status_code)):
        if value:
            attrs[key] = value
    return attrs


class _Histograms:
    def __init__(self, bounds):
        self.bounds = bounds
        self.points: dict[tuple, list] = defaultdict(lambda: [[0] * (len(bounds) + 1), 0, 0.0,
                                                              float("inf"), float("-inf")])

    def add(self, attrs: dict, value: float, count: int = 1, bucket: int | None = None) -> None:
        p = self.points[tuple(sorted(attrs.items()))]
        i = bisect.bisect_left(self.bounds, value) if bucket is None else bucket
        p[0][i] += count
        p[1] += count
        p[2] += value * count
        p[3] = min(p[3], value)
        p[4] = max(p[4], value)

    def data_points(self, start: int, now: int) -> list[HistogramDataPoint]:
        return [HistogramDataPoint(dict(key), start, now, count, total, counts, list(self.bounds),
                                   lo, hi) for key, (counts, count, total, lo, hi) in self.points.items()]


def _sum_points(values: dict[tuple, int], start: int, now: int) -> list[NumberDataPoint]:
    return [NumberDataPoint(dict(key), start, now, v) for key, v in values.items()]


def build(report: NetReport, resource: Resource,
          temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> MetricsData:
    """Cumulative since the capture began; DELTA for one window (the agent)."""
    now, start = time.time_ns(), report.start_ns
    connections, nbytes, retrans, resets = (defaultdict(int) for _ in range(4))
    duration, handshake, rtt = (_Histograms(DURATION_BOUNDS), _Histograms(DURATION_BOUNDS),
                                _Histograms(RTT_BOUNDS))
    key = lambda d: tuple(sorted(d.items()))   # noqa: E731
    for c in report.connections:
        base = _base(c)
        connections[key({**base, "ebpf_otlp.tcp.result": c.result})] += 1
        nbytes[key({**base, "network.io.direction": "transmit"})] += c.bytes_sent
        nbytes[key({**base, "network.io.direction": "receive"})] += c.bytes_received
        retrans[key(base)] += c.retransmits
        if c.result in ("reset_sent", "reset_received"):
            resets[key({**base, "ebpf_otlp.tcp.reset.direction": c.result.split("_")[1]})] += 1
        if c.duration_ns is not None:
            duration.add(base, c.duration_ns / 1e9)
        if c.handshake_ns is not None:
            handshake.add(base, c.handshake_ns / 1e9)
        if c.srtt_us and not report.rtt_log2_us:
            rtt.add(base, c.srtt_us / 1e6)
    for bucket, count in report.rtt_log2_us.items():   # every ACK: log2 µs buckets
        rtt.add({"network.transport": "tcp"}, (1 << bucket) / 1e6, count,
                bucket=min(bucket, len(RTT_BOUNDS)))
    udp_bytes, udp_datagrams = defaultdict(int), defaultdict(int)
    for f in report.udp:
        attrs = key({"network.transport": "udp", "process.pid": f.pid,
                     "process.executable.name": f.process_name, "network.io.direction": f.direction,
                     "network.peer.address": f.peer_address, "network.peer.port": f.peer_port,
                     **f.container.attributes()})
        udp_bytes[attrs] += f.bytes
        udp_datagrams[attrs] += f.datagrams

    served, made = _Histograms(HTTP_BOUNDS), _Histograms(HTTP_BOUNDS)
    rpc_served, rpc_made = _Histograms(RPC_BOUNDS), _Histograms(RPC_BOUNDS)
    for r in report.requests:
        if r.rpc_system:
            (rpc_served if r.kind == "server" else rpc_made).add(_rpc(r), r.duration_ns / 1e6)
        else:
            (served if r.kind == "server" else made).add(_http(r), r.duration_ns / 1e9)

    db_client, db_server = _Histograms(DB_BOUNDS), _Histograms(DB_BOUNDS)
    for op in report.db:
        if op.duration_ns is not None:
            (db_server if op.kind == "server" else db_client).add(_db(op), op.duration_ns / 1e9)

    def total(name, description, unit, values):
        return Metric(name, description, unit, Sum(_sum_points(values, start, now), temporality, True))

    def hist(name, description, h, unit="s"):
        return Metric(name, description, unit, Histogram(h.data_points(start, now), temporality))

    metrics = [
        total("ebpf_otlp.tcp.connections", "TCP connections closed (or open at the end)",
              "{connection}", connections),
        hist("ebpf_otlp.tcp.connection.duration", "TCP connection lifetime", duration),
        hist("ebpf_otlp.tcp.handshake.duration", "TCP handshake, SYN sent to established", handshake),
        total("ebpf_otlp.tcp.bytes", "TCP payload bytes (sent: acked by the peer)", "By", nbytes),
        total("ebpf_otlp.tcp.retransmits", "TCP segments retransmitted", "{segment}", retrans),
        total("ebpf_otlp.tcp.resets", "TCP connections ended by a reset", "{reset}", resets),
        hist("ebpf_otlp.tcp.rtt", "TCP smoothed round-trip time", rtt),
        total("ebpf_otlp.udp.bytes", "UDP payload bytes", "By", udp_bytes),
        total("ebpf_otlp.udp.datagrams", "UDP datagrams", "{datagram}", udp_datagrams),
    ]
    if served.points or made.points:
        metrics += [hist("http.server.request.duration", "Duration of HTTP server requests", served),
                    hist("http.client.request.duration", "Duration of HTTP client requests", made)]
    if rpc_served.points or rpc_made.points:
        metrics += [hist("rpc.server.duration", "Duration of inbound RPCs", rpc_served, "ms"),
                    hist("rpc.client.duration", "Duration of outbound RPCs", rpc_made, "ms")]
    if db_client.points or db_server.points:
        metrics += [hist("db.client.operation.duration", "Duration of database client operations", db_client),
                    hist("db.server.operation.duration", "Duration of database operations served", db_server)]
    scope = ScopeMetrics(InstrumentationScope("ebpf-otlp", __version__), metrics, "")
    return MetricsData([ResourceMetrics(resource, [scope], "")])
