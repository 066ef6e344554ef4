"""Symbol tables kept on disk by GNU build ID, so each library is parsed once per host.

A build ID names the exact bytes of the code, so a table cached under it is valid for
every copy of that file, in any container, until evicted. The cache is an optimisation
only: a directory we cannot create, trust or write, and any unreadable or damaged entry,
just mean parsing again.

Entry layout (one file per build ID, `<build-id>.sym`): a header (magic, version, symbol
count, source length, names length, CRC-32 of the rest), the source (".symtab",
".dynsym" or the debug file's path), starts and sizes as little-endian uint64 arrays,
then the names joined by NUL.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import tempfile
import threading
import zlib
from array import array
from typing import NamedTuple

ENV = "EBPF_OTLP_SYMBOL_CACHE"                 # a directory; "" or "off" disables
DEFAULT_MAX_BYTES = 256 << 20
MAGIC = b"EOTLPSYM"
VERSION = 1
SUFFIX = ".sym"
_HEADER = struct.Struct("<8sIIIII")            # magic, version, count, source_len, names_len, crc32
_BUILD_ID = re.compile(r"[0-9a-f]{2,128}")
DEFAULT = object()                             # "whatever the environment says", for ElfObject


def default_dir() -> str | None:
    where = os.environ.get(ENV)
    if where is None:
        where = os.path.join(os.environ.get("EBPF_OTLP_CACHE", "/var/cache/ebpf-otlp"), "symbols")
    return None if where.strip().lower() in ("", "off") else where


class CachedSymbols(NamedTuple):
    starts: list[int]
    sizes: list[int]
    names: list[str]
    source: str


def encode(starts, sizes, names, source: str) -> bytes:
    if not len(starts) == len(sizes) == len(names):
        raise ValueError("columns of different lengths")
    columns = array("Q", starts), array("Q", sizes)
    if sys.byteorder == "big":
        for column in columns:
            column.byteswap()
    src = source.encode()
    body = b"".join((src, columns[0].tobytes(), columns[1].tobytes(), "\0".join(names).encode()))
    names_len = len(body) - len(src) - 16 * len(starts)
    return _HEADER.pack(MAGIC, VERSION, len(starts), len(src), names_len, zlib.crc32(body)) + body


def decode(blob: bytes) -> CachedSymbols | None:
    """The entry in blob; None for anything damaged, truncated or of another version."""
    if len(blob) < _HEADER.size:
        return None
    magic, version, count, source_len, names_len, crc = _HEADER.unpack_from(blob)
    if (magic != MAGIC or version != VERSION
            or len(blob) != _HEADER.size + source_len + 16 * count + names_len):
        return None
    body = memoryview(blob)[_HEADER.size:]
    if zlib.crc32(body) != crc:
        return None
    try:
        source = str(body[:source_len], "utf-8")
        at = source_len + 8 * count
        starts, sizes = array("Q"), array("Q")
        starts.frombytes(body[source_len:at])
        sizes.frombytes(body[at:at + 8 * count])
        names = str(body[at + 8 * count:], "utf-8").split("\0") if count else []
    except (UnicodeDecodeError, ValueError):
        return None
    if len(names) != count:
        return None
    if sys.byteorder == "big":
        starts.byteswap()
        sizes.byteswap()
    return CachedSymbols(starts.tolist(), sizes.tolist(), names, source)


class SymbolCache:
    """A bounded directory of entries, least recently used (by mtime) evicted first."""

    def __init__(self, directory: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.directory = directory
        self.max_bytes = max_bytes
        self._usable: bool | None = None
        self._total: int | None = None          # bytes in the directory, as last counted
        self._lock = threading.Lock()

    def _ready(self) -> bool:
        """Create the directory once; refuse one that others could write (it feeds us names)."""
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
        return os.path.join(self.directory, build_id + SUFFIX)

    def load(self, build_id: str) -> CachedSymbols | None:
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
                os.unlink(path)      # damaged: the caller parses and stores it again
            else:
                os.utime(path)       # recently used: evicted last
        except OSError:
            pass
        return entry

    def store(self, build_id: str, starts, sizes, names, source: str) -> bool:
        """Write the entry atomically (temp file, then rename); False if not cached."""
        path = self.path(build_id)
        if path is None or not self._ready():
            return False
        try:
            blob = encode(starts, sizes, names, source)
        except (ValueError, OverflowError, UnicodeError):
            return False
        if len(blob) > self.max_bytes:
            return False
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=self.directory)
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
                    if not e.name.endswith(SUFFIX):
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


_caches: dict[str, SymbolCache] = {}
_caches_lock = threading.Lock()


def default_cache() -> SymbolCache | None:
    """The cache the environment names (one object per directory), or None if disabled."""
    where = default_dir()
    if where is None:
        return None
    with _caches_lock:
        cache = _caches.get(where)
        if cache is None:
            cache = _caches[where] = SymbolCache(where)
        return cache
