"""Syscall pieces without a kernel: histogram, names, table, JSON, OTLP metrics."""

import json
import math
import random

from rich.console import Console

from ebpf_otlp import histogram, syscall_names
from ebpf_otlp.export import syscall_json, syscall_metrics, syscall_table
from ebpf_otlp.export.resource import build_resource
from ebpf_otlp.records import SyscallReport, SyscallStats


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
                     hist={histogram.index_of(900): 6, histogram.index_of(2000): 4})
    b = SyscallStats(11, "other", openat, "openat", calls=2, errors=0, total_ns=2_000, min_ns=900,
                     max_ns=1100, hist={histogram.index_of(1000): 2})
    c = SyscallStats(10, "app", read, "read", calls=5, total_ns=50_000, min_ns=8000, max_ns=12000,
                     bytes=4096, hist={histogram.index_of(10_000): 5})
    return SyscallReport([a, b, c], start_ns=1, duration_ns=2_000_000_000, latency=True, events=17,
                         lost={"calls map full": 0})


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
