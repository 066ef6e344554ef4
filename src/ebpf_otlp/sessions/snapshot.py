"""`ebpf-otlp snapshot`: what the config names (profile, off-CPU, syscalls, trace-net, memleak),
captured at once for one duration, written as one timestamped bundle of files, for cron.

A bundle is built under a temporary name in the output root and renamed when complete,
so a run killed at any point leaves no bundle under a final name; one run at a time holds
the root's lock (a second exits 75, EX_TEMPFAIL); retention then removes old bundles,
never anything it did not create.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import tarfile
import time
from dataclasses import dataclass

from rich.console import Console

from ebpf_otlp import __version__, config as cfg
from ebpf_otlp.errors import AgentError
from ebpf_otlp.export import losses
from ebpf_otlp.export.console import text_console
from ebpf_otlp.export.output_stage import FileTarget, OutputStage
from ebpf_otlp.engine.run import capture
from ebpf_otlp.signals import registry
from ebpf_otlp.signals.processor import Processor
from ebpf_otlp.runtime.privileges import missing_privileges

EX_TEMPFAIL = 75
LOCK_NAME = ".ebpf-otlp-snapshot.lock"
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
MADE_BY = "ebpf-otlp snapshot"


class Busy(AgentError):
    exit_code = EX_TEMPFAIL


@dataclass
class Part:
    """One capture of the bundle: its processor and the files it writes."""
    name: str                # its signal's
    processor: Processor
    files: list[FileTarget]

    @property
    def signal(self):
        return registry.BY_NAME[self.name]


def plan(config: cfg.Config, bundle: str) -> list[Part]:
    """A part for each signal the configuration's tables ask for, in the registry's order."""
    parts = []
    for signal in registry.SIGNALS:
        table = config.tables.get(signal.table)
        if table is None or not signal.wanted(table):
            continue
        processor = signal.processor(signal.settings(table, config.path))
        parts.append(Part(signal.name, processor, [FileTarget(os.path.join(bundle, name), fmt, signal.name)
                                                   for name, fmt in signal.bundle]))
    if not parts:
        raise AgentError(f"{config.path or 'the configuration'} names no capture: add a "
                         f"{', '.join('[' + t + ']' for t in registry.TABLES)} table")
    return parts


class RootLock:
    """flock on a file in the output root: one snapshot run at a time per root."""

    def __init__(self, root: str):
        self.path = os.path.join(root, LOCK_NAME)
        self.fd = -1

    def __enter__(self) -> "RootLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise Busy(f"another snapshot (pid {holder}) is still writing to "
                       f"{os.path.dirname(self.path)}; not starting a second one") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)   # releases the lock


def bundle_name(root: str, now: float) -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
    base = f"{host}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}"
    name, n = base, 1
    while any(os.path.exists(os.path.join(root, name + ext)) for ext in ("", ".tar.gz")):
        n += 1
        name = f"{base}-{n}"
    return name


def remove_stale_temporaries(root: str) -> list[str]:
    """Partial bundles of runs that died (the lock is ours: nobody else is writing)."""
    gone = []
    for entry in os.listdir(root):
        if entry.startswith(TMP_PREFIX):
            path = os.path.join(root, entry)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.unlink(path)
            gone.append(entry)
    return gone


def _ours(root: str, entry: str) -> bool:
    """A bundle this tool made: a directory with our manifest, or our tarball's name."""
    path = os.path.join(root, entry)
    if entry.endswith(".tar.gz"):
        return bool(re.fullmatch(r".+-\d{8}T\d{6}Z(-\d+)?\.tar\.gz", entry))
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            return json.load(f).get("made_by") == MADE_BY
    except (OSError, ValueError, AttributeError):
        return False


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def apply_retention(root: str, keep: int, max_age_s: float, max_total: int, now: float) -> list[str]:
    """Newest `keep`, none older than max_age, total under max_total; the newest always stays."""
    bundles = sorted((e for e in os.listdir(root) if not e.startswith(".") and _ours(root, e)),
                     key=lambda e: os.path.getmtime(os.path.join(root, e)), reverse=True)
    remove, total = [], 0
    for i, entry in enumerate(bundles):
        path = os.path.join(root, entry)
        total += _size(path)
        too_old = now - os.path.getmtime(path) > max_age_s
        if i > 0 and (i >= keep or too_old or total > max_total):
            remove.append(entry)
    for entry in remove:
        path = os.path.join(root, entry)
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    return remove


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(config: cfg.Config, notices: Console, out: Console, verbose: bool = False) -> int:
    """Returns 0 when every capture ran, 1 when some failed (the bundle says why)."""
    why = missing_privileges()   # bad input, not a failed capture: one line, exit 2
    if why:
        raise AgentError(why)
    config.check_captures()   # a bad table: nothing written, not even the lock
    s = config.section("snapshot")
    root = s["output_root"]
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise AgentError(f"cannot create output root {root}: {e.strerror}") from None
    with RootLock(root):
        remove_stale_temporaries(root)
        started = time.time()
        name = bundle_name(root, started)
        tmp = os.path.join(root, f"{TMP_PREFIX}{name}")
        os.makedirs(tmp)
        try:
            parts = plan(config, tmp)
            report = _capture(config, parts, tmp, s["duration"], notices, verbose)
            report["name"] = name
            _write_manifest(tmp, report, config, started)
        except BaseException:   # no half-built bundle stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = os.path.join(root, name)
        if s["tar"]:
            with tarfile.open(tmp + ".tar.gz", "w:gz") as tar:
                tar.add(tmp, arcname=name)
            shutil.rmtree(tmp)
            os.replace(tmp + ".tar.gz", final + ".tar.gz")
            final += ".tar.gz"
        else:
            os.replace(tmp, final)
        removed = apply_retention(root, s["keep"], s["max_age"], s["max_total"], time.time())
    failed = [c for c in report["captures"] if c["status"] != "ok"]
    lost = sum(c.get("lost_total", 0) for c in report["captures"])
    line = (f"snapshot {final}: {len(report['files'])} files, "
            f"{sum(f['size'] for f in report['files'].values()) / 1e6:.1f} MB in "
            f"{report['duration_s']:.1f} s; losses: {lost or 'none'}"
            + (f"; removed {len(removed)} old bundle(s)" if removed else "")
            + (f"; FAILED: {', '.join(c['name'] + ' (' + c['error'] + ')' for c in failed)}"
               if failed else ""))
    out.print(line, highlight=False, soft_wrap=True)
    return 1 if failed else 0


