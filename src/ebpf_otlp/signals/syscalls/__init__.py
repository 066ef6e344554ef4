"""The syscalls signal: counts, errors, bytes and latency per process and syscall, as a
table, JSON and OTLP metrics."""

from __future__ import annotations

from ebpf_otlp.signals.syscalls.settings import SyscallSettings
from ebpf_otlp.signals.signal import Signal, encoded, later, metrics_to_otlp
from ebpf_otlp.signals.syscalls.records import SyscallReport

HERE = "ebpf_otlp.signals.syscalls"


def _describe(trace, processor, target: str) -> str:
    mode = "counts only" if not trace.latency else "counts and latency" + (
        f", latency sampled above {trace.latency_budget:,.0f} calls/s" if trace.latency_budget else "")
    return f"tracing syscalls of {target} ({mode})"


def _after(processor, notices) -> None:
    if processor.collector.timing_error:
        notices.print(f"latency timing stopped early: {processor.collector.timing_error}", style="yellow")


SYSCALLS = Signal(
    name="syscalls", title="syscalls", result=SyscallReport, stats=lambda r: r.collection,
    formats={"json": encoded(f"{HERE}.json_out:encode")}, to_otlp=metrics_to_otlp(f"{HERE}.metrics:build"),
    span_attributes=lambda r: {"ebpf_otlp.syscalls": r.events}, table="syscalls",
    settings_type=SyscallSettings, settings=SyscallSettings.from_table,
    processor=later(f"{HERE}.processor:SyscallProcessor"), bundle=(("syscalls.json.gz", "json"),),
    command="syscalls", describe=_describe, after=_after)
