"""agent live: consecutive windows, each a profile at the collector, contiguous and
non-overlapping, adding up to what the kernel counted; files when there is no collector."""

from __future__ import annotations

import re
import subprocess

import pytest

from support.collector import GrpcCollector
from conftest import agent, compile_c
from ebpf_otlp.export.otlp_profiles import decode_stacks

pytestmark = pytest.mark.live


def test_three_windows_reach_the_collector_contiguous_and_complete(tmp_path):
    hot = subprocess.Popen([str(compile_c("hot.c", tmp_path / "hot")), "40"])
    config = tmp_path / "agent.toml"
    config.write_text(f"[profile]\nhz = 199\npids = [{hot.pid}]\n[syscalls]\npids = [{hot.pid}]\n")
    try:
        with GrpcCollector() as col:
            r = agent("agent", "--config", str(config), "--otlp-endpoint", col.endpoint,
                      "--window", "2s", "--interval", "1s", "--duration", "6s")
            received = col.received
    finally:
        hot.kill()
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) window\(s\), \d+ profile\(s\), (\d+) CPU samples exported of (\d+) taken, "
                  r"losses: none", r.stdout)
    assert m, r.stdout
    windows, exported, taken = map(int, m.groups())
    assert windows == 3 and exported == taken > 0
    profiles = []
    for req in received["profiles"]:
        s = req.dictionary.string_table
        for rp in req.resource_profiles:
            for sp in rp.scope_profiles:
                profiles += [(p.time_unix_nano, p.duration_nano, sum(x.values[0] for x in p.samples))
                             for p in sp.profiles if s[p.sample_type.type_strindex] == "samples"]
    assert len(profiles) == 3, profiles
    profiles.sort()
    for (t0, d0, _), (t1, _, _) in zip(profiles, profiles[1:]):
        assert t0 + d0 == t1          # contiguous, no overlap
    assert sum(n for *_, n in profiles) == taken
    assert all(n > 0 for *_, n in profiles)
    named = {name for req in received["profiles"] for (_pid, stack) in decode_stacks(req)
             for name in stack}
    assert {"hot_a", "hot_b"} <= named
    assert received["metrics"]        # syscall metrics each interval, and self-telemetry


def windows_written(tmp_path, tables: str, duration: str, agent_table: str = "") -> list:
    """Run the agent without a collector (1 s windows; the config's `tables`, and its
    [agent] table with the output directory and `agent_table`) and return the window
    directories it left, oldest first."""
    out = tmp_path / "windows"
    config = tmp_path / "agent.toml"
    config.write_text(f'{tables}[agent]\noutput_dir = "{out}"\n{agent_table}')
    r = agent("agent", "--config", str(config), "--window", "1s", "--duration", duration)
    assert r.returncode == 0, r.stderr
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def test_without_a_collector_windows_rotate_into_files(tmp_path):
    dirs = windows_written(tmp_path, "[profile]\nhz = 99\n", "4s", agent_table="keep = 2\n")
    assert len(dirs) == 2                                  # the newest two kept
    for d in dirs:
        assert {p.name for p in d.iterdir()} >= {"profile.pb.gz", "profile.svg", "manifest.json"}


def test_without_a_profile_windows_still_rotate_into_files(tmp_path):
    """Syscalls alone (no CPU profile) still cut windows and write them."""
    dirs = windows_written(tmp_path, "[syscalls]\nlatency = false\n", "3.5s")
    assert len(dirs) >= 3 and all((d / "syscalls.json.gz").exists() for d in dirs)
