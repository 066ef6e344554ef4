"""memleak's parts without a kernel: the peak and the growth the processor makes of what
the collector drains, the collector's watch for a new high over fake maps, and the
terminal report. Runs without root."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

from rich.console import Console

from ebpf_otlp.signals.heap.collector import STAT_INUSE_BYTES, HeapCollector
from ebpf_otlp.signals.heap import report as heap_out
from ebpf_otlp.signals.heap.processor import HeapProcessor
from ebpf_otlp.signals.heap.settings import HeapSettings
from ebpf_otlp.records import RawStackSample
from ebpf_otlp.signals.heap.records import HeapCounts, HeapPeak, LiveAllocation

MIB = 1 << 20
PID = os.getpid()
HOLD = RawStackSample(PID, PID, "", (), ())
OTHER = RawStackSample(PID, PID, "", (0x10,), ())
T0 = 1_700_000_000 * 10**9


def processor() -> HeapProcessor:
    p = HeapProcessor(HeapSettings(pids=[PID], rate=0, min_age_s=0))   # exact: no weighing
    p.reset(T0)
    return p


def text(report) -> str:
    console = Console(record=True, width=200)
    heap_out.render(report, console)
    return console.export_text()


def leak_row_cells(report) -> list[str]:
    row = next(line for line in text(report).splitlines() if line.startswith("│"))
    return [cell.strip() for cell in row.strip("│").split("│")]


def test_growth_with_one_reading_is_not_known():
    """A stack read once has no growth yet: n/a (JSON null), not 0.0; a second reading has one."""
    p = processor()
    p.add([HeapCounts(HOLD, 10, 10 * 4096, 0, 0), *[LiveAllocation(HOLD, 4096, 10**10)] * 10])
    report = p.result()
    assert report.leaks[0].growth_bytes_per_s is None
    kib, objects, growth, *_ = leak_row_cells(report)
    assert (kib, objects, growth) == ("40.0", "10", "n/a")
    assert json.loads(heap_out.encode(report))["leaks"][0]["growth_bytes_per_s"] is None
    p.add([HeapCounts(HOLD, 20, 20 * 4096, 0, 0), *[LiveAllocation(HOLD, 4096, 10**10)] * 20])
    _kib, _objects, growth, *_ = leak_row_cells(p.result())
    assert growth != "n/a" and float(growth.replace(",", "")) > 0


def test_the_peak_between_drains_by_stack_beside_in_use_at_the_end():
    """20 MiB held at one stack, read at a high between drains, all freed by the one drain:
    the peak is 20 MiB there and when it was, and in use at the end is none of it."""
    p = processor()
    p.add([HeapCounts(HOLD, 5120, 20 * MIB, 5120, 20 * MIB), HeapCounts(OTHER, 1, 4096, 0, 0),
           HeapPeak(T0 + 2 * 10**9, [HeapCounts(HOLD, 5120, 20 * MIB, 0, 0), HeapCounts(OTHER, 1, 4096, 0, 0)])])
    report = p.result()
    assert report.peak_unix_ns == T0 + 2 * 10**9
    by = {s.values[1]: s.values for s in report.profile.samples}   # by alloc_space
    assert by[20 * MIB] == (5120, 20 * MIB, 0, 0, 5120, 20 * MIB)
    assert by[4096] == (1, 4096, 1, 4096, 1, 4096)
    assert [t.type for t in report.profile.sample_types][4:] == ["peak_inuse_objects", "peak_inuse_space"]
    shown = text(report)
    assert "in use 20.0 MiB at the peak (2.0 s in), 0.0 MiB at the end" in shown
    assert "In use at the peak (2.0 s in), by stack" in shown and "20,480.0" in shown
    # A lower high later leaves the peak; a drain above it is the new one.
    p.add([HeapCounts(HOLD, 5120, 20 * MIB, 5120, 20 * MIB),
           HeapPeak(T0 + 5 * 10**9, [HeapCounts(HOLD, 5120, 20 * MIB, 2560, 10 * MIB)])])
    assert p.result().peak_unix_ns == T0 + 2 * 10**9
    p.add([HeapCounts(HOLD, 12800, 50 * MIB, 5120, 20 * MIB)])
    report = p.result()
    assert report.peak_unix_ns > T0 + 5 * 10**9 and report.profile.samples[0].values[4:] == (7680, 30 * MIB)


def test_no_peak_table_when_nothing_was_freed_since():
    p = processor()
    p.add([HeapCounts(HOLD, 10, 10 * MIB, 0, 0)])
    shown = text(p.result())
    assert "In use at the peak (" not in shown and "in use 10.0 MiB at the peak" in shown


class FakeStats:
    """`stats` as BCC reads a per-CPU array: a list per index, one value per CPU."""

    def __init__(self):
        self.inuse = [0, 0]

    def __getitem__(self, index):
        return self.inuse if index.value == STAT_INUSE_BYTES else [0, 0]


class FakeCounts:
    def __init__(self):
        self.rows: list = []

    def items(self):
        return list(self.rows)


def count_row(allocs: int, size: int = 4096):
    key = SimpleNamespace(tgid=7, stack_id=-1, caller=0x401000, user_stack_hash=0, via_mmap=0, py_stack_hash=0)
    return key, SimpleNamespace(allocs=allocs, alloc_bytes=allocs * size, frees=0, free_bytes=0)


def test_the_collector_reads_the_stacks_at_each_new_high():
    """The in-use counter is per CPU (a free on another CPU than its allocation leaves one
    share below zero, as u64): summed modulo 2**64. A new high by more than 1/32 reads the
    stacks' counts; the next drain hands them over, once."""
    c = HeapCollector([7], rate=0)
    stats, by_stack = FakeStats(), FakeCounts()
    c._bpf = {"stats": stats, "by_stack": by_stack, "live": {}}
    stats.inuse, by_stack.rows = [4096, 0], [count_row(1)]
    c.handle_events()
    first = c._peak
    assert first and [(h.stack.user_ips, h.allocs) for h in first.counts] == [((0x401000,), 1)]
    stats.inuse = [8192, 2**64 - 4096]   # allocated on one CPU, freed on the other: 4096
    c.handle_events()
    stats.inuse = [4096 + 100, 0]        # higher, but by less than 1/32
    c.handle_events()
    assert c._peak is first
    stats.inuse, by_stack.rows = [2**64 - 4096, 4 * 4096], [count_row(3)]
    c.handle_events()
    assert c._peak is not first and c._peak.counts[0].allocs == 3
    peaks = [r for r in c.drain() if isinstance(r, HeapPeak)]
    assert [p.counts[0].allocs for p in peaks] == [3]
    assert not [r for r in c.drain() if isinstance(r, HeapPeak)]
