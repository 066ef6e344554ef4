"""The heap signal (memleak): allocations sampled by bytes, as heap profiles (at the end
and at the peak) and a leak report."""

from __future__ import annotations

from ebpf_otlp.export import profile_files
from ebpf_otlp.signals.heap.records import HeapReport
from ebpf_otlp.signals.heap.settings import HeapSettings
from ebpf_otlp.signals.signal import Signal, encoded, later

HERE = "ebpf_otlp.signals.heap"


def _describe(heap, processor, target: str) -> str:
    how = "every allocation" if not heap.rate else f"one allocation per ~{heap.rate / 1024:g} KiB"
    return (f"tracing allocations of {target} ({how}; probes: {', '.join(processor.collector.attached)}; "
            f"return probes on {processor.collector.return_probes})")


HEAP = Signal(
    name="memleak", title="memleak", result=HeapReport, stats=lambda r: r.profile.stats,
    # A heap report is its profile in every profile format; its JSON adds the leak report.
    formats={**{fmt: (lambda r, e=encode: e(r.profile)) for fmt, encode in profile_files.ENCODERS.items()},
             "json": encoded(f"{HERE}.report:encode")},
    to_otlp=lambda out, r: out.send_profile(r.profile),
    span_attributes=lambda r: {"ebpf_otlp.heap.sampling_rate_bytes": r.rate,
                               "ebpf_otlp.heap.leak_stacks": len(r.leaks)},
    table="memleak", settings_type=HeapSettings, settings=HeapSettings.from_table,
    processor=later(f"{HERE}.processor:HeapProcessor"),
    bundle=(("heap.pb.gz", "pprof"), ("heap.json.gz", "json")), command="memleak", describe=_describe)
