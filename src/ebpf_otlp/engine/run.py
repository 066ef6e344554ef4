"""What every command does once it knows its processors and sinks: capture, then hand the
results to the output stage. Commands (profile, syscalls, ...) are wiring around this."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

from rich.console import Console

from ebpf_otlp.errors import AgentError
from ebpf_otlp.export.output_stage import OutputStage
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.records import Profile
from ebpf_otlp.engine.capture import Capture, StopOnSignal
from ebpf_otlp.engine.launch import LaunchedCommand
from ebpf_otlp.runtime.processes import alive


@dataclass
class RunResult:
    results: list
    exit_status: int          # a launched command's, else 0


def capture(processors: Sequence[Processor], stage: OutputStage, notices: Console, command: str,
            what: str | Callable[[], str], duration_s: float | None, launch: LaunchedCommand | None,
            pids: list[int], started_ns: int, span_attributes: dict | None = None,
            progress: bool = True) -> RunResult:
    """Run the processors' collectors together until the duration ends, a signal arrives
    or the launched command exits; then write every output. Signals are held from start
    to finish, so a SIGTERM never cuts the writing short."""
    with StopOnSignal() as stop:
        cap = Capture(processors, stop, notices, duration_s, launch,
                      on_drain=lambda p: stage.periodic(p.result()) if p.periodic else None,
                      label=command if progress else "")
        try:   # a failure at any point stops the probes; a launched command is waited for
            cap.start()
            gone = [pid for pid in pids if not alive(pid)]
            if pids and len(gone) == len(pids):
                raise AgentError(f"pid {', '.join(map(str, gone))} exited before tracing began")
            ending = "until it exits" if launch else "Ctrl-C to stop early"
            notices.print(f"{what() if callable(what) else what}; {ending}", style="dim",
                          highlight=False)
            cap.run()
        except BaseException:
            cap.abort()
            stage.abort()
            raise
        if stop.stopped:
            notices.print(f"{stop.signal_name}: stopping, writing what was gathered", style="yellow")
        results = [p.result(cap.ended_ns) for p in processors]
        for p, r in zip(processors, results):
            if isinstance(r, Profile):
                _timing(r, p, started_ns, cap.started_ns)
        stage.finish(results, command, cap.started_ns, cap.ended_ns, span_attributes or {})
    status = 0
    if launch:
        status = launch.exit_status
        if status is None:
            notices.print(f"{launch.describe()} is still running", style="yellow", highlight=False)
            status = 128 + stop.signum if stop.signum else 0
    return RunResult(results, status)


def _timing(profile: Profile, processor, started_ns: int, attached_ns: int) -> None:
    """When the run attached and saw its first sample, from the command's start (fast start)."""
    first = getattr(processor.collector, "first_sample_unix_ns", None)
    profile.timing = {"attach_ms": (attached_ns - started_ns) / 1e6,
                      "first_sample_ms": (first - started_ns) / 1e6 if first else None,
                      "first_sample_unix_ns": first}



def launch(command: list[str], settings) -> LaunchedCommand | None:
    """Launch mode: start `command` held, and point the settings' pid filter at it and at
    what it forks. None when there is no command."""
    if not command:
        return None
    launched = LaunchedCommand(command)
    settings.pids, settings.follow_forks = [launched.pid], True
    return launched


@contextlib.contextmanager
def held_until_capture(launch: LaunchedCommand | None):
    """Set-up between launching a held command and the capture: if it fails, the command
    never runs."""
    try:
        yield
    except BaseException:
        if launch:
            launch.abandon()
        raise
