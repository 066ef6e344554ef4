"""What the benchmarks share: pinned workloads, tools attached around them, and the
kernel's and /proc's accounting of what each tool costs."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


WORK_CPU = os.cpu_count() - 1   # the workload has the last CPU; profilers run on CPU 0


def run_work(binary: Path, *args, wrapper: list[str] = ()) -> tuple[float, float]:
    """Run a workload that prints its own wall and CPU seconds, pinned to WORK_CPU."""
    out = subprocess.run(["taskset", "-c", str(WORK_CPU), *wrapper, str(binary), *map(str, args)],
                         capture_output=True, text=True, check=True)
    wall, cpu = map(float, out.stdout.split()[-2:])
    return wall, cpu


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in ns resolution (schedstat, not 10 ms ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            continue
    return total / 1e9


def proc_total_cpu_seconds(pid: int) -> float:
    """CPU time of the whole process including threads that have exited (a helper that
    finished its work, which proc_cpu_seconds no longer sees), in 10 ms ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bpf_fdinfo(pid: int, kind: str = "prog") -> list[dict[str, str]]:
    """/proc fdinfo of each BPF program (kind "prog") or map ("map") a process holds: ids and
    types, run_time_ns and run_cnt (bpf_stats_enabled) of programs, memlock of maps."""
    out = []
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:   # gone
        return out
    for fd in fds:
        try:
            if os.readlink(f"{fd_dir}/{fd}") != f"anon_inode:bpf-{kind}":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                pairs = (line.split(":", 1) for line in f if ":" in line)
                out.append({k.strip(): v.strip() for k, v in pairs})
        except OSError:
            continue
    return out


def bpf_prog_stats(pid: int, prog_type: int | None = None) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the BPF programs a process holds (bpf_stats_enabled),
    or over those of one type (7: perf_event, a sampler's)."""
    progs = [p for p in bpf_fdinfo(pid) if prog_type is None or int(p.get("prog_type", -1)) == prog_type]
    return (sum(int(p.get("run_time_ns", 0)) for p in progs),
            sum(int(p.get("run_cnt", 0)) for p in progs))


def holds_fd(pid: int, target: str) -> bool:
    """Whether a process holds a file descriptor on `target` (e.g. anon_inode:bpf-prog)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == target
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def holds_bpf_prog(pid: int) -> bool:
    return holds_fd(pid, "anon_inode:bpf-prog")


def bench_setup(doc: str, out: str, rounds: int,
                more: Callable[[argparse.ArgumentParser], None] = lambda ap: None):
    """The command line every bench shares (--rounds, --out and its own options), run as
    root; returns the parsed arguments and a scratch directory."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds")
    ap.add_argument("--out", default=str(ROOT / "docs" / out))
    more(ap)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    # The tool as installed (setup.sh byte-compiles it): no module compiled at each start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "ebpf_otlp")],
                   stdout=subprocess.DEVNULL, check=True)
    return args, Path(tempfile.mkdtemp(prefix="ebpf-otlp-bench-"))


def proc_rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])
    return out


class PeakRss:
    """A process's peak VmRSS / RssAnon / RssFile (KiB), sampled in a thread until stop()."""

    def __init__(self, pid: int, every_s: float = 0.2):
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(every_s):
                try:
                    for k, v in proc_rss_kib(pid).items():
                        self.peak[k] = max(self.peak.get(k, 0), v)
                except OSError:   # it exited
                    return

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        return self.peak


