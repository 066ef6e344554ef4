"""Syscall pieces without a kernel: histogram, names, table, JSON, OTLP metrics."""

import json
import math
import random

import pytest
from rich.console import Console

from ebpf_otlp import histogram
from ebpf_otlp.signals.syscalls import names as syscall_names
from ebpf_otlp.signals.syscalls import json_out as syscall_json
from ebpf_otlp.signals.syscalls import metrics as syscall_metrics
from ebpf_otlp.signals.syscalls import table as syscall_table
from ebpf_otlp.export.resource import build_resource
from ebpf_otlp.records import HOST, CollectorStats, ContainerInfo
from ebpf_otlp.signals.syscalls.records import SyscallReport, SyscallStats, fold


def test_kernel_sub_bucket_table_matches_the_exact_index():
    table = histogram.sub_bucket_table()
    assert len(table) == 256 and table[0] == 0 and table[255] == 15
    assert table == sorted(table)
    rng = random.Random(1)
    for _ in range(2000):
        v = rng.randint(2, 10**10)
        x = v - 1                                  # what bpf/syscalls.bpf.c computes
        e = x.bit_length() - 1
        m = (x >> (e - 8)) & 0xFF if e >= 8 else (x << (8 - e)) & 0xFF
        kernel = e * 16 + table[m]
        assert abs(kernel - histogram.index_of(v)) <= 1
        lo, hi = histogram.bounds(kernel)
        assert lo * 0.95 <= v <= hi * 1.05


def test_percentiles_within_a_few_percent():
    rng = random.Random(7)
    values = [rng.lognormvariate(math.log(50_000), 0.8) for _ in range(20000)]
    hist = {}
    for v in values:
        i = histogram.index_of(v)
        hist[i] = hist.get(i, 0) + 1
    values.sort()
    for q in (0.5, 0.9, 0.99):
        true = values[int(q * len(values))]
        assert abs(histogram.percentile(hist, q) - true) / true < 0.05
    assert histogram.percentile({}, 0.5) == 0.0
    assert histogram.percentile({100: 1}, 0.5, lo=5.0, hi=6.0) == 6.0   # clamped to max


def test_syscall_names():
    assert syscall_names.name(syscall_names.number("openat")) == "openat"
    assert syscall_names.number("no_such_call") is None
    assert "openat" in syscall_names.suggestions("opnat")
    assert syscall_names.errno_name(2) == "ENOENT" and syscall_names.errno_name(9999) == "E9999"


def make_report():
    openat = syscall_names.number("openat")
    read = syscall_names.number("read")
    a = SyscallStats(10, "app", openat, "openat", calls=10, errors=4, total_ns=10_000, min_ns=500,
                     max_ns=3000, errnos={2: 3, 13: 1},
                     hist={histogram.index_of(900): 6, histogram.index_of(2000): 4}, timed=10)
    b = SyscallStats(11, "other", openat, "openat", calls=2, errors=0, total_ns=2_000, min_ns=900,
                     max_ns=1100, hist={histogram.index_of(1000): 2}, timed=2)
    c = SyscallStats(10, "app", read, "read", calls=5, total_ns=50_000, min_ns=8000, max_ns=12000,
                     bytes=4096, hist={histogram.index_of(10_000): 5}, timed=5)
    return SyscallReport([a, b, c], start_ns=1, duration_ns=2_000_000_000, latency=True,
                         collection=CollectorStats(processed=17))


def test_merge_and_by_syscall():
    rows = {r.syscall: r for r in syscall_table.by_syscall(make_report().stats)}
    assert rows["openat"].calls == 12 and rows["openat"].errors == 4
    assert rows["openat"].min_ns == 500 and rows["openat"].max_ns == 3000
    assert rows["openat"].errnos == {2: 3, 13: 1} and sum(rows["openat"].hist.values()) == 12


def test_table_and_json():
    console = Console(record=True, width=200)
    syscall_table.render(make_report(), console, by="process", files=True)
    text = console.export_text()
    assert "ENOENT 3" in text and "app" in text and "File and socket I/O" in text
    doc = json.loads(syscall_json.encode(make_report()))
    first = doc["stats"][0]
    assert first["syscall"] == "read" and first["latency_ns"]["p50"] > 8000
    assert doc["stats"][1]["errnos"] == {"EACCES": 1, "ENOENT": 3}


def test_otlp_metrics():
    data = syscall_metrics.build(make_report(), build_resource())
    [scope] = data.resource_metrics[0].scope_metrics
    metrics = {m.name: m for m in scope.metrics}
    count = metrics["ebpf_otlp.syscall.count"].data
    got = {(p.attributes["syscall.name"], p.attributes["process.pid"],
            p.attributes.get("error.type", "")): p.value for p in count.data_points}
    assert got[("openat", 10, "")] == 6 and got[("openat", 10, "ENOENT")] == 3
    assert got[("openat", 10, "EACCES")] == 1 and sum(got.values()) == 17
    hist = metrics["ebpf_otlp.syscall.duration"]
    assert hist.unit == "ns"
    p = next(p for p in hist.data.data_points if p.attributes["process.pid"] == 10
             and p.attributes["syscall.name"] == "openat")
    assert p.scale == 4 and p.count == 10 and sum(p.positive.bucket_counts) == 10
    assert p.positive.offset == histogram.index_of(900)


def sampled_report():
    """1000 getppid of which 10 were timed (the entry hook time-shared), plus one untimed
    process: counts exact, latency scaled up from the sample."""
    nr = syscall_names.number("getppid")
    timed = SyscallStats(20, "loop", nr, "getppid", calls=1000, total_ns=10 * 300, min_ns=200,
                         max_ns=500, hist={histogram.index_of(250): 7, histogram.index_of(450): 3},
                         timed=10)
    untimed = SyscallStats(21, "rare", nr, "getppid", calls=3)
    return SyscallReport([timed, untimed], start_ns=1, duration_ns=10**9, latency=True,
                         collection=CollectorStats(processed=1003), latency_budget=100_000,
                         timing_share=0.01)


