"""Shared test helpers: building workloads, running the CLI, and the live-test gate.

Live tests need root, BCC and a kernel that allows BPF. Where that is impossible they
skip and say why; in CI (CI=true) such a skip is a failure instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = Path(__file__).resolve().parent / "workloads"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _bpf_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "live BPF tests need root"
    try:
        import bcc  # noqa: F401  (only whether it imports)
    except ImportError:
        return "BCC (python3-bpfcc) is not importable"
    if not os.path.exists("/sys/kernel/btf/vmlinux") and not os.path.exists("/proc/kallsyms"):
        return "no kernel symbol information"
    return None


def need(condition_reason: str | None) -> None:
    """Skip (or, in CI, fail) with the reason when a live prerequisite is missing."""
    if condition_reason:
        if IN_CI:
            pytest.fail(f"live test cannot run in CI: {condition_reason}")
        pytest.skip(condition_reason)


def need_tool(name: str, *candidates: str) -> str:
    for c in (*candidates, shutil.which(name)):
        if c and os.access(c, os.X_OK):
            return c
    need(f"{name} is not installed (make setup-test installs it)")
    return ""


@pytest.fixture(autouse=True)
def _live_gate(request):
    if request.node.get_closest_marker("live"):
        need(_bpf_unavailable())


def compile_c(source: str, out: Path, *flags: str) -> Path:
    """Build a test workload; -O0 -fno-omit-frame-pointer keeps every frame on the stack."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        need("no C compiler")
    subprocess.run([cc, "-O0", "-g0", "-fno-omit-frame-pointer", *flags, "-o", str(out),
                    str(WORKLOADS / source)], check=True)
    return out


CACHE_DAMAGE = ("garbage", "truncated", "flipped", "empty", "version")


def damaged(blob: bytes, kind: str) -> bytes:
    """A build-ID cache entry spoilt one way of CACHE_DAMAGE (each must be read as a miss)."""
    return {"garbage": b"not a cache entry at all" * 3,
            "truncated": blob[: len(blob) // 2],
            "flipped": blob[:-5] + bytes([blob[-5] ^ 0x40]) + blob[-4:],
            "empty": b"",
            "version": blob[:8] + b"\x63" + blob[9:]}[kind]


def agent(*args: str, timeout: float = 180, input: str | None = None, **kw) -> subprocess.CompletedProcess:
    """Run `ebpf-otlp ARGS` as users do (the module, so the venv's Python is used). One
    that hangs fails with where it hung: its threads' Python and kernel stacks, and the
    state of what it launched."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    kw["env"] = {**(kw.get("env") or os.environ), "PYTHONFAULTHANDLER": "1"}
    if input is not None:
        kw["stdin"] = subprocess.PIPE
    argv = [sys.executable, "-m", "ebpf_otlp", *args]
    with subprocess.Popen(argv, **kw) as run:
        try:
            out, err = run.communicate(input, timeout=timeout)
            where = None
        except subprocess.TimeoutExpired:
            where = _where_hung(run.pid)
            children = _children(run.pid)
            run.send_signal(signal.SIGABRT)   # faulthandler prints every thread's stack
            try:
                out, err = run.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                # What it launched (held stopped, it may be) keeps the pipes open: it goes too.
                for child in children:
                    with contextlib.suppress(OSError):
                        os.kill(child, signal.SIGKILL)
                run.kill()
                try:
                    out, err = run.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    out, err = "", "(unread: its pipes stayed open)"
    if where is not None:
        pytest.fail(f"`ebpf-otlp {' '.join(args)}` hung for {timeout} s\n{where}\n"
                    f"its stderr:\n{err}", pytrace=False)
    return subprocess.CompletedProcess(argv, run.returncode, out, err)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _where_hung(pid: int) -> str:
    """Each thread of `pid` and of its children: state, kernel wait channel and stack."""
    lines = []
    for proc in [str(pid), *Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]:
        try:
            cmd = Path(f"/proc/{proc}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            lines.append(f"process {proc}: {cmd}")
            for task in sorted(Path(f"/proc/{proc}/task").iterdir()):
                stat = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                comm = (task / "comm").read_text().strip()
                wchan = (task / "wchan").read_text()
                stack = (task / "stack").read_text().strip().replace("\n", " | ")
                lines.append(f"  thread {task.name} {comm} state {stat} wchan {wchan}: {stack}")
        except OSError as e:
            lines.append(f"  ({e})")
    return "\n".join(lines)


def agent_popen(*args: str, **kw) -> subprocess.Popen:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    return subprocess.Popen([sys.executable, "-m", "ebpf_otlp", *args], **kw)


def agent_around(work: subprocess.Popen, ready: str, *args: str) -> tuple[str, str, str]:
    """Attach the agent to a workload that waits on stdin: start `ebpf-otlp ARGS`, wait for
    its `ready` notice, release the workload and let it finish, then stop the agent with
    SIGINT as a user would. Returns (workload stdout, agent stdout, agent stderr)."""
    import signal

    run = agent_popen(*args)
    try:
        wait_for_line(run.stderr, ready)
        work_out, _ = work.communicate("g", timeout=60)
        assert work.returncode == 0, f"workload failed with {work.returncode}"
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
        work.kill()
    assert run.returncode == 0, err
    return work_out, out, err


def in_pid_namespace(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ARGV as pid 1 of a new pid namespace with its own /proc (`unshare --pid --fork
    --mount-proc`), as in a container: the pids given and read in there are its own."""
    unshare = need_tool("unshare")
    return subprocess.run([unshare, "--pid", "--fork", "--mount-proc", *argv], capture_output=True,
                          text=True, timeout=timeout, env=os.environ)


def wait_for_line(stream, needle: str, timeout: float = 60) -> list[str]:
    """Read lines until one contains `needle` (e.g. the 'sampling ...' notice on attach)."""
    import selectors
    import time

    seen: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=0.5):
            line = stream.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return seen
    raise AssertionError(f"never saw {needle!r}; got: {''.join(seen)[-2000:]}")


