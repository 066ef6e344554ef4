"""The engine live: launch mode (`-- CMD`) and several collectors in one process."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from rich.console import Console

from conftest import agent, compile_c, need_tool
from ebpf_otlp.engine.output_stage import OutputStage
from ebpf_otlp.export.sinks import FileTarget
from ebpf_otlp.signals.profile.settings import CpuSettings
from ebpf_otlp.signals.profile.processor import StackProcessor
from ebpf_otlp.signals.syscalls.processor import SyscallProcessor
from ebpf_otlp.signals.syscalls.settings import SyscallSettings
from ebpf_otlp.engine.capture import Capture, StopOnSignal
from support.pprof import load_pprof, pprof_stacks, self_share
from support.syscall_mix import K_NANOSLEEP, M_OPENAT, N_GETPPID

pytestmark = pytest.mark.live



def test_profile_launches_a_command_follows_its_fork_and_returns_its_status(tmp_path):
    """fork_burn burns parent_burn ~1.5 s, forks a child that burns child_burn ~1.5 s, waits
    and exits 3: both are named, the samples match 99 Hz × the CPU seconds both processes
    measured themselves (within 10 %), and ebpf-otlp exits 3."""
    binary = compile_c("fork_burn.c", tmp_path / "fork_burn")
    r = agent("profile", "-o", str(tmp_path / "cpu.pb.gz"), "--", str(binary), "1.5")
    assert r.returncode == 3, r.stderr
    cpu = {k: float(v) for k, v in re.findall(r"(\w+)_cpu=([\d.]+)", r.stdout)}
    stacks = pprof_stacks(load_pprof(tmp_path / "cpu.pb.gz"))
    total = sum(stacks.values())
    expected = 99 * (cpu["parent"] + cpu["child"])
    assert abs(total - expected) / expected < 0.10, (total, expected, cpu)
    for fn in ("parent_burn", "child_burn"):
        share = self_share(stacks, fn)
        assert 0.35 < share < 0.65, (fn, share)
        assert any(st[-2:] == ("main", fn) for st in stacks), fn
    assert "until it exits" in r.stderr


def test_short_launched_commands_are_named_from_their_first_sample(tmp_path):
    """`profile -- sh -c 'hot 0.1; hot 0.1; hot 0.1'` at 999 Hz: three children that live
    0.1 s each, named though each is gone before the first drain (their maps are read at
    their first sample, not at the next drain), with hot's 3:1 split."""
    binary = compile_c("hot.c", tmp_path / "hot")
    out = tmp_path / "cpu.folded"
    r = agent("profile", "--hz", "999", "-f", "folded", "-o", str(out), "--top", "0", "--",
              "sh", "-c", f"{binary} 0.1; {binary} 0.1; {binary} 0.1")
    assert r.returncode == 0, r.stderr
    samples = [(line.rsplit(" ", 1)[0].split(";"), int(line.rsplit(" ", 1)[1]))
               for line in out.read_text().splitlines()]
    hot = [(frames, n) for frames, n in samples if frames[0] == "hot"]
    total = sum(n for _, n in hot)
    assert total > 150, (total, r.stderr)
    # Only the execve itself, sampled in the kernel while the user side is still the shell's
    # child, may miss its user frames.
    unnamed = sum(n for frames, n in hot if "[unknown]" in frames)
    assert unnamed <= 0.02 * total, (unnamed, total, out.read_text())
    a = sum(n for frames, n in hot if frames[-1] == "hot_a")
    b = sum(n for frames, n in hot if frames[-1] == "hot_b")
    assert a + b >= 0.9 * total, (a, b, total)
    assert abs(a / (a + b) - 0.75) < 0.05, (a, b)
    # Each is held at its exec and as libc maps until its tables are in: whole stacks.
    whole = sum(n for frames, n in hot if frames[-1] in ("hot_a", "hot_b") and frames[1] == "_start")
    assert whole >= 0.99 * (a + b), (whole, a + b)


def test_syscalls_launches_a_command_and_counts_it_exactly(tmp_path, mix_binary):
    """The mix runs only once tracing is attached, so every one of its calls is counted."""
    out = tmp_path / "sys.json"
    r = agent("syscalls", "-o", str(out), "--", str(mix_binary), str(N_GETPPID), str(M_OPENAT),
              str(K_NANOSLEEP), input="g")
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["stats"]
    calls = {name: sum(x["calls"] for x in rows if x["syscall"] == name)
             for name in ("getppid", "openat", "nanosleep")}
    assert calls == {"getppid": N_GETPPID, "openat": M_OPENAT, "nanosleep": K_NANOSLEEP}


def _strace_counts(strace: str, argv: list[str], env: dict, out) -> dict[str, tuple[int, int]]:
    subprocess.run([strace, "-c", "-f", "-o", str(out), *argv], env=env, capture_output=True,
                   check=True, timeout=60)
    counts = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) in (5, 6) and parts[0][0].isdigit() and parts[-1] != "total":
            counts[parts[-1]] = (int(parts[3]), int(parts[4]) if len(parts) == 6 else 0)
    return counts


