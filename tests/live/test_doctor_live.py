"""Live: doctor tries each capability for real and reports it; the runtime mounts tracefs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from conftest import agent, need, need_tool, wait_for_line

pytestmark = pytest.mark.live

TRACING = "/sys/kernel/tracing"
COMMANDS = {"profile", "profile --off-cpu", "syscalls", "trace-net", "memleak"}

# Run in a private mount namespace (unshare), so the unmount below is never the host's.
# It says when tracefs is gone and waits for the test to look at the host, then runs doctor.
IN_PRIVATE_NAMESPACE = f"""
umount {TRACING} 2>/dev/null
umount /sys/kernel/debug 2>/dev/null   # its tracing/ would stand in for tracefs
if [ -e {TRACING}/events ]; then echo "tracefs still mounted in the namespace" >&2; exit 97; fi
echo "tracefs unmounted" >&2
read _go
"$1" -m ebpf_otlp doctor --json
rc=$?
[ -e {TRACING}/events ] || {{ echo "doctor left tracefs unmounted" >&2; exit 98; }}
exit $rc
"""


def host_tracefs_mounted() -> bool:
    """Whether tracefs is mounted at /sys/kernel/tracing in the test's (the host's) namespace."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fields[4] == TRACING and fstype == "tracefs":
                return True
    return False


def test_doctor_mounts_tracefs_and_reports_what_works():
    unshare = need_tool("unshare")
    host_before = host_tracefs_mounted()
    run = subprocess.Popen([unshare, "--mount", "--propagation", "private", "sh", "-c",
                            IN_PRIVATE_NAMESPACE, "sh", sys.executable],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    seen: list[bool] = []
    done = threading.Event()

    def watch_host():
        while not done.wait(0.05):
            seen.append(host_tracefs_mounted())
    try:
        wait_for_line(run.stderr, "tracefs unmounted")
        # Unmounted in the namespace; the host keeps its mount.
        assert host_tracefs_mounted() == host_before
        if host_before:
            assert os.path.exists(f"{TRACING}/events")
        watcher = threading.Thread(target=watch_host, daemon=True)
        watcher.start()
        out, err = run.communicate("go\n", timeout=180)
        done.set()
        watcher.join()
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert seen and all(s == host_before for s in seen)
    assert host_tracefs_mounted() == host_before
    doc = json.loads(out)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["tracefs"]["ok"] and "mounted" in checks["tracefs"]["detail"]
    for name in ("btf", "privileges", "bcc", "kernel headers", "compile",
                 "perf event cpu-clock (software)", "kprobe program load", "uprobe attach",
                 "tracepoint attach", "raw tracepoint attach", "ring buffer", "map batch ops",
                 "tracepoint sched:sched_process_exec", "tracepoint sched:sched_switch",
                 "libc symbols", "cgroup v2"):
        assert checks[name]["ok"], checks[name]
    # kprobe attach must agree with the kernel: kprobe_events exists iff kprobes are built in.
    has_kprobes = os.path.exists(f"{TRACING}/kprobe_events")
    assert checks["kprobe attach"]["ok"] == has_kprobes, checks["kprobe attach"]
    if not has_kprobes:
        assert "CONFIG_KPROBES" in checks["kprobe attach"]["detail"]
    assert doc["commands"]["profile"].startswith("yes")
    assert doc["commands"]["syscalls"].startswith("yes")
    assert checks["TLS libraries"]["ok"] and "libssl.so.3" in checks["TLS libraries"]["detail"], checks
    assert "HTTPS through OpenSSL uprobes" in doc["commands"]["trace-net"]


def test_doctor_lists_only_commands_that_exist_and_exits_0_when_one_can_run():
    r = agent("doctor", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["commands"]) == COMMANDS
    assert doc["usable_commands"] == ["profile", "profile --off-cpu", "syscalls", "trace-net", "memleak"]
    assert doc["exit_status"] == 0
    # Each listed command is one the CLI has.
    top = agent("--help").stdout
    assert "profile" in top and "syscalls" in top
    assert "--off-cpu" in agent("profile", "--help").stdout


def test_doctor_exits_1_when_no_command_can_run():
    """As an unprivileged user nothing can load, so doctor must say so with its status."""
    setpriv = need_tool("setpriv")
    r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-m", "ebpf_otlp", "doctor", "--json"],
                       capture_output=True, text=True, timeout=180)
    if "ModuleNotFoundError" in r.stderr or "Permission denied" in r.stderr:
        need(f"the checkout is not readable by uid 65534: {r.stderr.strip().splitlines()[-1]}")
    doc = json.loads(r.stdout)
    assert not checks_ok(doc, "privileges")
    assert doc["usable_commands"] == [] and doc["exit_status"] == 1
    assert set(doc["commands"]) == COMMANDS
    assert all(v.startswith("no: needs ") and "privileges" in v for v in doc["commands"].values())
    assert r.returncode == 1, r.stderr


def checks_ok(doc: dict, name: str) -> bool:
    return any(c["name"] == name and c["ok"] for c in doc["checks"])


def test_doctor_table():
    r = agent("doctor")
    assert r.returncode == 0 and "works here?" in r.stdout and "profile --off-cpu" in r.stdout
    assert "usable here: profile, profile --off-cpu, syscalls" in r.stdout
    assert "memleak" in r.stdout


def test_fentry_refusal_is_not_blamed_on_privileges():
    """Run as root: BCC's "Need super-user privileges" text would be wrong, so it is not passed on."""
    doc = json.loads(agent("doctor", "--json").stdout)
    fentry = next(c for c in doc["checks"] if c["name"] == "fentry attach")
    if not fentry["ok"]:
        assert "super-user" not in fentry["detail"]


def test_tracefs_closed_to_a_capable_user_is_not_called_unmounted():
    """tracefs mounted with mode 0700: a user with CAP_BPF+CAP_PERFMON is told why it cannot read it."""
    setpriv = need_tool("setpriv")
    mode = os.stat(TRACING).st_mode & 0o777
    capable = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
               "--inh-caps=+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon", sys.executable,
               "-m", "ebpf_otlp"]
    os.chmod(TRACING, 0o700)   # root (every other test) reads through it; uid 65534 cannot
    try:
        net = subprocess.run([*capable, "trace-net", "--duration", "1s"], capture_output=True,
                             text=True, timeout=120)
        doctor = subprocess.run([*capable, "doctor", "--json"], capture_output=True, text=True,
                                timeout=180)
    finally:
        os.chmod(TRACING, mode)
    if "ModuleNotFoundError" in net.stderr or "Permission denied: '" in net.stderr:
        need(f"the checkout is not readable by uid 65534: {net.stderr.strip().splitlines()[-1]}")
    assert net.returncode == 2, net.stderr
    assert "not readable as uid 65534 (mode 700)" in net.stderr and "not mounted" not in net.stderr
    assert len(net.stderr.strip().splitlines()) == 1, net.stderr
    tracefs = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "tracefs")
    assert not tracefs["ok"] and "not readable" in tracefs["detail"], tracefs
