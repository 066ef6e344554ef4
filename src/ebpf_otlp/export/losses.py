"""The losses footer every command prints: what the kernel side (or the symbolizer)
could not keep, by cause. Never hidden, and 'none' said out loud."""

from __future__ import annotations

from rich.console import Console

from ebpf_otlp.records import CollectorStats


def line(stats: CollectorStats, what: str = "") -> str:
    lost = {cause: n for cause, n in stats.lost.items() if n}
    where = f"{what} " if what else ""
    if not lost:
        return f"{where}losses: none"
    return f"{where}losses: " + "; ".join(f"{n} {cause}" for cause, n in sorted(lost.items()))


def render(stats: CollectorStats, console: Console, what: str = "") -> None:
    if stats.unwound:   # how user stacks were walked: beside what was cut short
        console.print("user stacks: " + ", ".join(f"{n} {how}" for how, n in stats.unwound.items()),
                      style="dim", highlight=False)
    console.print(line(stats, what), style="yellow" if stats.total_lost else "dim", highlight=False)
