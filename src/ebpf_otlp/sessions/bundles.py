"""Where snapshot bundles and the agent's windows are kept: a directory of bundles, each
built under a temporary name and renamed when complete (a run killed at any point leaves
no bundle under a final name), one writer at a time (a lock file), and retention that
removes old bundles, never anything it did not create.
"""

from __future__ import annotations

import contextlib
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

from ebpf_otlp import __version__
from ebpf_otlp.errors import AgentError
from ebpf_otlp.export import losses

EX_TEMPFAIL = 75
LOCK_NAME = ".ebpf-otlp-snapshot.lock"
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
MADE_BY = ("ebpf-otlp snapshot", "ebpf-otlp agent")   # a snapshot bundle, an agent window


class Busy(AgentError):
    exit_code = EX_TEMPFAIL


@dataclass
class Bundle:
    name: str
    path: str          # where it is being built (a temporary name)
    final: str = ""    # where it is once complete


class BundleStore:
    """The one face snapshot and the agent use: open, lock, clean, build, retain."""

    def __init__(self, root: str, keep: int, max_age_s: float, max_total: int):
        self.root, self.keep, self.max_age_s, self.max_total = root, keep, max_age_s, max_total

    def open(self) -> "BundleStore":
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as e:
            raise AgentError(f"cannot create output root {self.root}: {e.strerror}") from None
        return self

    def lock(self) -> "RootLock":
        return RootLock(self.root)

    def clean(self) -> list[str]:
        """Partial bundles of runs that died (hold the lock, or be the only writer)."""
        return remove_stale_temporaries(self.root)

    @contextlib.contextmanager
    def build(self, now: float, tar: bool = False):
        """A bundle to fill: renamed (or made a tarball) when the block ends, removed if it fails."""
        name = bundle_name(self.root, now)
        bundle = Bundle(name, os.path.join(self.root, TMP_PREFIX + name))
        os.makedirs(bundle.path)
        try:
            yield bundle
        except BaseException:   # no half-built bundle stays behind
            shutil.rmtree(bundle.path, ignore_errors=True)
            raise
        final = os.path.join(self.root, name)
        if tar:
            with tarfile.open(bundle.path + ".tar.gz", "w:gz") as archive:
                archive.add(bundle.path, arcname=name)
            shutil.rmtree(bundle.path)
            os.replace(bundle.path + ".tar.gz", final + ".tar.gz")
            final += ".tar.gz"
        else:
            os.replace(bundle.path, final)
        bundle.final = final

    def retain(self, now: float) -> list[str]:
        return apply_retention(self.root, self.keep, self.max_age_s, self.max_total, now)


def write_manifest(directory: str, doc: dict, made_by: str = MADE_BY[0]) -> dict:
    """manifest.json: `doc`, with who made it and every file's size and sha256."""
    files = {}
    for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        files[entry] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    manifest = {"made_by": made_by, **doc, "files": files}
    with open(os.path.join(directory, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1, default=str)
    return manifest


def describe(config, session: str, start_ns: int, end_ns: int, captures: list[dict]) -> dict:
    """What a snapshot bundle's and an agent window's manifests both say: who made it
    where, when it starts and ends, the configuration (header values redacted), and each
    capture's status and losses by cause (capture_entry)."""
    return {
        "ebpf_otlp_version": __version__, "host": socket.gethostname(),
        "kernel": platform.release(), "machine": platform.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_ns / 1e9)),
        "start_ns": start_ns, "end_ns": end_ns, "duration_s": (end_ns - start_ns) / 1e9,
        "config_file": config.path or None,
        "config": {k: _redacted(config.section(k)) for k in (session, *config.captures, "otlp")
                   if k in config.tables or k == session},
        "captures": captures,
    }


def capture_entry(name: str, title: str, stats, files: list[str], error: str = "") -> dict:
    """One capture in a manifest: failed with its error, or ok with what the kernel side
    handled and lost, by cause (`stats`: a CollectorStats)."""
    if error:
        return {"name": name, "status": "failed", "error": error}
    return {"name": name, "status": "ok", "processed": stats.processed, "lost": dict(stats.lost),
            "lost_total": stats.total_lost, "losses": losses.line(stats, title), "files": files}


def _redacted(table: dict) -> dict:
    """Header values (often tokens) stay out of the bundle."""
    if "headers" in table:
        table = {**table, "headers": {k: "<redacted>" for k in table["headers"]}}
    return table


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
            return json.load(f).get("made_by") in MADE_BY
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