class Tool:
    """A profiler started before the work and stopped (SIGINT) after it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str],
                 ready: Callable[[int], bool] | None = None):
        self.name, self.argv, self.env = name, argv, env
        self.ready = ready or holds_bpf_prog   # BPF tools: once they hold a loaded program

    def start(self):
        self.t0 = time.time_ns()
        # SIGINT back to its default: a bench started in the background (nohup, cron)
        # inherits it ignored, and Python tools that inherit SIG_IGN never stop.
        self.proc = subprocess.Popen(["taskset", "-c", "0", *self.argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=self.env,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.err_lines: list[str] = []
        threading.Thread(target=lambda: self.err_lines.extend(self.proc.stderr), daemon=True).start()
        # BPF tools are ready once they hold a loaded program (they attach right after).
        deadline = time.monotonic() + 120
        while not self.ready(self.proc.pid):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: {''.join(self.err_lines)[-2000:]}")
            time.sleep(0.05)
        time.sleep(0.5)
        self.bpf_ready = bpf_prog_stats(self.proc.pid)
        self.cpu_ready = proc_cpu_seconds(self.proc.pid)
        self.t_ready = time.monotonic()
        self.rss = PeakRss(self.proc.pid)

    def stop(self) -> dict:
        steady_cpu = proc_cpu_seconds(self.proc.pid) - self.cpu_ready
        steady_wall = time.monotonic() - self.t_ready
        run_ns, run_cnt = (a - b for a, b in zip(bpf_prog_stats(self.proc.pid), self.bpf_ready))
        peak = self.rss.stop()
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=300)
        return {"steady_cpu_pct": 100 * steady_cpu / steady_wall, **peak, "stdout": out,
                "bpf_ns_per_run": run_ns / max(run_cnt, 1), "bpf_run_ns": run_ns,
                "bpf_cpu_pct": 100 * run_ns / 1e9 / steady_wall}




def median(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs) -> str:
    return f"{min(xs):.3f}–{max(xs):.3f}" if xs else "—"


def compile_c(source: Path, out: Path, *flags: str) -> Path:
    subprocess.run(["cc", "-O2", "-fno-omit-frame-pointer", *flags, "-o", str(out), str(source)],
                   check=True)
    return out


def peer_env() -> dict[str, str]:
    """BCC's own tools need the kernel headers the agent prepares (none match this kernel)."""
    sys.path.insert(0, str(ROOT / "src"))
    from ebpf_otlp.runtime.headers import use_headers
    use_headers()
    return dict(os.environ)


@contextlib.contextmanager
def bpf_stats_enabled():
    """kernel.bpf_stats_enabled=1 for the duration: run_time_ns per program."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    with open(path) as f:
        before = f.read().strip()
    with open(path, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(before)


def trace_net(args: list[str], port: int, out: Path) -> subprocess.Popen:
    """`ebpf-otlp trace-net` on one port, quiet, JSON lines into `out`; returned once it
    says it is tracing."""
    run = subprocess.Popen([str(ROOT / ".venv" / "bin" / "ebpf-otlp"), "trace-net", "-q", "--top", "0",
                            "--no-udp", "--port", str(port), "-o", str(out), *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in run.stderr:
        if "tracing TCP connections" in line:
            return run
    sys.exit(f"trace-net did not start: {run.communicate()}")


def render_report(lines: list[str], raw: dict[str, list[float]], unit: str, fmt: str) -> str:
    """A Markdown report ending with each configuration's raw rounds."""
    lines = [*lines, "", f"Raw rounds ({unit}):", "", "```",
             *(f"{name}: {' '.join(format(x, fmt) for x in xs)}" for name, xs in raw.items()), "```"]
    return "\n".join(lines) + "\n"


def write_report(lines: list[str], raw: dict[str, list[float]], unit: str, fmt: str, out: str,
                 keep_sections: bool = False) -> None:
    """Finish a Markdown report with each configuration's raw rounds, write and print it.
    keep_sections: the report is the file's head, and the `## ` sections other benches
    wrote below it stay."""
    report = render_report(lines, raw, unit, fmt)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    rest = ""
    if keep_sections and path.exists():
        old = path.read_text()
        at = old.find("\n## ")
        rest = "\n" + old[at:].lstrip("\n") if at >= 0 else ""
    path.write_text(report + rest)
    print(report)
