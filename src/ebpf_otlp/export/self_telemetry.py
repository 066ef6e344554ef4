"""The agent's own metrics: what it processed, what the kernel dropped, what it costs."""

from __future__ import annotations

import os
import resource as rusage
from typing import Callable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ebpf_otlp.records import CollectionStats


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def register(meter: Meter, collector: str, stats: Callable[[], CollectionStats]) -> None:
    """Observable instruments read `stats()` each time the SDK collects."""
    attrs = {"ebpf_otlp.collector": collector}

    def processed(_o: CallbackOptions):
        yield Observation(stats().samples, attrs)

    def dropped(_o: CallbackOptions):
        s = stats()
        yield Observation(s.lost_samples + s.lost_new_process_events, attrs)

    def stacks_lost(_o: CallbackOptions):
        yield Observation(stats().lost_stacks, attrs)

    def cpu_time(_o: CallbackOptions):
        r = rusage.getrusage(rusage.RUSAGE_SELF)
        yield Observation(r.ru_utime, {"cpu.mode": "user"})
        yield Observation(r.ru_stime, {"cpu.mode": "system"})

    def memory(_o: CallbackOptions):
        yield Observation(_rss_bytes())

    meter.create_observable_counter("ebpf_otlp.agent.events.processed", [processed], unit="{event}",
                                    description="Events the kernel side handed to the agent")
    meter.create_observable_counter("ebpf_otlp.agent.events.dropped", [dropped], unit="{event}",
                                    description="Events dropped in the kernel (full maps or buffers)")
    meter.create_observable_counter("ebpf_otlp.agent.stacks.lost", [stacks_lost], unit="{stack}",
                                    description="Stacks lost to stack-map collisions or errors")
    meter.create_observable_counter("process.cpu.time", [cpu_time], unit="s",
                                    description="CPU time of the agent")
    meter.create_observable_up_down_counter("process.memory.usage", [memory], unit="By",
                                            description="Resident memory of the agent")
