"""Files kept on disk by GNU build ID, so per-library work (symbol tables, unwind tables)
is done once per host.

A build ID names the exact bytes of the code, so an entry cached under it is valid for
every copy of that file, in any container, until evicted. A cache is an optimisation
only: a directory we cannot create, trust or write, and any unreadable or damaged entry,
just mean computing again. Each kind of entry has its own directory and file suffix;
this module knows nothing of what entries hold beyond a checked header.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

DEFAULT_MAX_BYTES = 256 << 20
_BUILD_ID = re.compile(r"[0-9a-f]{2,128}")
T = TypeVar("T")


def cache_dir(env: str, name: str) -> str | None:
    """The directory $env names ("" or "off": None, no cache), else `name` under the
    agent's cache root ($EBPF_OTLP_CACHE, default /var/cache/ebpf-otlp)."""
    where = os.environ.get(env)
    if where is None:
        where = os.path.join(os.environ.get("EBPF_OTLP_CACHE", "/var/cache/ebpf-otlp"), name)
    return None if where.strip().lower() in ("", "off") else where


class EntryFormat:
    """Framing of an entry: magic, version, `fields` uint32 chosen by the caller, and the
    CRC-32 of the body that follows, so a torn or stale file reads as absent."""

    def __init__(self, magic: bytes, version: int, fields: int):
        self.magic = magic
        self.version = version
        self.header = struct.Struct(f"<{len(magic)}sI{fields}II")

    def pack(self, fields: Sequence[int], body: bytes) -> bytes:
        return self.header.pack(self.magic, self.version, *fields, zlib.crc32(body)) + body

    def unpack(self, blob: bytes) -> tuple[tuple[int, ...], memoryview] | None:
        """(fields, body); None if of another kind or version, or damaged."""
        if len(blob) < self.header.size:
            return None
        magic, version, *fields, crc = self.header.unpack_from(blob)
        body = memoryview(blob)[self.header.size:]
        if magic != self.magic or version != self.version or zlib.crc32(body) != crc:
            return None
        return tuple(fields), body


class BuildIdCache:
    """A bounded directory of `<build-id>.v<version><suffix>` files, least recently used
    (by mtime, refreshed on every hit) evicted first, whatever their version.

    The version is in the name, not only in the header: two versions of ebpf-otlp on one
    host (an upgrade under way, a test checkout) each keep their own entries instead of
    rewriting each other's."""

    suffix = ".entry"
    version = 1

    def __init__(self, directory: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = directory
        self.max_bytes = max_bytes
        self._usable: bool | None = None
        self._total: int | None = None          # bytes in the directory, as last counted
        self._lock = threading.Lock()

    def _ready(self) -> bool:
        """Create the directory once; refuse one that others could write (its entries
        steer what we report and how we unwind)."""
        if self._usable is None:
            try:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                st = os.stat(self.directory)
                self._usable = st.st_uid == os.geteuid() and not st.st_mode & 0o022
            except OSError:
                self._usable = False
        return self._usable

    def path(self, build_id: str) -> str | None:
        if not _BUILD_ID.fullmatch(build_id):
            return None
        return os.path.join(self.directory, f"{build_id}.v{self.version}{self.suffix}")

    def read(self, build_id: str, decode: Callable[[bytes], T | None]) -> T | None:
        """decode(the entry's bytes), or None if absent; an entry decode rejects is removed
        (the caller computes and stores it again)."""
        path = self.path(build_id)
        if path is None or not self._ready():
            return None
        try:
            with open(path, "rb") as f:
                blob = f.read()
        except OSError:
            return None
        entry = decode(blob)
        try:
            if entry is None:
                os.unlink(path)
            else:
                os.utime(path)       # recently used: evicted last
        except OSError:
            pass
        return entry

    def write(self, build_id: str, blob: bytes) -> bool:
        """Write the entry atomically (temp file, then rename); False if not cached."""
        path = self.path(build_id)
        if path is None or len(blob) > self.max_bytes or not self._ready():
            return False
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=self.suffix, dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
            tmp = None
        except OSError:
            return False
        finally:
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self._account(len(blob))
        return True

    def _account(self, added: int) -> None:
        # The directory is counted once, then kept up to date by what we add; other writers
        # are seen at the next count, which runs only when the bound seems to be crossed.
        with self._lock:
            if self._total is not None:
                self._total += added
                if self._total <= self.max_bytes:
                    return
            self._total = self._evict()

    def _evict(self) -> int:
        """Remove the least recently used entries until within the bound; the bytes left."""
        entries, total = [], 0
        try:
            with os.scandir(self.directory) as it:
                for e in it:
                    if not e.name.endswith(self.suffix):
                        continue          # never touch files that are not ours
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if e.is_file(follow_symlinks=False):
                        entries.append((st.st_mtime_ns, e.path, st.st_size))
                        total += st.st_size
        except OSError:
            return 0
        entries.sort()
        for _, path, size in entries:
            if total <= self.max_bytes:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                continue
            total -= size
        return total


_shared: dict[tuple[type, str], BuildIdCache] = {}
_shared_lock = threading.Lock()


def shared(kind: type[BuildIdCache], directory: str) -> BuildIdCache:
    """One cache object per kind and directory, so its size accounting is shared."""
    with _shared_lock:
        cache = _shared.get((kind, directory))
        if cache is None:
            cache = _shared[(kind, directory)] = kind(directory)
        return cache
