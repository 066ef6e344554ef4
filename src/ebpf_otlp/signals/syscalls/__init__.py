"""The syscalls signal: counts, errors, bytes and latency per process and syscall, as a
table, JSON and OTLP metrics."""

from __future__ import annotations

from ebpf_otlp.signals.signal import Signal
from ebpf_otlp.signals.syscalls.records import SyscallReport


def _json(report: SyscallReport) -> bytes:
    from ebpf_otlp.signals.syscalls import json_out
    return json_out.encode(report).encode()


def _to_otlp(out, report: SyscallReport) -> None:
    from ebpf_otlp.signals.syscalls import metrics
    out.export_metrics(metrics.build(report, out.resource, out.metric_temporality))


def _settings(table: dict, path: str):
    from ebpf_otlp.signals.syscalls.processor import SyscallSettings
    return SyscallSettings.from_table(table, path)


def _processor(settings):
    from ebpf_otlp.signals.syscalls.processor import SyscallProcessor
    return SyscallProcessor(settings)


def _describe(trace, processor, target: str) -> str:
    mode = "counts only" if not trace.latency else "counts and latency" + (
        f", latency sampled above {trace.latency_budget:,.0f} calls/s" if trace.latency_budget else "")
    return f"tracing syscalls of {target} ({mode})"


def _after(processor, notices) -> None:
    if processor.collector.timing_error:
        notices.print(f"latency timing stopped early: {processor.collector.timing_error}", style="yellow")


SYSCALLS = Signal(
    name="syscalls", title="syscalls", result=SyscallReport, stats=lambda r: r.collection,
    formats={"json": _json}, to_otlp=_to_otlp, span_attributes=lambda r: {"ebpf_otlp.syscalls": r.events},
    table="syscalls", settings=_settings, processor=_processor, bundle=(("syscalls.json", "json"),),
    command="syscalls", describe=_describe, after=_after)
