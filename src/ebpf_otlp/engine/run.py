"""What every command does once it knows its processors and sinks: capture, then hand the
results to the output stage. Commands (profile, syscalls, ...) are wiring around this."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from rich.console import Console

from ebpf_otlp.errors import AgentError
from ebpf_otlp.engine.output_stage import OutputStage
from ebpf_otlp.export.sinks import FileTarget
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.engine.capture import Capture, StopOnSignal
from ebpf_otlp.engine.launch import LaunchedCommand
from ebpf_otlp.runtime.processes import alive
from ebpf_otlp.signals.signal import Signal

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class RunResult:
    results: list             # of the processors that started, in their order
    exit_status: int          # a launched command's, else 0
    processors: list[Processor] = field(default_factory=list)   # those that started
    failed: dict[int, str] = field(default_factory=dict)        # id(processor) -> why it did not
    started_ns: int = 0       # all attached
    ended_ns: int = 0
    stopped_by: str = ""      # the signal that ended it early, if one did


def capture(processors: Sequence[Processor], stage: OutputStage, notices: Console, command: str,
            what: Callable[[list[Processor]], str] | None, duration_s: float | None, launch: LaunchedCommand | None,
            pids: list[int], started_ns: int, span_attributes: dict | None = None,
            progress: bool = True, skip_failed: bool = False) -> RunResult:
    """Run the processors' collectors together until the duration ends, a signal arrives
    or the launched command exits; then write every output. Signals are held from start
    to finish, so a SIGTERM never cuts the writing short. `what(started processors)`: the
    start notice (None: none). `skip_failed` (a snapshot): what cannot start is left out, and said in `failed`."""
    with StopOnSignal() as stop:
        cap = Capture(processors, stop, notices, duration_s, launch,
                      on_drain=lambda p: stage.periodic(p.result()) if p.periodic else None,
                      label=command if progress else "", skip_failed=skip_failed)
        try:   # a failure at any point stops the probes; a launched command is waited for
            cap.start()
            gone = [pid for pid in pids if not alive(pid)]
            if pids and len(gone) == len(pids):
                raise AgentError(f"pid {', '.join(map(str, gone))} exited before tracing began")
            if what:
                ending = "until it exits" if launch else "Ctrl-C to stop early"
                notices.print(f"{what(cap.processors)}; {ending}", style="dim", highlight=False)
            if cap.processors:
                cap.run()
            else:   # nothing could start (a snapshot's every capture failed): at once
                cap.ended_ns = time.time_ns()
        except BaseException:
            cap.abort()
            stage.abort()
            raise
        if stop.stopped:
            notices.print(f"{stop.signal_name}: stopping, writing what was gathered", style="yellow")
        results = [p.result(cap.ended_ns) for p in cap.processors]
        for p, r in zip(cap.processors, results):
            if hasattr(r, "timing"):   # a profile says how soon it started
                _timing(r, p, started_ns, cap.started_ns)
        stage.finish(results, command, cap.started_ns, cap.ended_ns, span_attributes or {})
    status = 0
    if launch:
        status = launch.exit_status
        if status is None:
            notices.print(f"{launch.describe()} is still running", style="yellow", highlight=False)
            status = 128 + stop.signum if stop.signum else 0
    return RunResult(results, status, list(cap.processors), dict(cap.failed), cap.started_ns,
                     cap.ended_ns, stop.signal_name)


def _timing(profile, processor, started_ns: int, attached_ns: int) -> None:
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


@dataclass
class Command:
    """What a command asks of a run of its signal once its flags are read: the same for
    every signal (cli.py builds one, `run_signal` runs it)."""
    settings: Any                                        # the signal's settings
    duration_s: float | None = None                      # None: until SIGINT/SIGTERM (or CMD exits)
    launch: list[str] = field(default_factory=list)      # -- CMD ARGS: run it, follow its forks
    outputs: list[tuple[str, str]] = field(default_factory=list)   # (path, format)
    render: Callable[[Any, Console], None] | None = None   # the result's table on the terminal
    live_terminal: bool | None = False                   # its stream there too (None: if a terminal)
    otlp: OtlpSettings | None = None                     # None: local files only
    spool: Spool | None = None


def run_signal(signal: Signal, cmd: Command, console: Console, notices: Console,
               started_ns: int) -> RunResult:
    """One signal's capture, as every single-signal command runs it. Results (tables) go
    to `console`, progress and notices to `notices` (stderr)."""
    settings = cmd.settings
    launched = launch(cmd.launch, settings)
    processor = signal.processor(settings)
    live = console.is_terminal if cmd.live_terminal is None else cmd.live_terminal
    with held_until_capture(launched):
        stage = OutputStage.create(
            console, notices, [FileTarget(path, fmt, signal.name) for path, fmt in cmd.outputs],
            {signal.name: cmd.render} if cmd.render else {}, cmd.otlp, cmd.spool,
            lambda: {processor.collector.name: processor.collector.stats},
            getattr(settings, "interval_s", 60.0), live_terminal=live)
    pids = [] if launched else settings.pids
    target = launched.describe() if launched else f"pid {', '.join(map(str, pids))}" if pids \
        else f"comm {settings.comm}" if getattr(settings, "comm", None) else "all processes"
    done = capture([processor], stage, notices, signal.command,
                   lambda _: signal.describe(settings, processor, target), cmd.duration_s, launched,
                   pids, started_ns, {"process.pid": pids},
                   progress=not live)   # a stream on the terminal is progress enough
    if signal.after:
        signal.after(processor, notices)
    return done
