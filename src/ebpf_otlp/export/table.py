"""The terminal summary: top functions by self and total samples (or off-CPU time)."""

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
            self_c[(leaf.function, leaf.short_module)] += s.count
        for key in {(f.function, f.short_module) for f in s.frames}:
            total_c[key] += s.count
    ranked = sorted(total_c, key=lambda k: (-self_c[k], -total_c[k], k))[:n]
    return [FunctionRow(f, m, self_c[(f, m)], total_c[(f, m)]) for f, m in ranked]


def render(profile: Profile, console: Console, n: int = 15) -> None:
    total = max(profile.total_samples, 1)
    table = Table(title=f"Top functions ({profile.amount(profile.total_samples)}, {profile.what})",
                  title_justify="left")
    table.add_column("self %", justify="right")
    table.add_column("self" if profile.sampled else "self ms", justify="right")
    table.add_column("total %", justify="right")
    table.add_column("function", overflow="fold")
    table.add_column("module", style="dim")
    for row in top_functions(profile, n):
        self_value = str(row.self_samples) if profile.sampled else f"{row.self_samples / 1e6:.1f}"
        table.add_row(f"{100 * row.self_samples / total:.1f}", self_value,
                      f"{100 * row.total_samples / total:.1f}", Text(row.function), Text(row.module))
    console.print(table)
    st = profile.stats
    lost = []
    if st.lost_stacks:
        lost.append(f"{st.lost_stacks} stacks lost ({st.lost_stack_collisions} collisions, "
                    f"{st.lost_stack_errors} map full/unwind errors)")
    if st.lost_samples:
        lost.append(f"{st.lost_samples} samples dropped (count map full)")
    if st.lost_new_process_events:
        lost.append(f"{st.lost_new_process_events} new-process events dropped")
    if st.share < 1.0:
        console.print(f"~ sampled: stacks walked for a share as low as {st.share:.1%} of switches "
                      "(over the --switch-budget), each weighed up: times are estimates", style="dim")
    console.print("kernel-side losses: " + ("; ".join(lost) if lost else "none"),
                  style="yellow" if lost else "dim")
