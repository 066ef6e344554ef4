"""The output stage and the agent's windows without a kernel: each result reaches its
signal's files, table, OTLP form and stream, once; windows are cut on time, per window or
per interval as each signal's descriptor says. Runs without root."""

from __future__ import annotations

import gzip
import json
import os

from rich.console import Console

from ebpf_otlp.export.console import text_console
from ebpf_otlp.engine.output_stage import OutputStage
from ebpf_otlp.export.sinks import FileTarget
from ebpf_otlp.records import CollectorStats, Frame, Profile, StackSample, cpu_shape, off_cpu_shape
from ebpf_otlp.sessions import agent
from ebpf_otlp.sessions.bundles import MANIFEST, BundleStore
from ebpf_otlp.sessions.snapshot import Part
from ebpf_otlp.signals import registry
from ebpf_otlp.signals.net.records import Connection, NetReport
from ebpf_otlp.signals.syscalls.records import SyscallReport
from support.fakes import FakeCollector, FakeOtlp, ResultProcessor

T0 = 1_700_000_000_000_000_000


def profile(off_cpu: bool = False, count: int = 3) -> Profile:
    shape = off_cpu_shape() if off_cpu else cpu_shape(99)
    values = (count,) if off_cpu else (count, count * shape["period"])
    sample = StackSample(1, 1, "t", "work", (Frame("hot", "/bin/work"), Frame("main", "/bin/work")), values)
    return Profile(samples=[sample], start_ns=T0, duration_ns=10**9, **shape)


def syscalls(lost: int = 0, processed: int = 5) -> SyscallReport:
    return SyscallReport([], T0, 10**9, True,
                         CollectorStats(processed=processed,
                                        lost={"syscall dropped (calls map full)": lost} if lost else {}))


def connection(port: int) -> Connection:
    return Connection(pid=7, process_name="curl", role="client", family=4, local_address="10.0.0.1",
                      local_port=port, peer_address="10.0.0.2", peer_port=443, start_ns=T0,
                      end_ns=T0 + 10**6)


def net(ports) -> NetReport:
    return NetReport([connection(p) for p in ports], [], T0, 10**9, "tracepoints")


def stage_for(tmp_path, files=(), terminal=None, otlp=None, live_terminal=False, interval_s=60.0):
    out = open(tmp_path / "terminal.txt", "w")
    stage = OutputStage.create(Console(file=out, width=200), text_console(quiet=True), list(files),
                               terminal or {}, None, None, lambda: {}, interval_s, live_terminal)
    stage.otlp = otlp
    return stage, out


def test_each_result_goes_to_its_signals_files_and_table(tmp_path):
    shown = []
    stage, out = stage_for(tmp_path, [FileTarget(str(tmp_path / "cpu.folded"), "folded", "profile"),
                                      FileTarget(str(tmp_path / "off.folded"), "folded", "off-cpu"),
                                      FileTarget(str(tmp_path / "sys.json"), "json", "syscalls")],
                           {"profile": lambda r, c: shown.append(r)})
    results = [profile(), profile(off_cpu=True, count=5), syscalls(lost=2)]
    stage.finish(results, "test", T0, T0 + 10**9, {})
    out.close()
    assert (tmp_path / "cpu.folded").read_text().strip() == "work;main;hot 3"
    assert (tmp_path / "off.folded").read_text().strip() == "work;main;hot 5"
    assert json.loads((tmp_path / "sys.json").read_text())["collection"]["processed"] == 5
    assert shown == [results[0]]   # the table of its own signal only
    text = (tmp_path / "terminal.txt").read_text()
    assert "profile losses: none" in text and "off-CPU profile losses: none" in text
    assert "syscalls losses: 2 syscall dropped (calls map full)" in text


def test_a_result_knows_its_signal():
    assert registry.of(profile()) is registry.BY_NAME["profile"]
    assert registry.of(profile(off_cpu=True)) is registry.BY_NAME["off-cpu"]
    assert registry.of(net([1])).name == "trace-net"
    assert registry.TABLES == ("profile", "syscalls", "trace_net", "memleak")


