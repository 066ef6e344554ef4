"""memleak's own outputs: the leak report on the terminal and in JSON (the heap profile
itself goes through the profile exporters: pprof, folded, SVG, OTLP)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ebpf_otlp.export import json_out
from ebpf_otlp.records import HeapReport, LeakRow


def _stack(row: LeakRow, depth: int = 6) -> str:
    return " ← ".join(f.function for f in row.frames[:depth])


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def render(report: HeapReport, console: Console, top: int = 10) -> None:
    p = report.profile
    index = {t.type: i for i, t in enumerate(p.sample_types)}
    alloc = sum(s.values[index["alloc_space"]] for s in p.samples)
    inuse = sum(s.values[index["inuse_space"]] for s in p.samples)
    sampled = sum(r.sampled for r in report.leaks)
    how = ("every allocation recorded: exact" if not report.rate else
           f"estimated: one allocation sampled per ~{report.rate / 1024:g} KiB on average, "
           "each weighed up by its size")
    t = Table(title=f"Outstanding allocations older than {report.min_age_ns / 1e9:g} s, by stack "
                    f"({how})", title_justify="left")
    for col in ("KiB", "objects", "KiB/s growth", "sampled", "pid", "stack (allocating function first)"):
        t.add_column(col, justify="left" if col.startswith("stack") else "right", overflow="fold")
    for row in report.leaks[:top]:
        t.add_row(_kib(row.bytes), f"{row.objects:,.0f}", _kib(row.growth_bytes_per_s),
                  str(row.sampled), str(row.pid), Text(_stack(row)))
    console.print(t)
    console.print(f"allocated {alloc / 2**20:,.1f} MiB, in use {inuse / 2**20:,.1f} MiB at the end"
                  f"{' (estimates)' if report.rate else ''}; leak rows from {sampled} sampled "
                  f"allocations; probes on {', '.join(report.libraries)}", style="dim", highlight=False)


def encode(report: HeapReport) -> str:
    doc = json.loads(json_out.encode(report.profile))
    doc["sampling_rate_bytes"] = report.rate
    doc["estimated"] = bool(report.rate)
    doc["min_age_ns"] = report.min_age_ns
    doc["leaks"] = [{"pid": r.pid, "process_name": r.process_name, "bytes": r.bytes,
                     "objects": r.objects, "sampled": r.sampled,
                     "growth_bytes_per_s": r.growth_bytes_per_s,
                     "frames": [f.function for f in r.frames]} for r in report.leaks]
    return json.dumps(doc, indent=1) + "\n"