def test_sampled_latency_is_scaled_not_invented():
    report = sampled_report()
    loop, rare = report.stats
    assert loop.sampled and loop.avg_ns == 300 and loop.est_total_ns == 300_000
    assert rare.est_total_ns == 0 and rare.avg_ns == 0
    merged = syscall_table.by_syscall(report.stats)[0]
    assert merged.calls == 1003 and merged.timed == 10 and merged.min_ns == 200
    assert report.sampled and report.timed_fraction == pytest.approx(10 / 1003)

    console = Console(record=True, width=200)
    syscall_table.render(report, console, by="process")
    text = console.export_text()
    assert "~0.300" in text and "1.0% of calls timed" in text and "100,000/s" in text

    rows = {r["pid"]: r for r in json.loads(syscall_json.encode(report))["stats"]}
    assert rows[20]["latency_ns"]["total"] == 300_000 and rows[20]["latency_ns"]["total_estimated"]
    assert rows[21]["latency_ns"] == {"timed": 0} and rows[21]["calls"] == 3

    data = syscall_metrics.build(report, build_resource())
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    [point] = metrics["ebpf_otlp.syscall.duration"].data.data_points   # the untimed one has none
    assert point.count == 1000 and sum(point.positive.bucket_counts) == 1000
    assert point.sum == 300_000 and point.min == 200 and point.max == 500


def test_scale_counts_keeps_integers_and_the_total():
    assert histogram.scale_counts({1: 7, 2: 3}, 1000) == {1: 700, 2: 300}
    scaled = histogram.scale_counts({1: 1, 2: 1, 3: 1}, 100)
    assert sum(scaled.values()) == 100 and sorted(scaled.values()) == [33, 33, 34]
    assert histogram.scale_counts({}, 5) == {} and histogram.scale_counts({4: 2}, 2) == {4: 2}


def test_calls_under_way_at_the_start_are_not_guessed_at():
    """Never time-shared: the only untimed calls were already running when tracing began,
    which are biased towards long ones, so totals stay what was measured."""
    nr = syscall_names.number("futex")
    row = SyscallStats(30, "waiter", nr, "futex", calls=5, total_ns=400, min_ns=50, max_ns=200,
                       hist={histogram.index_of(100): 4}, timed=4)
    report = SyscallReport([row], start_ns=1, duration_ns=10**9, latency=True, latency_budget=100_000)
    assert not report.sampled and report.time_in(row) == 400 and not report.estimated(row)
    console = Console(record=True, width=200)
    syscall_table.render(report, console)
    text = console.export_text()
    assert "0.000" in text and "~" not in text and "already under way" in text
    [point] = [p for m in syscall_metrics.build(report, build_resource()).resource_metrics[0]
               .scope_metrics[0].metrics if m.name == "ebpf_otlp.syscall.duration"
               for p in m.data.data_points]
    assert point.count == 4 and point.sum == 400


def test_short_lived_processes_fold_by_name_with_exact_totals():
    """A busy process and 40 short-lived `sh` children (two containers): with keep 2 the
    two busiest are kept by pid, the rest become one row per (name, container, syscall),
    and every total (calls, errors, bytes, errnos, histogram) is what went in."""
    read, openat = syscall_names.number("read"), syscall_names.number("openat")
    pod = ContainerInfo("c0ffee", "pod-1")
    rows = [SyscallStats(7, "server", read, "read", calls=5000, bytes=10**6, timed=5000,
                         total_ns=5 * 10**6, min_ns=300, max_ns=9000, hist={40: 5000})]
    for i in range(40):
        rows.append(SyscallStats(100 + i, "sh", openat, "openat", calls=3 + i % 2, errors=1,
                                 errnos={2: 1}, timed=3, total_ns=3000, min_ns=800, max_ns=1200,
                                 hist={30: 3}, container=pod if i % 4 == 0 else HOST))
    folded = fold(rows, keep=2)
    by_pid = {s.pid: s for s in folded if not s.folded}
    assert set(by_pid) == {7, 101}                      # the busiest two (101: 4 calls, lowest pid)
    merged = {(s.process_name, s.container): s for s in folded if s.folded}
    assert {k: s.folded for k, s in merged.items()} == {("sh", pod): 10, ("sh", HOST): 29}
    for field in ("calls", "errors", "bytes", "timed", "total_ns"):
        assert sum(getattr(s, field) for s in folded) == sum(getattr(s, field) for s in rows), field
    assert sum(s.errnos[2] for s in folded if s.errnos) == 40
    assert sum(sum(s.hist.values()) for s in folded) == sum(sum(s.hist.values()) for s in rows)
    assert fold(rows, keep=0) is rows and fold(rows, keep=41) is rows

    report = SyscallReport(folded, start_ns=1, duration_ns=10**9, latency=True)
    doc = json.loads(syscall_json.encode(report))
    assert {r.get("folded_processes") for r in doc["stats"] if "pid" not in r} == {10, 29}
    console = Console(record=True, width=200)
    syscall_table.render(report, console, by="process")
    assert "sh (29 processes)" in console.export_text()
    points = syscall_metrics.build(report, build_resource()).resource_metrics[0].scope_metrics[0]
    count = next(m for m in points.metrics if m.name == "ebpf_otlp.syscall.count")
    assert sum(p.value for p in count.data.data_points) == sum(s.calls for s in rows)
    assert sum("process.pid" not in p.attributes for p in count.data.data_points) >= 2
