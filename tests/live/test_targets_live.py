"""Which processes a capture sees, live: never ebpf-otlp itself or its helper processes
(unless --include-self), a 15-byte command name, and pids inside a pid namespace."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import agent, agent_around, agent_popen, compile_c, in_pid_namespace
from support.pprof import load_pprof
from support.syscall_mix import K_NANOSLEEP, M_OPENAT, N_GETPPID

pytestmark = pytest.mark.live


class Family:
    """The pids of a process and of everything it starts, polled while it runs (a helper
    that lives a few milliseconds may be missed; the ones that matter live for seconds)."""

    def __init__(self, pid: int):
        self.pids = {pid}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(pid,), daemon=True)
        self._thread.start()

    def _poll(self, root: int) -> None:
        while not self._done.is_set():
            todo = [root]
            while todo:
                pid = todo.pop()
                self.pids.add(pid)
                for task in Path(f"/proc/{pid}/task").glob("*") if Path(f"/proc/{pid}").exists() else []:
                    try:
                        todo += [int(c) for c in (task / "children").read_text().split()]
                    except OSError:
                        pass
            time.sleep(0.02)

    def stop(self) -> set[int]:
        self._done.set()
        self._thread.join()
        return self.pids


def sample_pids(path: Path) -> list[int]:
    prof = load_pprof(path)
    s = prof.string_table
    return [l.num for sample in prof.sample for l in sample.label if s[l.key] == "pid"]


def test_an_idle_whole_host_profile_has_nothing_of_ebpf_otlp(tmp_path):
    """`profile --all` while ebpf-otlp compiles, builds unwind tables (in a helper process)
    and writes: none of its samples, from it or from a helper."""
    out = tmp_path / "all.pb.gz"
    run = agent_popen("profile", "--all", "--duration", "4s", "-o", str(out))
    family = Family(run.pid)
    _, err = run.communicate(timeout=120)
    ours = family.stop()
    assert run.returncode == 0, err
    pids = sample_pids(out)
    assert not ours & set(pids), (sorted(ours & set(pids)), len(pids))


def test_an_idle_snapshot_has_nothing_of_ebpf_otlp(tmp_path):
    """The default snapshot (profile, syscalls, trace-net together, each compiling while the
    others run): no sample, syscall row or connection of ebpf-otlp or its helpers."""
    root = tmp_path / "snaps"
    config = tmp_path / "snap.toml"
    # Every process by pid (none folded under its name), so each row can be checked.
    config.write_text(f'[snapshot]\noutput_root = "{root}"\n[profile]\n'
                      '[syscalls]\nname_after = 0\ntop_processes = 0\n[trace_net]\n')
    run = agent_popen("snapshot", "--config", str(config), "--duration", "5s")
    family = Family(run.pid)
    out, err = run.communicate(timeout=180)
    ours = family.stop()
    assert run.returncode == 0, err
    [bundle] = [p for p in root.iterdir() if not p.name.startswith(".")]
    # Its own samples were most of the losses once. Nothing is dropped now; a process the
    # suite left running may still have a stack cut short (no unwind table yet): kept, not lost.
    manifest = json.loads((bundle / "manifest.json").read_text())
    dropped = {cause: n for c in manifest["captures"] for cause, n in c["lost"].items()
               if not cause.startswith("user stack cut short")}
    assert not dropped, (dropped, out)
    assert not ours & set(sample_pids(bundle / "profile.pb.gz"))
    rows = json.loads(gzip.decompress((bundle / "syscalls.json.gz").read_bytes()))["stats"]
    assert rows and all("pid" in r for r in rows) and not ours & {r["pid"] for r in rows}
    conns = [json.loads(line) for line in gzip.decompress((bundle / "connections.jsonl.gz").read_bytes()).decode().splitlines()]
    assert not ours & {c["pid"] for c in conns}


def test_include_self_brings_ebpf_otlp_back(tmp_path):
    out = tmp_path / "sys.json"
    # --name-after 0: every process by pid, however few syscalls ebpf-otlp makes once attached
    run = agent_popen("syscalls", "--include-self", "--name-after", "0", "--duration", "2s",
                      "--interval", "1s", "-o", str(out))
    _, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    rows = json.loads(out.read_text())["stats"]
    assert any(r.get("pid") == run.pid for r in rows)


def test_a_command_name_of_the_full_15_bytes(tmp_path, mix_binary):
    """The kernel keeps 15 bytes of a name; the tool asks for that length, and it matches."""
    named = tmp_path / "abcdefghijklmnopqrst"
    shutil.copy(mix_binary, named)
    work = subprocess.Popen([str(named), str(N_GETPPID), str(M_OPENAT), str(K_NANOSLEEP), "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out = tmp_path / "sys.json"
    agent_around(work, "tracing syscalls", "syscalls", "--comm", "abcdefghijklmno",
                 "--interval", "1s", "-o", str(out))
    rows = {r["syscall"]: r for r in json.loads(out.read_text())["stats"]}
    assert {r["pid"] for r in rows.values()} == {work.pid}
    assert rows["getppid"]["calls"] == N_GETPPID and rows["nanosleep"]["calls"] == K_NANOSLEEP


def test_profile_by_pid_inside_a_pid_namespace(tmp_path):
    """ebpf-otlp in its own pid namespace (`unshare --pid --fork --mount-proc`): the pid the
    user gives is that namespace's, and the samples of the busy loop are found under it."""
    hot = compile_c("hot.c", tmp_path / "hot")
    out = tmp_path / "ns.pb.gz"
    script = (f'{hot} 30 & pid=$!; sleep 0.3; echo "inner pid $pid"; '
              f'{sys.executable} -m ebpf_otlp profile --pid $pid --duration 3s -o {out}; '
              'status=$?; kill $pid; exit $status')
    r = in_pid_namespace("sh", "-c", script)
    assert r.returncode == 0, r.stderr
    inner = int(r.stdout.split("inner pid ")[1].split()[0])
    pids = sample_pids(out)
    assert inner < 100 and set(pids) == {inner}
    prof = load_pprof(out)
    total = sum(s.value[0] for s in prof.sample)
    assert total > 0.8 * 99 * 3, total



def test_a_kernel_thread_is_said_to_be_one():
    """`profile --pid 2` is kthreadd on the host: its samples are kernel stacks only, and
    the run says so rather than looking like an idle process."""
    r = agent("profile", "--pid", "2", "--duration", "1s", "--top", "0", "-o", "/dev/null",
              "-f", "folded")
    assert r.returncode == 0, r.stderr
    assert "pid 2 is a kernel thread (kthreadd)" in r.stderr
