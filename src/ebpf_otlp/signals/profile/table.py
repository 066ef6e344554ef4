"""The terminal summary: top functions by self and total value (samples, off-CPU time, bytes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ebpf_otlp.records import Profile


@dataclass(frozen=True)
class FunctionRow:
    function: str
    module: str
    self_samples: int
    total_samples: int


def top_functions(profile: Profile, n: int = 15) -> list[FunctionRow]:
    """Functions by self samples; total counts each function once per stack (recursion)."""
    self_c: Counter[tuple[str, str]] = Counter()
    total_c: Counter[tuple[str, str]] = Counter()
    for s in profile.samples:
        if s.frames:
            leaf = s.frames[0]
            self_c[(leaf.function, leaf.short_module)] += profile.value(s)
        for key in {(f.function, f.short_module) for f in s.frames}:
            total_c[key] += profile.value(s)
    ranked = sorted(total_c, key=lambda k: (-self_c[k], -total_c[k], k))[:n]
    return [FunctionRow(f, m, self_c[(f, m)], total_c[(f, m)]) for f, m in ranked]


def render(profile: Profile, console: Console, n: int = 15) -> None:
    total = max(profile.total(), 1)
    table = Table(title=f"Top functions ({profile.amount(profile.total())}, {profile.what})",
                  title_justify="left")
    table.add_column("self %", justify="right")
    unit = profile.shown.unit
    scale, label = {"nanoseconds": (1e6, "self ms"), "bytes": (1024, "self KiB")}.get(unit, (1, "self"))
    table.add_column(label, justify="right")
    table.add_column("total %", justify="right")
    table.add_column("function", overflow="fold")
    table.add_column("module", style="dim")
    for row in top_functions(profile, n):
        self_value = str(row.self_samples) if scale == 1 else f"{row.self_samples / scale:.1f}"
        table.add_row(f"{100 * row.self_samples / total:.1f}", self_value,
                      f"{100 * row.total_samples / total:.1f}", Text(row.function), Text(row.module))
    console.print(table)
    if profile.stats.share < 1.0:
        console.print(f"~ sampled: stacks walked for a share as low as {profile.stats.share:.1%} of "
                      "switches (over the --switch-budget), each weighed up: times are estimates",
                      style="dim")
