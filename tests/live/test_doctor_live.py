"""Live: doctor tries each capability for real and reports it; the runtime mounts tracefs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import agent

pytestmark = pytest.mark.live


def test_doctor_mounts_tracefs_and_reports_what_works():
    # Take tracefs away, as these machines boot: the agent must mount it itself.
    subprocess.run(["umount", "/sys/kernel/tracing"], capture_output=True)
    assert not os.path.exists("/sys/kernel/tracing/events")
    r = agent("doctor", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert os.path.exists("/sys/kernel/tracing/events")
    assert checks["tracefs"]["ok"] and "mounted" in checks["tracefs"]["detail"]
    for name in ("btf", "privileges", "bcc", "kernel headers", "compile",
                 "perf event cpu-clock (software)", "kprobe program load", "uprobe attach",
                 "tracepoint attach", "raw tracepoint attach", "ring buffer", "map batch ops",
                 "libc symbols", "cgroup v2"):
        assert checks[name]["ok"], checks[name]
    # kprobe attach must agree with the kernel: kprobe_events exists iff kprobes are built in.
    has_kprobes = os.path.exists("/sys/kernel/tracing/kprobe_events")
    assert checks["kprobe attach"]["ok"] == has_kprobes, checks["kprobe attach"]
    if not has_kprobes:
        assert "CONFIG_KPROBES" in checks["kprobe attach"]["detail"]
        assert "tracepoints" in doc["commands"]["trace-net"]
    assert doc["commands"]["profile"].startswith("yes")
    assert doc["commands"]["syscalls"].startswith("yes")


def test_doctor_table():
    r = agent("doctor")
    assert r.returncode == 0 and "works here?" in r.stdout and "profile" in r.stdout
