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


def test_doctor_report_prints_kernel_text_as_text(capsys):
    """A verifier line's `[...]` and a stray `[/b]` in a detail are printed, not parsed."""
    from ebpf_otlp.doctor import report as doctor_report
    from ebpf_otlp.doctor.checks import Check, Doctor

    result = Doctor()
    result.facts["kernel"] = "6.18[/b]"
    result.checks = [Check("compile", False, "R1 type=ctx expected=fp [/b] :smile:"),
                     Check("btf", True, "ok [bold]")]
    doctor_report.render(result, text_console(width=200))
    out = capsys.readouterr().out
    assert "kernel 6.18[/b]" in out
    assert "R1 type=ctx expected=fp [/b] :smile:" in out and "ok [bold]" in out
    assert "no command can run here: see the checks" in out