def test_syscalls_launch_mode_matches_strace_call_for_call(tmp_path):
    """`syscalls -- ls DIR`, found through a PATH whose first entries do not exist, counts
    what `strace -c -f` counts: one execve, none of the launcher's PATH search or its set-up
    between fork and exec. As `strace -c`, the table goes to stderr: stdout is the command's."""
    strace = need_tool("strace")
    listing = tmp_path / "dir"
    listing.mkdir()
    for name in ("one", "two", "three"):
        (listing / name).write_text(name)
    env = {**os.environ, "PATH": f"{tmp_path}/none1:{tmp_path}/none2:/usr/bin:/bin", "LC_ALL": "C"}
    out = tmp_path / "sys.json"
    r = agent("syscalls", "--no-latency", "--top", "200", "-o", str(out), "--", "ls", str(listing),
              env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "one\nthree\ntwo\n"
    assert "Syscalls by calls over" in r.stderr and "over 0.0 s" not in r.stderr
    ours: dict[str, tuple[int, int]] = {}
    for row in json.loads(out.read_text())["stats"]:
        calls, errors = ours.get(row["syscall"], (0, 0))
        ours[row["syscall"]] = (calls + row["calls"], errors + row["errors"])
    theirs = _strace_counts(strace, ["ls", str(listing)], env, tmp_path / "strace.txt")
    assert ours["execve"] == (1, 0)
    assert ours == theirs
    r = agent("syscalls", "--", "/bin/true")   # timed from its exec on, execve included
    assert r.returncode == 0 and "execve" in r.stderr and "not timed" not in r.stderr, r.stderr


def test_text_from_the_command_line_is_printed_as_text(tmp_path):
    """Brackets and colons in a command line are text, not terminal markup: no crash, and
    the banner shows them as given."""
    r = agent("syscalls", "--", "/bin/echo", "a[/b]c", ":smile:", "[bold]x")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "a[/b]c :smile: [bold]x\n"
    assert "tracing syscalls of /bin/echo a[/b]c :smile: [bold]x (pid" in r.stderr
    assert "Traceback" not in r.stderr
    out = tmp_path / "a[b]c.pb.gz"
    r = agent("profile", "-o", str(out), "--", "sh", "-c", "sleep 0.5; echo done", "[/x]")
    assert r.returncode == 0 and r.stdout == "done\n", r.stderr
    assert f"wrote pprof: {out}" in r.stderr and out.exists()


def test_a_missing_command_is_one_line_and_exit_2():
    r = agent("profile", "--", "/nonexistent/program")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot run /nonexistent/program" in r.stderr


def test_profile_and_syscalls_together_in_one_process(tmp_path, mix_binary):
    """One capture engine, two collectors drained on their own intervals, one output stage:
    the CPU profile finds hot's 3:1 split and the syscall counts of the mix are exact,
    as in the single-command tests."""
    hot = compile_c("hot.c", tmp_path / "hot")
    burn = subprocess.Popen([str(hot), "20"])
    mix = subprocess.Popen([str(mix_binary), str(N_GETPPID), str(M_OPENAT), str(K_NANOSLEEP)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pids = [burn.pid, mix.pid]
    cpu = StackProcessor(CpuSettings(hz=199, pids=pids, drain_s=1.0))
    sys = SyscallProcessor(SyscallSettings(pids=pids, interval_s=0.5))
    notices = Console(stderr=True)
    try:
        with StopOnSignal() as stop:
            capture = Capture([cpu, sys], stop, notices, duration_s=5.0)
            capture.start()
            mix.stdin.write("g")
            mix.stdin.close()
            capture.run()
    finally:
        burn.kill()
        mix.kill()
    assert cpu.collector.stats.drains >= 3 and sys.collector.stats.drains >= 6   # own intervals
    results = [cpu.result(capture.ended_ns), sys.result(capture.ended_ns)]
    console = Console(record=True, width=200)
    stage = OutputStage.create(console, notices,
                               [FileTarget(str(tmp_path / "cpu.pb.gz"), "pprof", "profile"),
                                FileTarget(str(tmp_path / "sys.json"), "json", "syscalls")],
                               {}, None, None, lambda: {})
    stage.finish(results, "test", capture.started_ns, capture.ended_ns, {})

    stacks = pprof_stacks(load_pprof(tmp_path / "cpu.pb.gz"))
    hot_stacks = {st: n for st, n in stacks.items() if st and st[0] != "syscall_mix"}
    a, b = self_share(hot_stacks, "hot_a"), self_share(hot_stacks, "hot_b")
    assert abs(a - 0.75) < 0.05 and abs(b - 0.25) < 0.05, (a, b)
    assert sum(hot_stacks.values()) > 5 * 199 * 0.6
    rows = {r["syscall"]: r for r in json.loads((tmp_path / "sys.json").read_text())["stats"]
            if r.get("pid") == mix.pid}
    assert rows["getppid"]["calls"] == N_GETPPID
    assert rows["openat"]["errnos"] == {"ENOENT": M_OPENAT}
    assert rows["nanosleep"]["calls"] == K_NANOSLEEP
    footer = console.export_text()
    assert "syscalls losses: none" in footer
    # No sample dropped; a stack id may collide in the hash now and then.
    assert not any("sample" in cause for cause in cpu.collector.stats.lost), footer
