"""JSON export of `syscalls`: per (process, syscall), with errno names and percentiles."""

from __future__ import annotations

import json

from ebpf_otlp import histogram
from ebpf_otlp.signals.syscalls.records import SyscallReport
from ebpf_otlp.signals.syscalls.names import errno_name


def encode(report: SyscallReport) -> str:
    rows = []
    for s in sorted(report.stats, key=lambda s: (-report.time_in(s), -s.calls)):
        who = {"folded_processes": s.folded} if s.is_folded else {"pid": s.pid}
        row = {**who, "process": s.process_name, **s.container.attributes(),
               "syscall": s.syscall, "nr": s.nr,
               "calls": s.calls, "errors": s.errors, "bytes": s.bytes,
               "errnos": {errno_name(e): n for e, n in sorted(s.errnos.items())}}
        if report.latency and s.timed:
            row["latency_ns"] = {
                "timed": s.timed, "total": round(report.time_in(s)),
                "total_estimated": report.estimated(s),
                "min": s.min_ns, "max": s.max_ns, "avg": s.avg_ns,
                **{f"p{int(q * 100)}": histogram.percentile(s.hist, q, s.min_ns, s.max_ns)
                   for q in (0.5, 0.9, 0.99)}}
        elif report.latency:
            row["latency_ns"] = {"timed": 0}
        rows.append(row)
    doc = {"start_ns": report.start_ns, "duration_ns": report.duration_ns,
           "latency": report.latency,
           "latency_budget_per_s": report.latency_budget, "timing_share": report.timing_share,
           "events": report.events, "lost": report.lost, "collection": report.collection.as_dict(),
           "stats": rows}
    return json.dumps(doc, indent=1) + "\n"
