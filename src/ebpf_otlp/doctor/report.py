"""The terminal rendering of `ebpf-otlp doctor`.

Details are the kernel's and BCC's own words (verifier lines carry `[...]`): printed as
text through a text console, with styles given by `Text`, never as markup.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _verdict(text: str, ok: bool) -> Text:
    return Text(text, style="green" if ok else "red")


def render(result, console: Console) -> None:
    facts = ", ".join(f"{k} {v}" for k, v in result.facts.items())
    console.print(Text.assemble(("ebpf-otlp doctor", "bold"), f": {facts}"))
    checks = Table(show_header=True, header_style="bold")
    checks.add_column("capability")
    checks.add_column("", justify="center")
    checks.add_column("detail", overflow="fold")
    for c in result.checks:
        checks.add_row(Text(c.name), _verdict("yes" if c.ok else "no", c.ok), Text(c.detail))
    console.print(checks)
    commands = Table(show_header=True, header_style="bold")
    commands.add_column("command")
    commands.add_column("works here?", overflow="fold")
    for c in result.command_verdicts():
        commands.add_row(Text(c.name), _verdict(c.detail, c.ok))
    console.print(commands)
    if result.usable_commands:
        console.print(Text(f"usable here: {', '.join(result.usable_commands)}"))
    else:   # the exit status says so too; this says what to look at
        console.print(Text.assemble(("no command can run here", "red"),
                                    ": see the checks that say no above"))
