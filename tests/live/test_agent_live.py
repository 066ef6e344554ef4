"""agent live: consecutive windows, each a profile at the collector, contiguous and
non-overlapping, adding up to what the kernel counted; files when there is no collector."""

from __future__ import annotations

import gzip
import json
import re
import subprocess

import pytest

from support.collector import GrpcCollector
from conftest import agent, agent_popen, compile_c, wait_for_line
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
    m = re.search(r"agent: (\d+) window\(s\); profile ([\d,]+) CPU samples exported of ([\d,]+) taken "
                  r"in \d+ profile\(s\), syscalls 0 events; losses: none", r.stdout)   # hot makes none
    assert m, r.stdout
    windows, exported, taken = (int(g.replace(",", "")) for g in m.groups())
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


def windows_written(tmp_path, tables: str, duration: str, agent_table: str = "") -> tuple[list, str]:
    """Run the agent without a collector (1 s windows; the config's `tables`, and its
    [agent] table with the output directory and `agent_table`); the window directories it
    left, oldest first, and its summary line."""
    out = tmp_path / "windows"
    config = tmp_path / "agent.toml"
    config.write_text(f'{tables}[agent]\noutput_dir = "{out}"\n{agent_table}')
    r = agent("agent", "--config", str(config), "--window", "1s", "--duration", duration)
    assert r.returncode == 0, r.stderr
    return sorted(p for p in out.iterdir() if not p.name.startswith(".")), r.stdout.strip()


def test_without_a_collector_windows_rotate_into_files(tmp_path):
    dirs, _ = windows_written(tmp_path, "[profile]\nhz = 99\n", "4s", agent_table="keep = 2\n")
    assert len(dirs) == 2                                  # the newest two kept
    for d in dirs:
        assert {p.name for p in d.iterdir()} >= {"profile.pb.gz", "profile.svgz", "manifest.json"}


def test_without_a_profile_windows_still_rotate_into_files(tmp_path):
    """Syscalls alone (no CPU profile) still cut windows and write them."""
    dirs, _ = windows_written(tmp_path, "[syscalls]\nlatency = false\n", "3.5s")
    assert len(dirs) >= 3 and all((d / "syscalls.json.gz").exists() for d in dirs)


def test_under_churn_a_window_names_the_busiest_and_folds_the_rest_exactly(tmp_path):
    """A process making 200,000 getppid and 60 short-lived /bin/true beside it, both
    started once the agent is attached: the windows keep the busy one by pid (its first
    name_after calls counted under its name), fold the `true`s by name, and every call the
    kernel counted is in exactly one row of one window; the summary speaks of syscalls
    only, the capture that ran."""
    out = tmp_path / "windows"
    config = tmp_path / "agent.toml"
    config.write_text(f'[syscalls]\nlatency = false\ntop_processes = 3\n[agent]\noutput_dir = "{out}"\n'
                      'keep = 20\n')
    mix = subprocess.Popen([str(compile_c("syscall_mix.c", tmp_path / "syscall_mix")), "200000", "0", "0"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    run = agent_popen("agent", "--config", str(config), "--window", "1s", "--duration", "4s")
    try:
        wait_for_line(run.stderr, "agent: syscalls; windows of")
        mix.stdin.write(b"x")
        mix.stdin.flush()
        subprocess.run(["sh", "-c", "for i in $(seq 60); do /bin/true; done"], check=True)
        summary, err = run.communicate(timeout=60)
    finally:
        mix.kill()
        mix.wait()
    assert run.returncode == 0, err
    m = re.fullmatch(r"agent: (\d+) window\(s\); syscalls ([\d,]+) events; losses: none", summary.strip())
    assert m, summary
    dirs = sorted(p for p in out.iterdir() if not p.name.startswith("."))
    rows, windows = [], []
    for d in dirs:
        manifest = json.loads((d / "manifest.json").read_text())
        assert manifest["made_by"] == "ebpf-otlp agent"
        [capture] = manifest["captures"]
        windows.append(capture["processed"])
        rows += json.loads(gzip.decompress((d / "syscalls.json.gz").read_bytes()))["stats"]
    assert len(dirs) == int(m.group(1)) >= 3
    assert sum(r["calls"] for r in rows) == int(m.group(2).replace(",", "")) == sum(windows)
    getppid = [r for r in rows if r["syscall"] == "getppid" and r["process"] == "syscall_mix"]
    assert sum(r["calls"] for r in getppid) == 200000
    assert any(r.get("pid") == mix.pid for r in getppid)
    trues = [r for r in rows if r["process"] == "true"]
    assert trues and all("pid" not in r for r in trues)
    assert sum(r["folded_processes"] for r in trues if r["syscall"] == "execve") == 60
