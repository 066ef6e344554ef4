"""Syscall stats as OTLP metrics, built on the SDK's data model and sent by its exporters.

Temporality is cumulative: every export carries the totals since the capture started.
  ebpf_otlp.syscall.count     Sum, monotonic, {call}; failed calls carry error.type
  ebpf_otlp.syscall.duration  ExponentialHistogram (scale 4), ns
The histogram stays in nanoseconds because the kernel's bucket indices are exact there;
converting to seconds would shift them by a fraction of a bucket. When latency was
sampled (over the latency budget), the histogram is the timed calls' scaled up to every
call: its count equals the syscall count and its sum estimates the time spent; min and
max are the ones observed. Otherwise it holds the timed calls, which are all of them
but those already under way when tracing began.
"""

from __future__ import annotations

import time

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Buckets,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from ebpf_otlp import __version__, histogram
from ebpf_otlp.signals.syscalls.records import SyscallReport, SyscallStats
from ebpf_otlp.signals.syscalls.names import errno_name


def _attributes(s: SyscallStats) -> dict:
    # A folded row is many processes of one name: no pid (and fewer series for the backend).
    attrs = {"syscall.name": s.syscall, **({} if s.is_folded else {"process.pid": s.pid})}
    if s.process_name:
        attrs["process.executable.name"] = s.process_name
    return {**attrs, **s.container.attributes()}


def _exp_point(s: SyscallStats, report: SyscallReport, start: int,
               now: int) -> ExponentialHistogramDataPoint:
    hist = histogram.scale_counts(s.hist, s.calls) if report.sampled else s.hist
    buckets = {i: c for i, c in hist.items() if i >= 0}
    offset = min(buckets) if buckets else 0
    counts = [buckets.get(i, 0) for i in range(offset, max(buckets) + 1)] if buckets else []
    return ExponentialHistogramDataPoint(
        attributes=_attributes(s), start_time_unix_nano=start, time_unix_nano=now,
        count=sum(hist.values()), sum=round(report.time_in(s)), scale=histogram.SCALE,
        zero_count=hist.get(-1, 0), positive=Buckets(offset, counts), negative=Buckets(0, []),
        flags=0, min=s.min_ns, max=s.max_ns)


def build(report: SyscallReport, resource: Resource,
          temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE) -> MetricsData:
    """Cumulative since the capture began; DELTA when the report covers one window only
    (the agent resets its processors every interval)."""
    now = time.time_ns()
    start = report.start_ns
    points = []
    for s in report.stats:
        attrs = _attributes(s)
        ok = s.calls - s.errors
        if ok:
            points.append(NumberDataPoint(attrs, start, now, ok))
        for err, n in sorted(s.errnos.items()):
            points.append(NumberDataPoint({**attrs, "error.type": errno_name(err)}, start, now, n))
    metrics = [Metric("ebpf_otlp.syscall.count", "System calls made", "{call}",
                      Sum(points, temporality, is_monotonic=True))]
    if report.latency:
        metrics.append(Metric(
            "ebpf_otlp.syscall.duration", "Time from syscall entry to exit", "ns",
            ExponentialHistogram([_exp_point(s, report, start, now) for s in report.stats if s.timed],
                                 temporality)))
    scope = ScopeMetrics(InstrumentationScope("ebpf-otlp", __version__), metrics, "")
    return MetricsData([ResourceMetrics(resource, [scope], "")])
