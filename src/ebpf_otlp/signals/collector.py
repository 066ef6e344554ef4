"""The one face every collector shows the capture engine.

A collector owns its BPF program: it attaches it, drains its maps into typed records,
and counts what it processed and what it lost, by cause. It never formats output,
knows about files or talks to a collector: that is the output stage's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from ebpf_otlp.records import CollectorStats


class StatsEnum:
    """A program's statistics enum (its per-CPU `stats` array), mirrored once: the counters'
    names in the C enum's order, the one that counts what was processed, and those that
    count losses, each with the cause users see. `extra` counters follow (the unwinder's),
    for their owner to read from what `read` returns."""

    def __init__(self, names: tuple[str, ...], processed: str, losses: dict[str, str], extra: int = 0):
        self.index = {name: i for i, name in enumerate(names)}
        self.processed, self.losses = processed, losses
        self.size = len(names) + extra
        unknown = ({processed} | set(losses)) - set(self.index)
        if unknown:   # a mirror that drifted from its enum fails at import, not in a report
            raise ValueError(f"not in the enum: {', '.join(sorted(unknown))}")

    def __getitem__(self, name: str) -> int:
        return self.index[name]

    @property
    def extra_start(self) -> int:
        return len(self.index)

    def read(self, table, stats: CollectorStats) -> list[int]:
        """Each counter summed over CPUs; the processed count and the losses into `stats`."""
        from ebpf_otlp.runtime.maps import percpu_counters
        total = percpu_counters(table, self.size)
        stats.processed = total[self.index[self.processed]]
        for name, cause in self.losses.items():
            stats.set_lost(cause, total[self.index[name]])
        return total


class Collector(ABC):
    name: str = ""               # for progress, losses and self-telemetry: "cpu", "syscalls"
    interval_s: float = 2.0      # how often the engine drains it

    def __init__(self):
        self.stats = CollectorStats()

    @abstractmethod
    def start(self) -> None:
        """Compile, load and attach; raise AgentError naming the fix when it cannot."""

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to timeout_ms for ring-buffer events and handle them. Returns False
        when the collector has no ring buffer (the engine then waits elsewhere)."""
        return False

    def ring_fds(self) -> list[int]:
        """The ring buffers poll() reads, for the engine to sleep on several collectors' at
        once (then it calls poll(0) when one is woken)."""
        return []

    def handle_events(self) -> None:
        """Work that events announced but that must not run inside the ring-buffer
        callback (e.g. reading a new process's maps); the engine calls it after polls."""

    def handle_pending(self) -> None:
        """What is in the ring buffer now, handled, without waiting."""
        self.poll(0)
        self.handle_events()

    @abstractmethod
    def drain(self) -> list:
        """Typed records of what the kernel gathered since the previous drain."""

    @abstractmethod
    def stop(self) -> list:
        """Detach, then return what the kernel still holds (nothing gathered is lost)."""

    def progress(self) -> str:
        """A few words for the live progress line, e.g. '1234 samples'."""
        return f"{self.stats.processed} events"
