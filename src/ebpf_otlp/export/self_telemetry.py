"""The agent's own metrics: what it processed, what the kernel dropped, what it costs."""

from __future__ import annotations

import os
import resource as rusage
from typing import Callable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ebpf_otlp.records import CollectorStats


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def register(meter: Meter, stats: Callable[[], dict[str, CollectorStats]], exports=None) -> None:
    """Observable instruments read `stats()` (per collector name) each time the SDK collects;
    `exports` (the OTLP output) counts payloads and bytes sent, spooled and resent."""

    def processed(_o: CallbackOptions):
        for name, s in stats().items():
            yield Observation(s.processed, {"ebpf_otlp.collector": name})

    def dropped(_o: CallbackOptions):
        for name, s in stats().items():
            for cause, n in s.lost.items():
                yield Observation(n, {"ebpf_otlp.collector": name, "cause": cause})
            if not s.lost:   # a zero says the collector ran and lost nothing
                yield Observation(0, {"ebpf_otlp.collector": name})

    def cpu_time(_o: CallbackOptions):
        r = rusage.getrusage(rusage.RUSAGE_SELF)
        yield Observation(r.ru_utime, {"cpu.mode": "user"})
        yield Observation(r.ru_stime, {"cpu.mode": "system"})

    def memory(_o: CallbackOptions):
        yield Observation(_rss_bytes())

    def payloads(_o: CallbackOptions):
        for (outcome, signal), n in list(exports.payloads.items()):
            yield Observation(n, {"ebpf_otlp.outcome": outcome, "ebpf_otlp.signal": signal})

    def payload_bytes(_o: CallbackOptions):
        for (outcome, signal), n in list(exports.payload_bytes.items()):
            yield Observation(n, {"ebpf_otlp.outcome": outcome, "ebpf_otlp.signal": signal})

    if exports is not None:
        meter.create_observable_counter(
            "ebpf_otlp.agent.exports", [payloads], unit="{payload}",
            description="OTLP payloads by outcome (sent, spooled for later, resent from the spool) "
                        "and signal")
        meter.create_observable_counter(
            "ebpf_otlp.agent.export.size", [payload_bytes], unit="By",
            description="Bytes of the payloads ebpf-otlp encodes itself (profiles, and every "
                        "spooled or resent one), by outcome and signal")
    meter.create_observable_counter("ebpf_otlp.agent.events.processed", [processed], unit="{event}",
                                    description="Events the kernel side handed to the agent")
    meter.create_observable_counter("ebpf_otlp.agent.events.dropped", [dropped], unit="{event}",
                                    description="Events (or their stacks or symbols) lost, by collector "
                                                "and cause: full maps or buffers, stack collisions, ...")
    meter.create_observable_counter("process.cpu.time", [cpu_time], unit="s",
                                    description="CPU time of the agent")
    meter.create_observable_up_down_counter("process.memory.usage", [memory], unit="By",
                                            description="Resident memory of the agent")
