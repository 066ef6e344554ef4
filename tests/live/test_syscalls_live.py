"""Live syscall tracing against a program whose syscall mix is known."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess

import pytest

from support.collector import GrpcCollector
from conftest import FAKE_CONTAINER_ID, FAKE_POD_UID, agent_around, in_container, need_tool

pytestmark = pytest.mark.live

from support.syscall_mix import K_NANOSLEEP, M_OPENAT, N_GETPPID


def run_mix(binary, *agent_args, tmp_path, sleeps=K_NANOSLEEP, flood=False, container=False):
    """Start the mix (waiting on stdin), attach the agent, release the mix, stop the agent.
    Returns the JSON rows of the mix's pid, what the mix measured itself, and the table."""
    work = subprocess.Popen([str(binary), str(N_GETPPID), str(M_OPENAT), str(sleeps), str(int(flood))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    with in_container(work.pid) if container else contextlib.nullcontext():
        return _trace_mix(work, agent_args, tmp_path)


def _trace_mix(work, agent_args, tmp_path):
    out_json = tmp_path / "sys.json"
    stdout, table, _ = agent_around(work, "tracing syscalls", "syscalls", "--pid", str(work.pid),
                                    "--interval", "1s", "-o", str(out_json), *agent_args)
    doc = json.loads(out_json.read_text())
    rows = {r["syscall"]: r for r in doc["stats"] if r.get("pid") == work.pid}
    facts = {k: int(v) for k, v in re.findall(r"^(\w+) (\d+)$", stdout, re.M)}
    facts["timing_share"] = doc["timing_share"]
    return rows, facts, table


def test_known_mix_counts_errors_and_latency(mix_binary, tmp_path):
    rows, facts, table = run_mix(mix_binary, "--by", "process", tmp_path=tmp_path)
    median = facts["nanosleep_median_ns"]
    assert rows["getppid"]["calls"] == N_GETPPID and rows["getppid"]["errors"] == 0
    assert rows["openat"]["calls"] == M_OPENAT
    assert rows["openat"]["errnos"] == {"ENOENT": M_OPENAT}
    assert rows["nanosleep"]["calls"] == K_NANOSLEEP
    p50 = rows["nanosleep"]["latency_ns"]["p50"]
    assert abs(p50 - median) / median < 0.10, (p50, median)
    assert rows["getppid"]["latency_ns"]["p99"] < 1e6
    assert "nanosleep" in table and "ENOENT" in table
    # Under the latency budget every call is timed and the totals are measured, not estimated.
    assert facts["timing_share"] == 1.0 and "latency sampled" not in table
    for name in ("getppid", "openat", "nanosleep"):
        assert rows[name]["latency_ns"]["timed"] == rows[name]["calls"], name
    measured = rows["nanosleep"]["latency_ns"]["total"]
    assert abs(measured - facts["nanosleep_total_ns"]) / facts["nanosleep_total_ns"] < 0.05


def test_over_the_latency_budget_counts_stay_exact_and_latency_is_sampled(mix_binary, tmp_path):
    """A getppid flood (millions per second, far over the default 100k/s budget) beside
    1 ms sleeps: the entry hook is time-shared, so only a sample is timed, yet every call
    is counted and the sleeps' p50 and estimated total time match what the program saw."""
    sleeps = 1500
    rows, facts, table = run_mix(mix_binary, tmp_path=tmp_path, sleeps=sleeps, flood=True)
    getppid, sleep = rows["getppid"], rows["nanosleep"]
    assert getppid["calls"] == N_GETPPID + facts["flood_getppid_calls"]
    assert facts["flood_getppid_calls"] > 1_000_000
    assert sleep["calls"] == sleeps and rows["openat"]["errnos"] == {"ENOENT": M_OPENAT}
    assert facts["timing_share"] < 0.2
    # Timed: the share's part, plus what came before sharing began (every call is timed until
    # the governor's one-second horizon holds more than the 100k/s budget, then a 0.1 s look).
    before_sharing = 100_000 + 0.1 * facts["flood_getppid_calls"]
    assert 0 < getppid["latency_ns"]["timed"] < 0.2 * getppid["calls"] + before_sharing
    assert 20 <= sleep["latency_ns"]["timed"] < sleeps and sleep["latency_ns"]["total_estimated"]
    median, total = facts["nanosleep_median_ns"], facts["nanosleep_total_ns"]
    assert abs(sleep["latency_ns"]["p50"] - median) / median < 0.10
    assert abs(sleep["latency_ns"]["total"] - total) / total < 0.10
    assert "latency sampled" in table and "~" in table


def test_counts_match_strace(mix_binary, tmp_path):
    strace = need_tool("strace")
    rows, _, _ = run_mix(mix_binary, "--no-latency", tmp_path=tmp_path)
    summary = tmp_path / "strace.txt"
    subprocess.run([strace, "-c", "-f", "-o", str(summary), str(mix_binary),
                    str(N_GETPPID), str(M_OPENAT), str(K_NANOSLEEP)],
                   input="g", text=True, capture_output=True, check=True, timeout=120)
    theirs = {}
    for line in summary.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] in ("getppid", "openat", "nanosleep"):
            calls = int(parts[3])
            errors = int(parts[4]) if len(parts) == 6 else 0
            theirs[parts[-1]] = (calls, errors)
    ours = {name: (rows[name]["calls"], rows[name]["errors"]) for name in theirs}
    assert theirs == ours == {"getppid": (N_GETPPID, 0), "openat": (M_OPENAT, M_OPENAT),
                              "nanosleep": (K_NANOSLEEP, 0)}
    assert "latency_ns" not in rows["getppid"]          # count-only mode


def test_syscall_filter_and_otlp_metrics(mix_binary, tmp_path):
    """Also: the mix runs in a Kubernetes container's cgroup, and says so."""
    with GrpcCollector() as col:
        rows, _, table = run_mix(mix_binary, "--syscall", "openat", "--syscall", "nanosleep",
                                 "--by", "process", "--otlp-endpoint", col.endpoint,
                                 "--spool-dir", str(tmp_path / "spool"), tmp_path=tmp_path,
                                 container=True)
        assert set(rows) == {"openat", "nanosleep"}
        assert rows["openat"]["container.id"] == FAKE_CONTAINER_ID
        assert rows["openat"]["k8s.pod.uid"] == FAKE_POD_UID
        assert FAKE_CONTAINER_ID[:12] in table
        points = {}
        hists = {}
        for req in col.received["metrics"]:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == "ebpf_otlp.syscall.count":
                            for dp in m.sum.data_points:
                                a = {kv.key: kv.value for kv in dp.attributes}
                                key = (a["syscall.name"].string_value,
                                       a["error.type"].string_value if "error.type" in a else "")
                                points[key] = dp.as_int      # cumulative: the last one wins
                                assert a["container.id"].string_value == FAKE_CONTAINER_ID
                            assert m.sum.is_monotonic and m.sum.aggregation_temporality == 2
                        if m.name == "ebpf_otlp.syscall.duration":
                            for dp in m.exponential_histogram.data_points:
                                a = {kv.key: kv.value.string_value for kv in dp.attributes}
                                hists[a["syscall.name"]] = dp
    assert points[("openat", "ENOENT")] == M_OPENAT and points[("nanosleep", "")] == K_NANOSLEEP
    h = hists["nanosleep"]
    assert h.scale == 4 and h.count == K_NANOSLEEP and sum(h.positive.bucket_counts) == K_NANOSLEEP
    assert 1e6 <= h.min and h.max >= h.min


def test_a_full_map_drops_are_counted_and_reported(mix_binary):
    """With room for two keys, the calls that do not fit are counted as dropped, exactly,
    and the table says so: nothing is lost silently."""
    from rich.console import Console

    from ebpf_otlp.signals.syscalls.collector import SyscallCollector
    from ebpf_otlp.export import losses
    from ebpf_otlp.signals.syscalls.records import SyscallReport

    work = subprocess.Popen([str(mix_binary), str(N_GETPPID), str(M_OPENAT), str(K_NANOSLEEP)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    collector = SyscallCollector(pids=[work.pid], latency=False, max_keys=2)
    collector.start()
    try:
        work.communicate("g", timeout=60)   # its read of "g" and getppid take the two keys
    finally:
        work.kill()
        stats = collector.drain() + collector.stop()
    calls = {s.syscall: s.calls for s in stats if s.pid == work.pid}
    dropped = collector.counters["calls map full"]
    assert calls == {"read": 1, "getppid": N_GETPPID}
    assert dropped >= M_OPENAT + K_NANOSLEEP      # openat, nanosleep, write, ... found no room
    assert collector.stats.lost["syscall dropped (calls map full)"] == dropped
    report = SyscallReport(stats, 0, 10**9, latency=False, collection=collector.stats)
    console = Console(record=True, width=200)
    losses.render(report.collection, console)
    assert f"{dropped} syscall dropped (calls map full)" in console.export_text()
