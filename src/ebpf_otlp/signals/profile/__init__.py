"""The profile signal: stacks sampled on CPU (or by counted events such as page faults),
and time spent off CPU, as profiles (pprof, folded, SVG, JSON, OTLP)."""

from __future__ import annotations

from ebpf_otlp.export import profile_files
from ebpf_otlp.records import Profile
from ebpf_otlp.signals.profile.settings import CpuSettings
from ebpf_otlp.signals.signal import Signal, later

OFF_CPU_EVENT = "sched_switch"
HERE = "ebpf_otlp.signals.profile.processor"


def _span_attributes(p: Profile) -> dict:
    return {"ebpf_otlp.event": p.event, "ebpf_otlp.sample_frequency_hz": p.frequency_hz,
            f"ebpf_otlp.{p.shown.type}": p.total()}


def _describe(cpu, processor, target: str) -> str:
    from ebpf_otlp.runtime.perf import COUNTED
    if cpu.off_cpu:
        return f"tracing off-CPU time of {target} (sched_switch, periods ≥ {cpu.min_block_ns / 1000:g} µs)"
    if cpu.event in COUNTED:
        return f"sampling {target} every {cpu.period} {cpu.event}"
    return f"sampling {target} at {cpu.hz} Hz ({cpu.event})"


def _profile(name: str, title: str, off_cpu: bool, files: str) -> Signal:
    return Signal(
        name=name, title=title, result=Profile, stats=lambda p: p.stats,
        formats=profile_files.ENCODERS, to_otlp=lambda out, p: out.send_profile(p),
        span_attributes=_span_attributes, table="profile",
        settings_type=CpuSettings,
        settings=lambda table, path: CpuSettings.from_table(table, off_cpu, path),
        processor=later(f"{HERE}:StackProcessor"),
        windowed=True, command="profile", describe=_describe,
        bundle=((f"{files}.pb.gz", "pprof"), (f"{files}.svgz", "svg"), (f"{files}.folded.gz", "folded")),
        takes=lambda p: (p.event == OFF_CPU_EVENT) == off_cpu,
        wanted=lambda table: bool(table.get("off_cpu")) if off_cpu else True)


PROFILE = _profile("profile", "profile", False, "profile")
OFF_CPU = _profile("off-cpu", "off-CPU profile", True, "offcpu")