def test_connections_stream_once_each_as_they_close(tmp_path):
    otlp = FakeOtlp()
    stage, out = stage_for(tmp_path, otlp=otlp, live_terminal=True,
                           terminal={"trace-net": lambda r, c: c.print("SUMMARY")})
    stage.periodic(net([40000, 40001]))
    stage.periodic(net([40000, 40001]))              # nothing new
    stage.finish([net([40000, 40001, 40002])], "trace-net", T0, T0 + 10**9, {})
    out.close()
    assert len(otlp.spans.get_finished_spans()) == 3
    lines = (tmp_path / "terminal.txt").read_text().splitlines()
    assert [line.split()[2] for line in lines if " curl " in line] == [
        "10.0.0.1:40000", "10.0.0.1:40001", "10.0.0.1:40002"]
    assert lines.index(next(line for line in lines if "40002" in line)) < lines.index("SUMMARY")
    assert otlp.sent[-1].connections[-1].local_port == 40002 and otlp.sessions == ["trace-net"]


def test_metrics_go_out_each_interval_not_each_drain(tmp_path):
    otlp = FakeOtlp()
    stage, _ = stage_for(tmp_path, otlp=otlp, interval_s=3600)
    stage.periodic(syscalls())
    stage.periodic(syscalls())
    assert otlp.sent == []
    stage._next_metrics = 0          # the interval has passed
    stage.periodic(syscalls())
    assert len(otlp.sent) == 1


def windows_of(tmp_path, otlp=None):
    cpu = ResultProcessor(FakeCollector("cpu"), lambda records, end: profile(count=len(records) or 1))
    sys_ = ResultProcessor(FakeCollector("syscalls"), lambda records, end: syscalls(), periodic=True)
    store = BundleStore(str(tmp_path / "windows"), keep=2, max_age_s=1e9, max_total=10**9).open()
    parts = [Part("profile", cpu, [FileTarget("profile.folded", "folded", "profile")]),
             Part("syscalls", sys_, [FileTarget("syscalls.json", "json", "syscalls")])]
    stage, _ = stage_for(tmp_path, otlp=otlp)
    w = agent._Windows(parts, stage, None if otlp else store, window_s=60, interval_s=10)
    w.begin(None)
    return w, cpu, sys_, store


def test_an_interval_exports_the_per_interval_signals_only(tmp_path):
    otlp = FakeOtlp()
    w, cpu, sys_, _ = windows_of(tmp_path, otlp)
    w.on_drain(sys_)                       # nothing is due yet
    assert otlp.sent == [] and cpu.resets == sys_.resets == 0
    w.next_interval = 0                    # an interval has passed, not a window
    w.on_drain(sys_)
    assert [registry.of(r).name for r in otlp.sent] == ["syscalls"]
    assert sys_.resets == 1 and cpu.resets == 0   # the profile's window goes on
    w.next_window = 0
    w.on_drain(cpu)
    assert [registry.of(r).name for r in otlp.sent[1:]] == ["profile", "syscalls"]
    assert cpu.resets == 1 and sys_.resets == 2 and w.totals.windows == 1


def test_a_window_is_a_bundle_and_retention_keeps_the_newest(tmp_path):
    w, cpu, sys_, store = windows_of(tmp_path)
    for _ in range(3):
        w.next_window = 0
        w.on_drain(cpu)
    bundles = sorted(os.listdir(store.root))
    assert len(bundles) == 2 and w.totals.windows == 3   # keep = 2
    newest = os.path.join(store.root, bundles[-1])
    manifest = json.loads(open(os.path.join(newest, MANIFEST)).read())
    assert manifest["window"] is True and set(manifest["files"]) == {"profile.folded", "syscalls.json"}


