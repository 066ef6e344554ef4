#!/usr/bin/env python3
"""Agent soak: `ebpf-otlp agent` with profile + syscalls + trace-net for an hour on a busy machine.

The machine is kept busy, locally and boundedly (all network traffic on 127.0.0.1):
  - a CPU burner at about 50 % of one core (busy 5 ms, sleep 5 ms);
  - process churn: a short-lived `/bin/true` every 50 ms (about 20 processes/s);
  - TCP: a local server and a client making about 100 short connections/s on loopback
    (connect, send 16 bytes, read the reply, close), which with the churn gives a syscall mix.
The agent runs with `--window 60s --interval 10s --duration <minutes>m`, files mode (no
collector: nothing leaves the machine), [agent] keep = 10 in a scratch directory.
Every 30 s the agent process is sampled: RSS (VmRSS, RssAnon), open fds, CPU seconds
(schedstat, every thread), threads; and the output directory's size and entries.
At the end: the agent's summary line (losses), RSS and fds after a 5-minute warm-up, agent
CPU % of one core, windows written, the workload rates achieved. Writes a Markdown report.

Run as root:  .venv/bin/python bench/agent_soak.py --minutes 60 --out docs/performance-agent.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, median, proc_cpu_seconds, proc_rss_kib  # noqa: E402

AGENT = ROOT / ".venv" / "bin" / "ebpf-otlp"
PORT = 47150
SAMPLE_S = 30
WARMUP_S = 300


# -- load generators: this file run with --load KIND COUNTFILE --------------------------

def _counter(path: str):
    """A count written to `path` every second and at SIGTERM."""
    n = [0]
    stop = threading.Event()

    def flush():
        with open(path + ".tmp", "w") as f:
            f.write(str(n[0]))
        os.replace(path + ".tmp", path)

    def loop():
        while not stop.wait(1):
            flush()

    threading.Thread(target=loop, daemon=True).start()

    def on_term(*_):
        stop.set()
        flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return n


def load_burn(path: str) -> None:
    """About half of one core: busy 5 ms, asleep 5 ms."""
    n = _counter(path)
    x = 0
    while True:
        end = time.perf_counter() + 0.005
        while time.perf_counter() < end:
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        n[0] += 1
        time.sleep(0.005)


def load_churn(path: str) -> None:
    """A short-lived process every 50 ms."""
    n = _counter(path)
    nxt = time.monotonic()
    while True:
        subprocess.run(["/bin/true"])
        n[0] += 1
        nxt += 0.05
        time.sleep(max(0.0, nxt - time.monotonic()))


def load_tcp(path: str) -> None:
    """A loopback server (thread) and a client making about 100 short connections/s."""
    n = _counter(path)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", PORT))
    srv.listen(128)

    def serve():
        while True:
            c, _ = srv.accept()
            try:
                c.recv(16)
                c.sendall(b"x" * 16)
            except OSError:
                pass
            c.close()   # the server closes first: TIME_WAIT on its side

    threading.Thread(target=serve, daemon=True).start()
    nxt = time.monotonic()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=2) as c:
                c.sendall(b"y" * 16)
                c.recv(16)
                c.recv(16)   # the server's close
            n[0] += 1
        except OSError:
            pass
        nxt += 0.01
        time.sleep(max(0.0, nxt - time.monotonic()))


LOADS = {"burn": load_burn, "churn": load_churn, "tcp": load_tcp}


# -- the soak -------------------------------------------------------------------------

def read_int(path: str) -> int:
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return 0


def dir_usage(root: Path) -> tuple[int, int]:
    """(bytes, entries at the top level) of the agent's output directory."""
    size = entries = 0
    try:
        entries = len(os.listdir(root))
    except OSError:
        return 0, 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                size += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return size, entries


