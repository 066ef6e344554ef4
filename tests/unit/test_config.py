"""The snapshot/agent configuration: keys checked, one line per mistake, overrides, the
effective configuration printed, retention and temporaries by the rules."""

import os
import subprocess
import sys
import time

import pytest

from ebpf_otlp import config as cfg
from ebpf_otlp.errors import AgentError
from ebpf_otlp.sessions import bundles
from ebpf_otlp.signals.net.settings import NetSettings
from ebpf_otlp.signals.profile.settings import CpuSettings
from ebpf_otlp.signals.syscalls.settings import SyscallSettings


def test_a_good_config_is_read_with_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[snapshot]\nduration = "45s"\nmax_total = "1GiB"\nmax_age = "2d"\n'
                    '[profile]\nhz = 49\noff_cpu = true\n[trace-net]\nports = [80, 443]\n'
                    '[otlp]\nendpoint = "http://c:4317"\nheaders = {x-tenant = "a"}\n')
    c = cfg.load(str(path))
    s = c.section("snapshot")
    assert (s["duration"], s["max_total"], s["max_age"], s["keep"]) == (45.0, 2**30, 172800.0, 48)
    assert c.captures == ["profile", "trace_net"] and c.tables["trace_net"]["ports"] == [80, 443]
    assert CpuSettings.from_table(c.tables["profile"], off_cpu=False).hz == 49
    assert not CpuSettings.from_table(c.tables["profile"], off_cpu=False).include_self
    c.override("snapshot", duration=5.0, keep=None)
    assert c.section("snapshot")["duration"] == 5.0 and c.section("snapshot")["keep"] == 48
    text = c.to_toml(("snapshot", *c.captures, "otlp"))
    assert cfg.check(__import__("tomllib").loads(text)).tables["otlp"]["headers"] == {"x-tenant": "a"}


def test_targets_keys_reach_the_settings(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[profile]\ncomm = "nginx"\ninclude_self = true\n[syscalls]\ninclude_self = true\n'
                    '[trace_net]\ninclude_self = true\n')
    t = cfg.load(str(path)).tables
    cpu = CpuSettings.from_table(t["profile"], off_cpu=False)
    assert (cpu.comm, cpu.include_self) == ("nginx", True)
    assert SyscallSettings.from_table(t["syscalls"]).include_self and NetSettings.from_table(t["trace_net"]).include_self


@pytest.mark.parametrize("text,words", [
    ("[snapshot]\ndurration = 3", "[snapshot] unknown key 'durration'"),
    ("[profile]\nhz = 0", "[profile] hz = 0: a whole number of at least 1"),
    ('[snapshot]\nmax_total = "lots"', "bad size 'lots'"),
    ('[trace_net]\nports = [70000]', "[trace_net] ports"),
    ('[syscalls]\ncomm = "a-very-long-command-name"', "at most 15 bytes"),
    ('[memleak]\nsample_bytes = "lots"', "bad size 'lots'"),
    ('[bogus]\nx = 1', "unknown table [bogus]"),
    ('[snapshot\n', "not valid TOML"),
])
def test_mistakes_name_the_file_the_key_and_the_problem(tmp_path, text, words):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(AgentError) as e:
        cfg.load(str(path))
    assert str(path) in str(e.value) and words in str(e.value)


