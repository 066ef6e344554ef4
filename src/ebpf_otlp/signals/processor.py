"""Processors: what each collector's drained records become.

A processor owns one collector, takes the records of each drain (`add`), and on demand
turns what it gathered into the finished result the output stage writes: a symbolized
`Profile`, a `SyscallReport`. Collectors stay ignorant of symbols and output; exporters
of BPF. `reset()` starts a new window (the agent's consecutive profiles).
"""

from __future__ import annotations

from ebpf_otlp.signals.collector import Collector


class Processor:
    collector: Collector
    periodic = False     # True: its result is exported at every drain (metrics), not only at the end
    streams = False      # True: its signal streams what is new at every drain (registry: Signal.stream)

    def prepare(self) -> None:
        """Work that can overlap the collector's BPF compile (it runs in a thread)."""

    def add(self, records: list) -> None:
        raise NotImplementedError

    def drain(self) -> None:
        """Take what the collector holds now."""
        self.add(self.collector.drain())

    def result(self):
        raise NotImplementedError

    def reset(self, start_ns: int | None = None) -> None:
        """Begin a new window at start_ns (default now): the last one's end, so windows
        are contiguous."""
        raise NotImplementedError
