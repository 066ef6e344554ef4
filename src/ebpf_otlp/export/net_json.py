"""trace-net's -o: one JSON object per connection (JSON Lines), then one per UDP flow."""

from __future__ import annotations

import json
from dataclasses import asdict

from ebpf_otlp.records import NetReport


def encode(report: NetReport) -> str:
    lines = []
    for c in report.connections:
        doc = {k: v for k, v in asdict(c).items() if k != "container"}
        doc.update(type="tcp", duration_ns=c.duration_ns, **c.container.attributes())
        lines.append(json.dumps(doc))
    for f in report.udp:
        doc = {k: v for k, v in asdict(f).items() if k != "container"}
        lines.append(json.dumps({"type": "udp", **doc, **f.container.attributes()}))
    return "".join(line + "\n" for line in lines)