def test_cli_reports_config_errors_in_one_line_exit_2(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[snapshot]\nkeep = -1\n")
    r = subprocess.run([sys.executable, "-m", "ebpf_otlp", "snapshot", "--config", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "keep = -1" in r.stderr and str(path) in r.stderr


def test_print_config_shows_the_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[snapshot]\nkeep = 5\n[syscalls]\nlatency = false\n')
    r = subprocess.run([sys.executable, "-m", "ebpf_otlp", "snapshot", "--config", str(path),
                        "--print-config", "--keep", "7", "--max-age", "3d"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "keep = 7" in r.stdout and "max_age = 259200.0" in r.stdout and "[syscalls]" in r.stdout


def make_bundle(root, name, size=10, age=0.0):
    d = root / name
    d.mkdir()
    (d / "manifest.json").write_text('{"made_by": "ebpf-otlp snapshot"}')
    (d / "data").write_bytes(b"x" * size)
    t = time.time() - age
    os.utime(d, (t, t))
    return d


def test_retention_by_count_age_and_size(tmp_path):
    now = time.time()
    for i in range(5):
        make_bundle(tmp_path, f"h-2026010{i}T000000Z", age=(5 - i) * 10)
    (tmp_path / "other").mkdir()                       # not ours: never removed
    gone = bundles.apply_retention(str(tmp_path), keep=3, max_age_s=1e9, max_total=10**9, now=now)
    assert sorted(gone) == ["h-20260100T000000Z", "h-20260101T000000Z"]
    gone = bundles.apply_retention(str(tmp_path), keep=10, max_age_s=25, max_total=10**9, now=now)
    assert gone == ["h-20260102T000000Z"]
    gone = bundles.apply_retention(str(tmp_path), keep=10, max_age_s=1e9, max_total=60, now=now)
    assert gone == ["h-20260103T000000Z"]              # the newest always stays
    assert (tmp_path / "other").exists() and (tmp_path / "h-20260104T000000Z").exists()


def test_stale_temporaries_and_lock(tmp_path):
    (tmp_path / ".tmp-h-1").mkdir()
    (tmp_path / ".tmp-h-2.tar.gz").write_bytes(b"")
    assert sorted(bundles.remove_stale_temporaries(str(tmp_path))) == [".tmp-h-1", ".tmp-h-2.tar.gz"]
    with bundles.RootLock(str(tmp_path)):
        with pytest.raises(bundles.Busy) as e:
            with bundles.RootLock(str(tmp_path)):
                pass
        assert e.value.exit_code == 75 and f"pid {os.getpid()}" in str(e.value)


def test_print_config_checks_every_capture_table(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[syscalls]\nsyscalls = ["opnat"]\n')
    r = subprocess.run([sys.executable, "-m", "ebpf_otlp", "snapshot", "--config", str(path),
                        "--print-config"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown syscall 'opnat'" in r.stderr and not r.stdout


def test_the_command_line_defaults_are_the_settings_defaults():
    """One copy: each option's default is read from its signal's settings."""
    from ebpf_otlp.cli import cli
    from ebpf_otlp.signals.heap.settings import HeapSettings

    def params(command: str) -> dict:
        return cli.commands[command].make_context(command, []).params

    p, s, n, m = params("profile"), params("syscalls"), params("trace-net"), params("memleak")
    assert (p["hz"], p["event"], p["period"], p["unwind"]) == (CpuSettings.hz, CpuSettings.event,
                                                             CpuSettings.period, CpuSettings.unwind)
    assert int(p["min_block"] * 1e9) == CpuSettings.min_block_ns and p["switch_budget"] == CpuSettings.switch_budget
    assert (s["interval"], s["latency"], s["latency_budget"]) == (
        SyscallSettings.interval_s, SyscallSettings.latency, SyscallSettings.latency_budget)
    assert (n["interval"], n["hooks"], n["udp"], n["max_connections"]) == (
        NetSettings.interval_s, NetSettings.hooks, NetSettings.udp, NetSettings.max_conns)
    assert (m["sample_bytes"], m["mmap"], m["min_age"], m["interval"]) == (
        HeapSettings.rate, HeapSettings.mmap, HeapSettings.min_age_s, HeapSettings.interval_s)


def test_a_capture_tables_keys_are_its_settings_fields():
    """The schema of [trace_net] is NetSettings' TOML keys; a table sets the fields it names
    and leaves the others at the settings' defaults."""
    assert set(cfg.schema()["trace_net"]) == {"pids", "comm", "ports", "hooks", "rtt", "udp",
                                              "max_connections", "include_self", "protocols",
                                              "head_bytes", "tls", "routes", "raw_queries"}
    with pytest.raises(AgentError, match=r"\[trace_net\] head_bytes = 300: one of 128, 256"):
        cfg.check({"trace_net": {"head_bytes": 300}})
    s = NetSettings.from_table(cfg.check({"trace_net": {"max_connections": 2048}}).tables["trace_net"])
    assert s.max_conns == 2048 and s.udp is NetSettings.udp and s.interval_s == NetSettings.interval_s
    with pytest.raises(AgentError, match=r"\[syscalls\] syscalls: unknown syscall 'opnat'"):
        SyscallSettings.from_table({"syscalls": ["opnat"]}, "x.toml")


def test_trace_net_protocols_are_a_list_or_none():
    parse = lambda t: NetSettings.from_table(cfg.check({"trace_net": t}).tables["trace_net"])  # noqa: E731
    assert NetSettings().protocols == ["http", "grpc", "postgres", "mysql", "redis"]
    assert parse({"protocols": "grpc,postgres"}).protocols == ["grpc", "postgres"]
    assert parse({"protocols": ["http"]}).protocols == ["http"]
    assert parse({"protocols": "none"}).protocols == [] and parse({"protocols": []}).protocols == []
    for bad in ("ftp", "http,http", ["http", "smtp"]):
        with pytest.raises(AgentError, match=r"\[trace_net\] protocols = .*a list of http, grpc"):
            cfg.check({"trace_net": {"protocols": bad}})
