"""The net signal's processor: connections as they close, UDP flows summed."""

from __future__ import annotations

import time

from ebpf_otlp.records import CollectorStats
from ebpf_otlp.signals.net.collector import TcpCollector
from ebpf_otlp.signals.net.records import Connection, DbOperation, HttpRequest, NetReport, UdpFlow
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.signals.net.settings import NetSettings


class NetProcessor(Processor):
    """Connections as they close (each reaches the output stage once, at the next drain:
    spans and live table rows), HTTP requests as their responses end, database statements
    as their answers do, UDP flows summed per
    process and peer; metrics cumulative."""

    periodic = True
    streams = True

    def __init__(self, settings: NetSettings):
        self.settings = settings
        self.collector = TcpCollector(settings.pids, settings.comm, settings.ports, settings.hooks,
                                      settings.rtt, settings.udp, settings.max_conns,
                                      follow_forks=settings.follow_forks,
                                      include_self=settings.include_self,
                                      protocols=settings.protocols,
                                      head_bytes=settings.head_bytes, tls=settings.tls,
                                      routes=settings.routes, raw_queries=settings.raw_queries)
        self.connections: list[Connection] = []
        self.requests: list[HttpRequest] = []
        self.db: list[DbOperation] = []
        self.udp: dict[tuple, UdpFlow] = {}
        self.window_start_ns = time.time_ns()
        self.request_index = None   # signals/links.py: for the CPU samples of each request

    def add(self, records: list) -> None:
        for r in records:
            if isinstance(r, Connection):
                self.connections.append(r)
            elif isinstance(r, HttpRequest):
                self.requests.append(r)
                if self.request_index is not None:
                    self.request_index.add((r,))
            elif isinstance(r, DbOperation):
                self.db.append(r)
            else:
                have = self.udp.get(r.key)
                if have is None:
                    self.udp[r.key] = r
                else:
                    have.bytes += r.bytes
                    have.datagrams += r.datagrams

    def reset(self, start_ns: int | None = None) -> None:
        self.connections, self.udp, self.requests, self.db = [], {}, [], []
        self.window_start_ns = start_ns or time.time_ns()

    def result(self, end_ns: int | None = None) -> NetReport:
        c = self.collector
        end_ns = end_ns or time.time_ns()
        return NetReport(list(self.connections), list(self.udp.values()), self.window_start_ns,
                         end_ns - self.window_start_ns, c.hooks,
                         CollectorStats(c.stats.processed, dict(c.stats.lost), c.stats.drains),
                         dict(c.rtt_log2_us), list(self.requests), list(self.db))
