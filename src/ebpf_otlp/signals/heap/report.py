"""memleak's own outputs: the leak report on the terminal and in JSON (the heap profile
itself goes through the profile exporters: pprof, folded, SVG, OTLP)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ebpf_otlp.export import json_out
from ebpf_otlp.records import StackSample
from ebpf_otlp.signals.heap.records import HeapReport, LeakRow


def _stack(row: LeakRow | StackSample, depth: int = 6) -> str:
    """The allocating frames, leaf first; in a Python process the leaf, then its Python
    callers (the interpreter's own frames between them are what allocating costs, not who)."""
    frames = row.frames
    first = next((i for i, f in enumerate(frames) if f.frame_type), None)
    if first is not None and first > 1:
        return " ← ".join([frames[0].label, "…"] + [f.label for f in frames[first:first + depth - 1]])
    return " ← ".join(f.label for f in frames[:depth])


def _kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def _table(title: str, columns: tuple[str, ...]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in (*columns, "pid", "stack (allocating function first)"):
        t.add_column(col, justify="left" if col.startswith("stack") else "right", overflow="fold")
    return t


def _growth(row: LeakRow) -> str:
    """Growth needs two readings of a stack: with one, it is unknown, not zero."""
    return "n/a" if row.growth_bytes_per_s is None else _kib(row.growth_bytes_per_s)


def render(report: HeapReport, console: Console, top: int = 10) -> None:
    p = report.profile
    index = {t.type: i for i, t in enumerate(p.sample_types)}
    alloc = sum(s.values[index["alloc_space"]] for s in p.samples)
    inuse = sum(s.values[index["inuse_space"]] for s in p.samples)
    peak = sum(s.values[index["peak_inuse_space"]] for s in p.samples)
    sampled = sum(r.sampled for r in report.leaks)
    how = ("every allocation recorded: exact" if not report.rate else
           f"estimated: one allocation sampled per ~{report.rate / 1024:g} KiB on average, "
           "each weighed up by its size")
    t = _table(f"Outstanding allocations older than {report.min_age_ns / 1e9:g} s, by stack ({how})",
               ("KiB", "objects", "KiB/s growth", "sampled"))
    for row in report.leaks[:top]:
        t.add_row(_kib(row.bytes), f"{row.objects:,.0f}", _growth(row),
                  str(row.sampled), str(row.pid), Text(_stack(row)))
    console.print(t)
    when = f"{(report.peak_unix_ns - p.start_ns) / 1e9:.1f} s in"
    if peak > inuse:   # freed since: where the memory was then, which the leak rows no longer say
        _peak_table(report, console, top, index, when)
    at_peak = f"{peak / 2**20:,.1f} MiB at the peak ({when}), " if peak else ""
    console.print(f"allocated {alloc / 2**20:,.1f} MiB; in use {at_peak}{inuse / 2**20:,.1f} MiB at the end"
                  f"{' (estimates)' if report.rate else ''}; leak rows from {sampled} sampled "
                  f"allocations; probes on {', '.join(report.libraries)}", style="dim", highlight=False,
                  soft_wrap=True)   # one line however long the paths: tests and greps read it


def _peak_table(report: HeapReport, console: Console, top: int, index: dict[str, int], when: str) -> None:
    objects, space = index["peak_inuse_objects"], index["peak_inuse_space"]
    rows = sorted((s for s in report.profile.samples if s.values[space]), key=lambda s: -s.values[space])
    t = _table(f"In use at the peak ({when}), by stack", ("KiB", "objects"))
    for s in rows[:top]:
        t.add_row(_kib(s.values[space]), f"{s.values[objects]:,}", str(s.pid), Text(_stack(s)))
    console.print(t)


def encode(report: HeapReport) -> str:
    doc = json.loads(json_out.encode(report.profile))
    doc["sampling_rate_bytes"] = report.rate
    doc["estimated"] = bool(report.rate)
    doc["min_age_ns"] = report.min_age_ns
    doc["peak_unix_ns"] = report.peak_unix_ns
    doc["leaks"] = [{"pid": r.pid, "process_name": r.process_name, "bytes": r.bytes,
                     "objects": r.objects, "sampled": r.sampled,
                     "growth_bytes_per_s": r.growth_bytes_per_s,
                     "frames": [f.label for f in r.frames]} for r in report.leaks]
    return json.dumps(doc, indent=1) + "\n"
