"""Bad input: one line naming the problem, exit status 2, no traceback. No BPF is loaded."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, agent


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("ebpf-otlp: error: "), lines[0]   # one prefix for every error
    for n in needles:
        assert n in lines[0], lines[0]


def free_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("args,needles", [
    (["--hz", "0"], ["--hz", "outside 1.."]),
    (["--hz", "100000000"], ["--hz", "perf_event_max_sample_rate"]),
    (["--duration", "soon"], ["bad duration 'soon'"]),
    (["--duration", "0s"], ["more than zero"]),
    (["--pid", "1", "--all"], ["exclude each other"]),
    (["-U", "-K"], ["exclude each other"]),
    (["-o", "/nonexistent-dir/x.pb.gz"], ["does not exist"]),
    (["-o", "out.unknown"], ["cannot tell the format"]),
    (["--event", "bogus"], ["--event"]),
    (["--off-cpu", "--hz", "49"], ["--hz samples on-CPU stacks"]),
    (["--off-cpu", "--min-block", "0"], ["more than zero"]),
    (["--off-cpu", "--switch-budget", "lots"], ["bad count 'lots'"]),
    (["--event", "page-faults", "--hz", "49"], ["every --period faults"]),
    (["--period", "10"], ["--period goes with --event page-faults"]),
    (["--event", "page-faults", "--period", "0"], ["--period"]),
    (["--pid", "1", "--", "true"], ["exclude each other"]),
])
def test_profile_bad_input(args, needles):
    assert_one_line_error(agent("profile", *args), *needles)


def test_missing_pid():
    pid = free_pid()
    assert_one_line_error(agent("profile", "--pid", str(pid)), f"no process with pid {pid}")


def test_unwritable_output(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    (d / "x.pb.gz").mkdir()
    assert_one_line_error(agent("profile", "-o", str(d / "x.pb.gz")), "is a directory")


def test_not_root():
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and setpriv to drop privileges")
    tmp_path = Path(tempfile.mkdtemp(prefix="ebpf-otlp-nobody-"))
    os.chmod(tmp_path, 0o777)
    r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                        "--inh-caps=-all", sys.executable, "-m", "ebpf_otlp", "profile",
                        "-d", "1s", "-o", str(tmp_path / "x.pb.gz")],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert_one_line_error(r, "CAP_BPF", "sudo")


def test_bcc_missing(tmp_path):
    code = "import sys; sys.modules['bcc'] = None; from ebpf_otlp.cli import main; main()"
    r = subprocess.run([sys.executable, "-c", code, "profile", "-d", "1s",
                        "-o", str(tmp_path / "x.pb.gz")], capture_output=True, text=True)
    if os.geteuid() != 0:
        pytest.skip("not root: the privilege check comes first")
    assert_one_line_error(r, "python3-bpfcc")


def test_help_and_version():
    r = agent("--help")
    assert r.returncode == 0 and "profile" in r.stdout and "doctor" in r.stdout
    assert agent("--version").stdout.strip().endswith("0.1.0")


@pytest.mark.parametrize("args,env,needles", [
    (["--otlp-endpoint", "collector:4317"], {}, ["malformed OTLP endpoint"]),
    (["--otlp-endpoint", "http://c:4317", "--otlp-protocol", "thrift"], {}, ["--otlp-protocol"]),
    ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
     ["unknown OTLP protocol"]),
    (["--otlp-endpoint", "https://c:4317", "--otlp-ca-file", "/nonexistent.pem"], {},
     ["cannot read CA file"]),
])
def test_otlp_bad_input(args, env, needles):
    r = agent("profile", "-d", "1s", *args, env={**os.environ, **env})
    assert_one_line_error(r, *needles)


def test_flush_spool_without_collector(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    r = agent("flush-spool", "--spool-dir", str(tmp_path), env=env)
    assert_one_line_error(r, "no collector named")


@pytest.mark.parametrize("args,needles", [
    (["--syscall", "opnat"], ["unknown syscall 'opnat'", "did you mean openat"]),
    (["--interval", "0"], ["bad duration"]),
    (["--interval", "often"], ["bad duration 'often'"]),
    (["--duration", "-5s"], ["bad duration"]),
    (["--by", "thread"], ["--by"]),
    (["-o", "/nonexistent-dir/s.json"], ["does not exist"]),
])
def test_syscalls_bad_input(args, needles):
    assert_one_line_error(agent("syscalls", *args), *needles)


def test_syscalls_gone_pid():
    pid = free_pid()
    assert_one_line_error(agent("syscalls", "--pid", str(pid)), f"no process with pid {pid}")


@pytest.mark.parametrize("command,args,needles", [
    ("profile", ["-p", "1,x"], ["'x' is not a pid"]),
    ("syscalls", ["-p", "1,0"], ["'0' is not a pid"]),
    ("memleak", ["--pid", "2"], ["pid 2 is a kernel thread (kthreadd)", "no heap"]),
    ("memleak", ["--comm", "no-such-name"], ["no process named 'no-such-name'"]),
    ("profile", ["--comm", "abcdefghijklmnop"], ["use 'abcdefghijklmno'"]),
    ("trace-net", ["--comm", ""], ["matches no process"]),
    ("profile", ["--comm", "a[/b]c", "-p", "1"], ["exclude each other"]),
    ("agent", ["--otlp-header", "no-equals-sign"], ["malformed OTLP header"]),
    ("trace-net", ["-q", "--lines"], ["-q/--quiet and --lines contradict"]),
    ("trace-net", ["--protocols", "http,ftp"], ["--protocols", "a list of http, grpc, postgres, mysql, redis"]),
])
def test_targets_and_headers_bad_input(command, args, needles):
    assert_one_line_error(agent(command, *args), *needles)


def test_one_way_to_name_targets_and_outputs():
    """perf's, BCC's and strace's habits in every command: -p, --comm, --include-self, and
    the whole list of -o formats; defaults are shown."""
    for command in ("profile", "syscalls", "trace-net"):
        text = " ".join(agent(command, "--help").stdout.split())
        for flag in ("PID[,PID...]", "--comm", "--include-self", "--top", "(0: none)"):
            assert flag in text, (command, flag)
    for command in ("profile", "memleak"):
        text = " ".join(agent(command, "--help").stdout.split())
        assert all(ext in text for ext in (".pb.gz", ".folded", ".svg", ".json", ".otlp.pb")), command
        assert "[default: 10s]" in text or "[default: 99]" in text
    assert "--comm" in agent("memleak", "--help").stdout
    assert "--output-dir" in agent("snapshot", "--help").stdout
    assert "local files only" not in agent("flush-spool", "--help").stdout


def test_snapshot_output_dir_is_the_output_root(tmp_path):
    r = agent("snapshot", "--output-dir", str(tmp_path / "b[x]"), "--print-config")
    assert r.returncode == 0 and f'output_root = "{tmp_path}/b[x]"' in r.stdout
