"""Writing output files: checked before a capture starts, written atomically after."""

from __future__ import annotations

import gzip
import os
import stat
import tempfile

from ebpf_otlp.errors import AgentError


def check_writable(path: str) -> None:
    """Fail now, not after a 30 s capture, if `path` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise AgentError(f"cannot write {path}: it is a directory")
    if not os.path.isdir(directory):
        raise AgentError(f"cannot write {path}: directory {directory} does not exist")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise AgentError(f"cannot write {path}: permission denied")
    try:
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".ebpf-otlp-", delete=True)
        probe.close()
    except OSError as e:
        raise AgentError(f"cannot write {path}: {e.strerror}") from None


GZIP_MAGIC = b"\x1f\x8b"


def for_path(path: str, data: bytes) -> bytes:
    """The bytes as a file of that name holds them: gzip-compressed when it ends in .gz
    (connections.jsonl.gz, syscalls.json.gz), unless they already are (pprof's .pb.gz), or
    in .svgz (SVG's own name for it, which browsers open)."""
    if path.endswith((".gz", ".svgz")) and not data.startswith(GZIP_MAGIC):
        return gzip.compress(data, compresslevel=6, mtime=0)
    return data


def write_bytes(path: str, data: bytes) -> None:
    """Write via a temporary file and rename, so readers never see half a profile; a path
    that is not a regular file (/dev/null, /dev/stdout, a FIFO) is written into, never
    replaced."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            with open(path, "wb") as f:
                f.write(data)
            return
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ebpf-otlp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise AgentError(f"cannot write {path}: {e.strerror}") from None
