"""`ebpf-otlp profile`: sample stacks (or time off CPU), symbolize, write pprof / folded /
SVG / JSON / OTLP."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console

from ebpf_otlp.collectors.cpu import CpuSampler
from ebpf_otlp.errors import AgentError
from ebpf_otlp.export import profile_files, table
from ebpf_otlp.records import OFF_CPU_TIME, SAMPLES, Profile
from ebpf_otlp.runtime.capture import StopOnSignal, run_capture
from ebpf_otlp.runtime.processes import alive
from ebpf_otlp.symbolize.symbolizer import Symbolizer

if TYPE_CHECKING:
    from ebpf_otlp.export.otlp_settings import OtlpSettings
    from ebpf_otlp.export.spool import Spool


@dataclass
class ProfileConfig:
    hz: int = 99
    pids: list[int] = field(default_factory=list)   # empty: every process
    duration_s: float | None = None                  # None: until SIGINT/SIGTERM
    user_stacks: bool = True
    kernel_stacks: bool = True
    event: str = "cpu-clock"
    outputs: list[tuple[str, str]] = field(default_factory=list)   # (path, format)
    top: int = 15
    drain_s: float = 2.0
    otlp: OtlpSettings | None = None     # None: local files only
    spool: Spool | None = None
    off_cpu: bool = False                # weigh stacks by time off CPU, from sched_switch
    min_block_ns: int = 1000
    switch_budget: float = 5000          # off-CPU: switches/s walked in full (0: no limit)


def run(config: ProfileConfig, console: Console, notices: Console) -> Profile:
    """Capture until the duration ends or a signal arrives; write every output; return it.

    Results (the table) go to `console`; progress and notices to `notices` (stderr).
    Signals are held from start to finish, so a SIGTERM never cuts the writing short.
    """
    with StopOnSignal() as stop:
        started = time.time_ns()
        symbolizer = Symbolizer()
        sampler = CpuSampler(config.hz, config.pids, config.user_stacks, config.kernel_stacks,
                             config.event, config.drain_s, on_new_process=symbolizer.remember,
                             off_cpu=config.off_cpu, min_block_ns=config.min_block_ns,
                             switch_budget=config.switch_budget)
        for pid in config.pids:
            symbolizer.remember(pid)
        output = None
        if config.otlp:
            from ebpf_otlp.export.otlp_output import open_output   # the SDK loads only when used
            output = open_output(config.otlp, config.spool, "cpu", lambda: sampler.stats)
        sampler.start()
        attached = time.time_ns()
        try:
            _sample(config, sampler, notices, stop)
        finally:
            sampler.stop()
        ended = time.time_ns()
        first = sampler.first_sample_unix_ns
        measured = (dict(period_ns=1, frequency_hz=0, event="sched_switch", value_type=OFF_CPU_TIME)
                    if config.off_cpu else
                    dict(period_ns=1_000_000_000 // config.hz, frequency_hz=config.hz,
                         event=config.event, value_type=SAMPLES))
        profile = Profile(
            samples=symbolizer.symbolize(sampler.counts), start_ns=attached,
            duration_ns=ended - attached, stats=sampler.stats, **measured,
            timing={"attach_ms": (attached - started) / 1e6,
                    "first_sample_ms": (first - started) / 1e6 if first else None,
                    "first_sample_unix_ns": first})
        for path, fmt in config.outputs:
            profile_files.write(profile, path, fmt)
        if output:
            output.send_profile(profile)   # first: our transport names the failure best
            output.session_span("profile", attached, ended, {
                "ebpf_otlp.sample_frequency_hz": profile.frequency_hz, "ebpf_otlp.event": profile.event,
                ("ebpf_otlp.samples" if profile.sampled else "ebpf_otlp.off_cpu_ns"):
                    profile.total_samples,
                "ebpf_otlp.stacks_lost": profile.stats.lost_stacks,
                "process.pid": list(config.pids)})
            output.close()
    if config.top:
        table.render(profile, console, config.top)
    for path, fmt in config.outputs:
        notices.print(f"wrote {fmt}: {path}", style="green", highlight=False)
    if output:
        notices.print(output.summary(), style="yellow" if output.spooled else "green",
                      highlight=False)
    return profile


def _sample(config: ProfileConfig, sampler: CpuSampler, notices: Console, stop: StopOnSignal) -> None:
    gone = [pid for pid in config.pids if not alive(pid)]
    if config.pids and len(gone) == len(config.pids):
        raise AgentError(f"pid {', '.join(map(str, gone))} exited before the sampler was attached")
    target = f"pid {', '.join(map(str, config.pids))}" if config.pids else "all processes"
    what = (f"tracing off-CPU time of {target} (sched_switch, periods ≥ {config.min_block_ns / 1000:g} µs)"
            if config.off_cpu else f"sampling {target} at {config.hz} Hz ({config.event})")
    notices.print(f"{what}; Ctrl-C to stop early", style="dim", highlight=False)
    next_drain = time.monotonic() + config.drain_s
    deadline = time.monotonic() + config.duration_s if config.duration_s else float("inf")

    def step() -> None:
        # Sleep in the ring-buffer poll until the next drain or the end; new processes
        # and signals wake it at once.
        nonlocal next_drain
        now = time.monotonic()
        sampler.poll(max(1, int(1000 * min(next_drain - now, deadline - now, 0.5))))
        if time.monotonic() >= next_drain:
            sampler.drain()
            next_drain = time.monotonic() + config.drain_s

    run_capture(step, config.duration_s, notices, stop,
                status=lambda: f"{sampler.samples_so_far()} {'periods' if config.off_cpu else 'samples'}",
                label="profiling off-CPU time" if config.off_cpu else f"profiling at {config.hz} Hz")
    if stop.stopped:
        notices.print(f"{stop.signal_name}: stopping, writing what was gathered", style="yellow")
