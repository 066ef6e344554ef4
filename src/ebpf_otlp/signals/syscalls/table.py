"""The terminal summary of `syscalls`, in the spirit of `perf trace -s` and `strace -c`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ebpf_otlp import histogram
from ebpf_otlp.records import HOST
from ebpf_otlp.signals.syscalls.records import SyscallReport, SyscallStats
from ebpf_otlp.signals.syscalls.names import READ_SYSCALLS, WRITE_SYSCALLS, errno_name
from ebpf_otlp.units import format_seconds


def by_syscall(stats: list[SyscallStats]) -> list[SyscallStats]:
    """Merge processes: one row per syscall."""
    merged: dict[int, SyscallStats] = {}
    for s in stats:
        row = merged.setdefault(s.nr, SyscallStats(0, "", s.nr, s.syscall))
        row.merge(replace(s, pid=0, process_name="", errnos=dict(s.errnos), hist=dict(s.hist),
                          container=HOST))
    return list(merged.values())


def _who(s: SyscallStats) -> list:
    """The pid and process cells; a folded row names how many processes it holds."""
    if s.is_folded:
        return ["—", Text(f"{s.process_name} ({s.folded} process{'' if s.folded == 1 else 'es'})")]
    return [str(s.pid), Text(s.process_name)]


def _us(ns: float) -> str:
    return f"{ns / 1000:.1f}"


def _errors(s: SyscallStats) -> str:
    if not s.errors:
        return ""
    top = sorted(s.errnos.items(), key=lambda kv: -kv[1])[:2]
    return f"{s.errors} ({', '.join(f'{errno_name(e)} {n}' for e, n in top)})"


def _table(rows: list[SyscallStats], report: SyscallReport, title: str, with_process: bool) -> Table:
    latency = report.latency
    t = Table(title=title, title_justify="left")
    with_container = with_process and any(s.container.container_id for s in rows)
    if with_process:
        t.add_column("pid", justify="right")
        t.add_column("process")
    if with_container:
        t.add_column("container")
    t.add_column("syscall")
    t.add_column("calls", justify="right")
    t.add_column("errors")
    if latency:
        for name in ("total ms", "min µs", "avg µs", "p50 µs", "p90 µs", "p99 µs", "max µs"):
            t.add_column(name, justify="right")
    for s in rows:
        cells = (_who(s) if with_process else []) + (
            [s.container.container_id[:12]] if with_container else []) + [
            s.syscall, str(s.calls), _errors(s)]
        if latency and s.timed:
            p = [histogram.percentile(s.hist, q, s.min_ns, s.max_ns) for q in (0.5, 0.9, 0.99)]
            total = f"{'~' if report.estimated(s) else ''}{report.time_in(s) / 1e6:.3f}"
            cells += [total, _us(s.min_ns), _us(s.avg_ns), *map(_us, p), _us(s.max_ns)]
        elif latency:
            cells += ["—"] * 7
        t.add_row(*cells)
    return t


def render(report: SyscallReport, console: Console, by: str = "syscall", top: int = 20,
           files: bool = False) -> None:
    key = (lambda s: (-report.time_in(s), -s.calls)) if report.latency else (lambda s: -s.calls)
    order = "total time" if report.latency else "calls"
    secs = format_seconds(report.duration_ns / 1e9)
    if not top:
        pass   # --top 0: no table, the notes below still say what matters
    elif by == "syscall":
        rows = sorted(by_syscall(report.stats), key=key)[:top]
        console.print(_table(rows, report, f"Syscalls by {order} over {secs}", False))
    else:
        rows = sorted(report.stats, key=key)[:top]
        console.print(_table(rows, report, f"Syscalls per process by {order} over {secs}",
                             True))
    if report.sampled:
        console.print(f"~ latency sampled: {report.timed_fraction:.1%} of calls timed (the syscall "
                      f"rate passed the {report.latency_budget:,.0f}/s latency budget; counts are "
                      "exact, totals estimated; --latency-budget 0 times every call)", style="dim")
    elif report.latency and any(s.sampled for s in report.stats):
        console.print("calls already under way when tracing began are counted, not timed",
                      style="dim")
    if files:
        render_files(report, console, top)


def render_files(report: SyscallReport, console: Console, top: int) -> None:
    """Read/write bytes and latency per process (the --files view)."""
    per: dict[tuple[int, str, int], dict[str, SyscallStats]] = defaultdict(dict)
    for s in report.stats:
        kind = "read" if s.syscall in READ_SYSCALLS else "write" if s.syscall in WRITE_SYSCALLS else None
        if kind:
            row = per[(s.pid, s.process_name, s.folded)].setdefault(kind, SyscallStats(s.pid, "", 0, kind))
            row.merge(s)
    t = Table(title="File and socket I/O per process", title_justify="left")
    for col in ("pid", "process", "read calls", "read MB", "read avg µs", "write calls",
                "write MB", "write avg µs"):
        t.add_column(col, justify="left" if col == "process" else "right")
    ranked = sorted(per.items(), key=lambda kv: -sum(s.bytes for s in kv[1].values()))[:top]
    for (pid, name, folded), kinds in ranked:
        cells = _who(SyscallStats(pid, name, 0, "", folded=folded))
        for kind in ("read", "write"):
            s = kinds.get(kind)
            cells += ([str(s.calls), f"{s.bytes / 1e6:.3f}",
                       _us(s.avg_ns) if report.latency and s.timed else "—"] if s else ["0", "0", "—"])
        t.add_row(*cells)
    console.print(t)
