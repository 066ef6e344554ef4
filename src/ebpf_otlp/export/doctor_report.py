"""The terminal rendering of `ebpf-otlp doctor`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def render(result, console: Console) -> None:
    facts = ", ".join(f"{k} {v}" for k, v in result.facts.items())
    console.print(f"[bold]ebpf-otlp doctor[/bold]: {facts}")
    checks = Table(show_header=True, header_style="bold")
    checks.add_column("capability")
    checks.add_column("", justify="center")
    checks.add_column("detail", overflow="fold")
    for c in result.checks:
        checks.add_row(c.name, "[green]yes[/green]" if c.ok else "[red]no[/red]", c.detail)
    console.print(checks)
    commands = Table(show_header=True, header_style="bold")
    commands.add_column("command")
    commands.add_column("works here?", overflow="fold")
    for c in result.command_verdicts():
        style = "green" if c.ok else "red"
        commands.add_row(c.name, f"[{style}]{c.detail}[/{style}]")
    console.print(commands)
    if result.usable_commands:
        console.print(f"usable here: {', '.join(result.usable_commands)}")
    else:   # the exit status says so too; this says what to look at
        console.print("[red]no command can run here[/red]: see the checks that say no above")