def sample(pid: int, out_dir: Path, t0: float) -> dict:
    rss = proc_rss_kib(pid)
    with open(f"/proc/{pid}/status") as f:
        threads = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
    size, entries = dir_usage(out_dir)
    return {"t": time.monotonic() - t0, "rss": rss.get("VmRSS", 0), "anon": rss.get("RssAnon", 0),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "cpu": proc_cpu_seconds(pid),
            "threads": threads, "out_bytes": size, "out_entries": entries}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--out", default=str(ROOT / "docs" / "performance-agent.md"))
    ap.add_argument("--warmup-minutes", type=float, default=WARMUP_S / 60,
                    help="left out of the flatness and steady CPU figures (default 5)")
    ap.add_argument("--captures", default="profile,syscalls,trace_net",
                    help="comma-separated capture tables to enable (default all three)")
    ap.add_argument("--no-python", action="store_true",
                    help="[profile] python = false: the cost of walking the load's Python frames")
    ap.add_argument("--load", nargs=2, metavar=("KIND", "COUNTFILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        LOADS[args.load[0]](args.load[1])
        return 0
    if os.geteuid() != 0:
        sys.exit("bench: run as root")

    scratch = Path(tempfile.mkdtemp(prefix="ebpf-otlp-soak-"))
    out_dir = scratch / "agent"
    cfg = scratch / "agent.toml"
    tables = {"profile": "[profile]\nhz = 99\n" + ("python = false\n" if args.no_python else ""), "syscalls": "[syscalls]\n", "trace_net": "[trace_net]\n"}
    captures = [c.strip() for c in args.captures.split(",") if c.strip()]
    if not captures or any(c not in tables for c in captures):
        sys.exit(f"--captures: a comma-separated subset of {', '.join(tables)}")
    cfg.write_text("".join(tables[c] + "\n" for c in captures) +
                   f'[agent]\noutput_dir = "{out_dir}"\nkeep = 10\n')
    duration_s = args.minutes * 60
    duration_arg = f"{args.minutes:g}m"
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()

    # SIGINT/SIGTERM back to their defaults: started under nohup they may be inherited ignored.
    def child_signals():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    loads = {}
    for kind in LOADS:
        loads[kind] = subprocess.Popen([sys.executable, __file__, "--load", kind, str(scratch / f"{kind}.count")],
                                       preexec_fn=child_signals)
    time.sleep(2)
    for kind, p in loads.items():
        if p.poll() is not None:
            sys.exit(f"load {kind} exited: {p.returncode}")
    counts0 = {k: read_int(str(scratch / f"{k}.count")) for k in LOADS}
    tl0 = time.monotonic()

    argv = [str(AGENT), "agent", "--config", str(cfg), "--window", "60s", "--interval", "10s",
            "--duration", duration_arg]
    print("+", " ".join(argv), flush=True)
    agent = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=child_signals)
    err_lines: list[str] = []
    out_lines: list[str] = []
    threading.Thread(target=lambda: err_lines.extend(agent.stderr), daemon=True).start()
    threading.Thread(target=lambda: out_lines.extend(agent.stdout), daemon=True).start()
    t0 = time.monotonic()
    samples: list[dict] = []
    loads_seen: list[str] = []
    usage = None   # the agent's rusage at exit: its CPU time, exit flush included

    def reap(block: bool = False) -> bool:
        nonlocal usage
        if agent.returncode is not None:
            return True
        pid, status, ru = os.wait4(agent.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return False
        usage, agent.returncode = ru, os.waitstatus_to_exitcode(status)
        return True

    try:
        while not reap():
            try:
                s = sample(agent.pid, out_dir, t0)
            except (OSError, StopIteration):
                continue
            samples.append(s)
            if len(samples) % 10 == 1:
                loads_seen.append(loadavg())
            print(f"{s['t']:7.0f}s rss {s['rss'] / 1024:6.1f} MB anon {s['anon'] / 1024:6.1f} MB "
                  f"fds {s['fds']:4d} thr {s['threads']:3d} cpu {s['cpu']:8.2f}s "
                  f"out {s['out_entries']:3d} {s['out_bytes'] / 1e6:6.1f} MB  load {loadavg()}",
                  flush=True)
            deadline = time.monotonic() + SAMPLE_S
            while not reap() and time.monotonic() < deadline:
                time.sleep(0.5)
    finally:
        if not reap():
            agent.send_signal(signal.SIGTERM)
            reap(block=True)
        wall = time.monotonic() - t0
        tl = time.monotonic() - tl0
        for p in loads.values():
            p.send_signal(signal.SIGTERM)
        for p in loads.values():
            p.wait(timeout=30)
    time.sleep(1)
    # The last sample before the agent exited carries its CPU; the exit flush is after it.
    counts = {k: read_int(str(scratch / f"{k}.count")) - counts0[k] for k in LOADS}
    rates = {k: counts[k] / tl for k in LOADS}
    size, entries = dir_usage(out_dir)
    summary = next((l.strip() for l in reversed(out_lines) if l.startswith("agent:")), "(no summary line)")
    cpu_total = usage.ru_utime + usage.ru_stime if usage else float("nan")
    report = build_report(args, samples, summary, rates, err_lines, agent.returncode, wall,
                          started, load_start, loads_seen, size, entries, cpu_total,
                          usage.ru_maxrss / 1024 if usage else float("nan"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)
    print(f"scratch directory (agent config and its last windows) left in {scratch}")
    return 0


def captures_md(captures: str) -> str:
    names = {"profile": "`[profile] hz = 99`", "syscalls": "`[syscalls]`", "trace_net": "`[trace_net]`"}
    return ", ".join(names[c.strip()] for c in captures.split(",") if c.strip())


def cpu_pct(a: dict, b: dict) -> float:
    return 100 * (b["cpu"] - a["cpu"]) / max(b["t"] - a["t"], 1e-9)


def build_report(args, samples, summary, rates, err_lines, rc, wall, started, load_start,
                 loads_seen, out_bytes, out_entries, cpu_total, maxrss_mb) -> str:
    warmup_s = args.warmup_minutes * 60
    steady = [s for s in samples if s["t"] >= warmup_s] or samples
    rss = [s["rss"] / 1024 for s in steady]
    anon = [s["anon"] / 1024 for s in steady]
    fds = [s["fds"] for s in steady]
    cpu_all = 100 * cpu_total / wall   # rusage at exit: start-up and the exit flush included
    cpu_steady = cpu_pct(steady[0], steady[-1]) if len(steady) > 1 else float("nan")
    rss_ratio = max(rss) / min(rss) if rss else float("nan")
    # Growth, apart from the swings of each window cut: median of the first and last 10 minutes.
    first = [s["rss"] / 1024 for s in steady if s["t"] < steady[0]["t"] + 600]
    last = [s["rss"] / 1024 for s in steady if s["t"] > steady[-1]["t"] - 600]
    trend = median(last) / median(first) - 1 if first and last else float("nan")
    anon_ratio = max(anon) / min(anon) if anon else float("nan")
    m = re.search(r"agent: (\d+) window", summary)
    windows = int(m.group(1)) if m else None
    losses = summary.split("losses:", 1)[1].strip() if "losses:" in summary else "?"
    ok = lambda b: "met" if b else "**not met**"  # noqa: E731
    uname = platform.uname()
    with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")

    lines = [
        "# Agent soak: memory, file descriptors, CPU and losses over time",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `bench/agent_soak.py --minutes {args.minutes:g}`; "
        f"kernel {uname.release}, {os.cpu_count()} CPUs ({model}); load average "
        f"(1/5/15 min) {load_start} at the start, {loadavg()} at the end "
        f"(samples during the run: {', '.join(loads_seen) or '—'}). Other benchmarks and test "
        "suites may have run on the machine meanwhile.",
        "",
        "## Setup",
        "",
        f"- Agent: `ebpf-otlp agent --config agent.toml --window 60s --interval 10s --duration "
        f"{args.minutes:g}m`, with {captures_md(args.captures)} (defaults: every "
        "process) and `[agent] output_dir` in a scratch directory, `keep = 10` (files mode, no "
        "collector). Not pinned.",
        "- Load (all local, network on 127.0.0.1 only), started 2 s before the agent: "
        f"a CPU burner at about 50 % of one core ({rates['burn'] / 100:.0%} of its 100 cycles/s achieved), "
        f"process churn ({rates['churn']:.1f} `/bin/true` processes/s, target 20), "
        f"loopback TCP ({rates['tcp']:.1f} short connections/s, target 100: connect, 16 bytes each way, close).",
        f"- Sampled every {SAMPLE_S} s: VmRSS and RssAnon (/proc/PID/status), open fds "
        "(/proc/PID/fd), CPU seconds of every thread (schedstat), threads, the output directory. "
        f"Warm-up: the first {args.warmup_minutes:g} minutes.",
        "",
        "## Results",
        "",
        "| | measured | target | |",
        "|---|---|---|---|",
        f"| RSS after warm-up, min / median / max | {min(rss):.1f} / {median(rss):.1f} / {max(rss):.1f} MB "
        f"(max/min {rss_ratio:.3f}) | flat within 10 % | {ok(rss_ratio <= 1.10)} |",
        f"| RSS trend after warm-up: median of the last 10 min vs the first 10 min | "
        f"{median(first):.1f} → {median(last):.1f} MB ({trend:+.1%}) | no growth | {ok(abs(trend) <= 0.10)} |",
        f"| anonymous RSS after warm-up, min / median / max | {min(anon):.1f} / {median(anon):.1f} / "
        f"{max(anon):.1f} MB (max/min {anon_ratio:.3f}) | flat within 10 % | {ok(anon_ratio <= 1.10)} |",
        f"| open fds after warm-up, min / max | {min(fds)} / {max(fds)} | flat | {ok(max(fds) - min(fds) <= max(2, 0.1 * min(fds)))} |",
        f"| agent CPU, % of one core, whole run (rusage at exit: start-up and exit flush included) | "
        f"{cpu_all:.2f} % ({cpu_total:.1f} s in {wall:.0f} s) | ≤ 1 % | {ok(cpu_all <= 1)} |",
        f"| agent CPU, % of one core, after warm-up (schedstat) | {cpu_steady:.2f} % | ≤ 1 % | {ok(cpu_steady <= 1)} |",
        f"| peak RSS over the whole run (rusage ru_maxrss) | {maxrss_mb:.1f} MB | | |",
        f"| losses (agent's summary) | {losses} | none | {ok(losses == 'none')} |",
        f"| windows written | {windows} | {args.minutes:g} | |",
        f"| threads | {min(s['threads'] for s in samples)}–{max(s['threads'] for s in samples)} | | |",
        f"| output directory at the end | {out_entries} entries, {out_bytes / 1e6:.1f} MB | ≤ 10 windows | "
        f"{ok(out_entries <= 10)} |",
        "",
        f"Agent run: {wall / 60:.1f} min, exit status {rc}. Its summary line:",
        "",
        "```",
        summary,
        "```",
    ]
    errs = [l.rstrip() for l in err_lines if l.strip()]
    if errs:
        lines += ["", "Its stderr:", "", "```", *errs[-15:], "```"]
    lines += ["", "## Samples every 5 minutes", "",
              "| time | RSS MB | anon MB | fds | threads | CPU % (interval) | output dir |",
              "|---|---|---|---|---|---|---|"]
    prev = samples[0]
    for s in samples:
        if s is samples[0] or s is samples[-1] or int(s["t"] // 300) > int(prev["t"] // 300):
            c = f"{cpu_pct(prev, s):.2f}" if s is not prev else "—"
            lines.append(f"| {s['t'] / 60:.1f} min | {s['rss'] / 1024:.1f} | {s['anon'] / 1024:.1f} | "
                         f"{s['fds']} | {s['threads']} | {c} | {s['out_entries']} entries, "
                         f"{s['out_bytes'] / 1e6:.1f} MB |")
            prev = s
    lines += ["", "## Reproduce", "", "```",
              f"sudo .venv/bin/python bench/agent_soak.py --minutes {args.minutes:g} --out docs/performance-agent.md"
              + ("" if args.captures == "profile,syscalls,trace_net" else f" --captures {args.captures}")
              + ("" if args.warmup_minutes * 60 == WARMUP_S else f" --warmup-minutes {args.warmup_minutes:g}"),
              "```", "",
              "Every sample is printed on stdout as it is taken; the agent's stderr ends up in the report."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