def _capture(config: cfg.Config, parts: list[Part], bundle: str, duration: float,
             notices: Console, verbose: bool) -> dict:
    from ebpf_otlp.doctor.checks import Doctor

    with open(os.path.join(bundle, "doctor.json"), "w") as f:
        json.dump(Doctor().run().as_dict(), f, indent=1)
    processors = [p.processor for p in parts]
    otlp, spool = cfg.otlp_settings(config.tables.get("otlp", {}))
    quiet = text_console(quiet=True)   # one summary line for cron; the manifest lists the files
    stage = OutputStage.create(quiet, quiet, [t for p in parts for t in p.files], {},
                               otlp, spool, lambda: {p.collector.name: p.collector.stats
                                                     for p in processors})
    def what(started: list[Processor]) -> str:
        names = [p.name for p in parts if any(p.processor is s for s in started)]
        return f"capturing {', '.join(names)} for {duration:g} s"
    done = capture(processors, stage, notices, "snapshot", what if verbose else None, duration,
                   None, [], time.time_ns(), skip_failed=True)
    by_processor = {id(p): r for p, r in zip(done.processors, done.results)}
    captures = []
    for part in parts:
        entry = {"name": part.name}
        if id(part.processor) in done.failed:
            entry.update(status="failed", error=done.failed[id(part.processor)])
        else:
            r = by_processor[id(part.processor)]
            signal = registry.of(r)
            stats = signal.stats(r)
            entry.update(status="ok", processed=stats.processed, lost=stats.lost,
                         lost_total=stats.total_lost, losses=losses.line(stats, signal.title),
                         files=[os.path.basename(t.path) for t in part.files if t in stage.written])
        captures.append(entry)
    return {"captures": captures, "start_ns": done.started_ns, "end_ns": done.ended_ns,
            "duration_s": (done.ended_ns - done.started_ns) / 1e9, "stopped_by": done.stopped_by or None}


def _redacted(table: dict) -> dict:
    """Header values (often tokens) stay out of the bundle."""
    if "headers" in table:
        table = {**table, "headers": {k: "<redacted>" for k in table["headers"]}}
    return table


def _write_manifest(bundle: str, report: dict, config: cfg.Config, started: float) -> None:
    files = {}
    for entry in sorted(os.listdir(bundle)):
        path = os.path.join(bundle, entry)
        files[entry] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    report["files"] = files
    manifest = {
        "made_by": MADE_BY, "ebpf_otlp_version": __version__, "host": socket.gethostname(),
        "kernel": platform.release(), "machine": platform.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "config_file": config.path or None,
        "config": {k: _redacted(config.section(k)) for k in ("snapshot", *config.captures, "otlp")
                   if k in config.tables or k == "snapshot"},
        **report,
    }
    with open(os.path.join(bundle, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, default=str)
