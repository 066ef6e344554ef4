"""Text from users, processes and the kernel reaches the terminal as text."""

from rich.table import Table

from ebpf_otlp.export.console import text_console


def test_brackets_and_colons_are_text(capsys):
    console = text_console(width=120)
    console.print("wrote pprof: a[b]c.pb.gz :smile: [/x]", style="dim")
    table = Table(title="of /bin/echo a[/b]c")
    table.add_column("function")
    table.add_row("operator[]<int>[/red]")
    console.print(table)
    out = capsys.readouterr().out
    assert "wrote pprof: a[b]c.pb.gz :smile: [/x]" in out
    assert "of /bin/echo a[/b]c" in out and "operator[]<int>[/red]" in out
