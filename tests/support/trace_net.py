"""`ebpf-otlp trace-net` around a live test's traffic, on one port: its records by type."""

from __future__ import annotations

import contextlib
import json
import signal
import time

from conftest import agent_popen, wait_for_line


@contextlib.contextmanager
def tracing(tmp_path, port: int, *args):
    """trace-net on one port; afterwards `got` holds its request (http) and database
    statement (db) records, its stdout and stderr."""
    out = tmp_path / "net.jsonl"
    run = agent_popen("trace-net", "-q", "-o", str(out), "--port", str(port), *args)
    got: dict = {}
    try:
        got["notice"] = wait_for_line(run.stderr, "tracing TCP connections")[-1]
        yield got
        time.sleep(0.3)   # the last answers' calls reach the next drain
    finally:
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    got.update(http=[r for r in records if r["type"] == "http"], db=[r for r in records if r["type"] == "db"],
               tcp=[r for r in records if r["type"] == "tcp"], stdout=stdout, stderr=stderr)