# A container as the runtimes and the kubelet lay it out in cgroups, made for real.
FAKE_CONTAINER_ID = "c0ffee" + "0123456789abcdef" * 3 + "abcdef0123"
FAKE_POD_UID = "5e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"


def _cgroup_root() -> Path | None:
    """A hierarchy a process can be moved into: cgroup v2 (pure or hybrid), else v1 pids."""
    mounts = {line.split()[1]: line.split()[2] for line in open("/proc/mounts")}
    for path in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if mounts.get(path) == "cgroup2":
            return Path(path)
    return Path("/sys/fs/cgroup/pids") if os.path.isdir("/sys/fs/cgroup/pids") else None


class in_container:
    """Move a process into kubepods-…-pod<uid>.slice/cri-containerd-<id>.scope for the
    duration, so the agent sees it as a Kubernetes container; undone afterwards."""

    def __init__(self, pid: int):
        self.pid = pid
        root = _cgroup_root()
        need(None if root else "no writable cgroup hierarchy")
        self.root = root
        self.top = root / "ebpf-otlp-test.slice"
        self.leaf = (self.top / f"kubepods-burstable-pod{FAKE_POD_UID.replace('-', '_')}.slice"
                     / f"cri-containerd-{FAKE_CONTAINER_ID}.scope")

    def __enter__(self):
        self.leaf.mkdir(parents=True, exist_ok=True)
        (self.leaf / "cgroup.procs").write_text(str(self.pid))
        return self

    def __exit__(self, *exc):
        try:
            (self.root / "cgroup.procs").write_text(str(self.pid))
        except OSError:
            pass   # it exited
        for d in (self.leaf, self.leaf.parent, self.top):
            try:
                d.rmdir()
            except OSError:
                pass


@pytest.fixture(scope="session")
def mix_binary(tmp_path_factory):
    """The syscall mix (support/syscall_mix.py). Static: no dynamic loader, so strace -c
    sees exactly the program's own syscalls."""
    return compile_c("syscall_mix.c", tmp_path_factory.mktemp("mix") / "syscall_mix", "-static",
                     "-pthread")