def test_a_windows_manifest_is_a_snapshots_with_the_windows_own_counts(tmp_path):
    """Each window's manifest says what a snapshot bundle's does (version, host, kernel,
    start and end, per-capture status and losses by cause, files with sha256), with the
    counts of that window alone; the run's summary line names the captures that ran and
    their losses by cause."""
    w, cpu, sys_, store = windows_of(tmp_path)
    drains = [0]
    sys_.make = lambda records, end: syscalls(lost=2 * drains[0], processed=5 * drains[0])
    for _ in range(2):
        drains[0] += 1
        w.next_window = 0
        w.on_drain(cpu)
    first, second = (json.loads(open(os.path.join(store.root, b, MANIFEST)).read())
                     for b in sorted(os.listdir(store.root)))
    for m in (first, second):
        assert m["made_by"] == "ebpf-otlp agent" and m["window"] is True
        assert {"ebpf_otlp_version", "host", "kernel", "start_ns", "end_ns"} <= set(m)
        assert all(len(f["sha256"]) == 64 for f in m["files"].values())
        sys_entry = next(c for c in m["captures"] if c["name"] == "syscalls")
        assert sys_entry["status"] == "ok" and sys_entry["files"] == ["syscalls.json"]
        assert sys_entry["processed"] == 5 and sys_entry["lost"] == {"syscall dropped (calls map full)": 2}
    assert first["start_ns"] < first["end_ns"] == second["start_ns"] < second["end_ns"]
    line = w.totals.summary()
    assert line.startswith("agent: 2 window(s); profile ") and "syscalls 10 events" in line
    assert line.endswith("losses: syscalls 4 syscall dropped (calls map full)"), line


def test_a_window_that_cannot_be_encoded_is_said_and_counted_and_the_agent_goes_on(tmp_path):
    """A value no format can carry (the soak once met a line number of -2.6e19) costs that
    window's files, never the agent: the next window is written, the summary counts it."""
    w, cpu, sys_, store = windows_of(tmp_path)
    w.notices = Console(record=True, width=200)

    def unencodable(results, end):
        raise ValueError("Value out of range: -25830184171706896397")
    real_write, w.write_files = w.write_files, unencodable
    w.next_window = 0
    w.on_drain(cpu)
    w.write_files = real_write
    w.next_window = 0
    w.on_drain(cpu)
    assert len(os.listdir(store.root)) == 1 and w.totals.unwritten == 1
    assert "a window's files were not written: ValueError: Value out of range" in w.notices.export_text()
    assert w.totals.summary().endswith("1 window(s) not written (the error is on stderr)")


def test_a_syscalls_only_agent_speaks_of_syscalls():
    t = agent.Totals(windows=3, stats={"syscalls": CollectorStats(processed=1234)})
    assert t.summary() == "agent: 3 window(s); syscalls 1,234 events; losses: none"


def test_a_short_tail_goes_with_the_last_window(tmp_path):
    w, cpu, sys_, store = windows_of(tmp_path)
    w.begin(duration_s=65)                 # a 5 s tail after the first 60 s window
    w.next_window = 0
    w.deadline = w.next_window + 1         # less than half a window left
    w.on_drain(cpu)
    assert w.totals.windows == 0 and os.listdir(store.root) == []


def test_a_name_ending_in_gz_is_written_compressed_once(tmp_path):
    """x.folded.gz holds the folded text gzip-compressed, and x.svgz the flame graph; pprof,
    already gzip, is not compressed twice; format_for sees through the .gz."""
    from ebpf_otlp.export import folded, pprof
    from ebpf_otlp.export.profile_files import format_for
    from ebpf_otlp.export.sinks import FileSink, Batch
    from ebpf_otlp.export import flamegraph
    assert format_for("x.folded.gz") == "folded" and format_for("x.pb.gz") == "pprof"
    assert format_for("x.svgz") == "svg"
    targets = [FileTarget(str(tmp_path / "p.folded.gz"), "folded", "profile"),
               FileTarget(str(tmp_path / "p.pb.gz"), "pprof", "profile"),
               FileTarget(str(tmp_path / "p.svgz"), "svg", "profile")]
    FileSink(targets).export(Batch([(registry.of(profile()), profile())]))
    assert gzip.decompress((tmp_path / "p.folded.gz").read_bytes()).decode() == folded.encode(profile())
    assert (tmp_path / "p.pb.gz").read_bytes() == pprof.encode(profile())
    assert gzip.decompress((tmp_path / "p.svgz").read_bytes()).decode() == flamegraph.render(profile())
