"""trace-net's -o: one JSON object per connection (JSON Lines), then one per UDP flow, then
one per HTTP request."""

from __future__ import annotations

import json
from dataclasses import fields

from ebpf_otlp.signals.net.records import Connection, HttpRequest, NetReport, UdpFlow

# Fields read by name: dataclasses.asdict deep-copies every value, 75 µs a connection,
# most of trace-net's own cost at the end of a connection storm.
_TCP = [f.name for f in fields(Connection) if f.name != "container"]
_UDP = [f.name for f in fields(UdpFlow) if f.name != "container"]
_HTTP = [f.name for f in fields(HttpRequest) if f.name != "container"]


def encode(report: NetReport) -> str:
    lines = []
    containers: dict = {}

    def attributes(info) -> dict:
        if id(info) not in containers:
            containers[id(info)] = (info, info.attributes())
        return containers[id(info)][1]

    for c in report.connections:
        doc = {k: getattr(c, k) for k in _TCP}
        doc.update(type="tcp", duration_ns=c.duration_ns, **attributes(c.container))
        lines.append(json.dumps(doc))
    for f in report.udp:
        doc = {"type": "udp", **{k: getattr(f, k) for k in _UDP}, **attributes(f.container)}
        lines.append(json.dumps(doc))
    for r in report.requests:
        doc = {"type": "http", **{k: getattr(r, k) for k in _HTTP}, "duration_ns": r.duration_ns,
               **attributes(r.container)}
        lines.append(json.dumps(doc))
    return "".join(line + "\n" for line in lines)
