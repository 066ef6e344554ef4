"""The capture loop without a kernel: a fake collector and processor show when drains
happen, that a signal ends the loop but keeps what was gathered, and that a capture
that cannot start is skipped or stops the others. Runs without root."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ebpf_otlp.errors import AgentError
from ebpf_otlp.export.console import text_console
from ebpf_otlp.engine.capture import Capture, StopOnSignal
from support.fakes import FakeCollector, FakeProcessor


def run_capture(processors, duration_s=None, **kw) -> Capture:
    with StopOnSignal() as stop:
        cap = Capture(processors, stop, text_console(quiet=True), duration_s, **kw)
        cap.start()
        cap.run()
    return cap


def test_each_collector_is_drained_on_its_own_interval_and_once_more_at_stop():
    fast, slow = FakeProcessor(FakeCollector("fast", 0.1)), FakeProcessor(FakeCollector("slow", 0.35))
    drained = []
    cap = run_capture([fast, slow], duration_s=1.0, on_drain=lambda p: drained.append(p.collector.name))
    assert 8 <= len(fast.collector.drains) <= 11, len(fast.collector.drains)
    assert 2 <= len(slow.collector.drains) <= 3, len(slow.collector.drains)
    assert fast.records[-1] == "at stop" and slow.records[-1] == "at stop"
    assert fast.resets == slow.resets == 1   # the window starts at attach
    assert drained.count("fast") == len(fast.collector.drains)
    assert 0.95 <= (cap.ended_ns - cap.started_ns) / 1e9 < 1.3


def test_sigterm_ends_the_loop_and_keeps_what_was_gathered():
    p = FakeProcessor(FakeCollector(interval_s=0.05))
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    with StopOnSignal() as stop:
        cap = Capture([p], stop, text_console(quiet=True), duration_s=30)
        started = time.monotonic()
        cap.start()
        cap.run()
        took = time.monotonic() - started
    assert stop.stopped and stop.signal_name == "SIGTERM"
    assert took < 2 and p.collector.stopped and p.records[-1] == "at stop"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL   # handlers restored


def test_a_capture_that_cannot_start_is_skipped_when_asked():
    good, bad = FakeProcessor(FakeCollector("good")), FakeProcessor(FakeCollector("bad", fail="no BTF"))
    cap = run_capture([good, bad], duration_s=0.2, skip_failed=True)
    assert cap.failed == {id(bad): "no BTF"} and good.collector.stopped
    assert cap.processors == [good]


def test_otherwise_a_failed_start_stops_those_already_started():
    good, bad = FakeProcessor(FakeCollector("good")), FakeProcessor(FakeCollector("bad", fail="no BTF"))
    with StopOnSignal() as stop:
        cap = Capture([good, bad], stop, text_console(quiet=True), 1.0)
        with pytest.raises(AgentError, match="no BTF"):
            cap.start()
    assert good.collector.started and good.collector.stopped


def test_a_programs_statistics_enum_is_read_one_way():
    """Processed and losses by cause from a per-CPU stats array; the extra counters after."""
    from ebpf_otlp.records import CollectorStats
    from ebpf_otlp.signals.collector import StatsEnum

    per_cpu = {0: [10, 5], 1: [0, 2], 2: [1, 0], 3: [7, 7]}   # counter -> value on each CPU

    class PerCpuArray:
        def __getitem__(self, key):
            return per_cpu[key.value]

    enum = StatsEnum(("events", "map full", "never lost"), processed="events",
                     losses={"map full": "event dropped (map full)"}, extra=1)
    stats = CollectorStats()
    total = enum.read(PerCpuArray(), stats)
    assert total == [15, 2, 1, 14] and total[enum.extra_start:] == [14]
    assert stats.processed == 15 and stats.lost == {"event dropped (map full)": 2}
    with pytest.raises(ValueError, match="not in the enum: typo"):
        StatsEnum(("events",), processed="events", losses={"typo": "x"})
