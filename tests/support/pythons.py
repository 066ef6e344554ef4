"""The CPythons on this machine (Debian's, and pyenv's 3.10-3.13) and a Python workload held
at known lines, for the Python-frames tests: unit ones read it from outside, live ones
sample it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

WORKLOAD = Path(__file__).parents[1] / "workloads" / "py_blocked.py"
PYENV = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
NAMES = ("3.10", "3.11", "3.11-debian", "3.12", "3.13")
VERSIONS = {"3.11-debian": "/usr/bin/python3.11"}
for _v in ("3.10", "3.11", "3.12", "3.13"):
    _found = sorted(PYENV.glob(f"{_v}.*/bin/python{_v}")) if PYENV.is_dir() else []
    if _found:
        VERSIONS[_v] = str(_found[0])


def interpreter(name: str) -> str:
    """The interpreter's path; skips (fails in CI, whose image has them all) when absent."""
    python = VERSIONS.get(name)
    if not python or not Path(python).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no CPython {name} (the image has it)")
        pytest.skip(f"no CPython {name}")
    return python


def marked_lines(path: Path = WORKLOAD) -> dict[str, int]:
    """`# LINE name` markers: name -> line number."""
    return {line.rsplit("# LINE ", 1)[1].strip(): n
            for n, line in enumerate(path.read_text().splitlines(), 1) if "# LINE " in line}


@pytest.fixture(params=NAMES)
def blocked(request):
    """The workload running on each CPython, held once it prints "ready"."""
    child = subprocess.Popen([interpreter(request.param), str(WORKLOAD)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        _until_reading_stdin(child.pid)
        yield child
    finally:
        child.stdin.close()
        child.wait(10)


def _until_reading_stdin(pid: int, timeout: float = 10) -> None:
    """"ready" comes one line before the read it blocks in: wait for the read itself
    (/proc/PID/syscall: read, fd 0), so the frames looked at are those of the blocked line."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
        if fields[:2] == ["0", "0x0"]:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} never blocked reading stdin")
