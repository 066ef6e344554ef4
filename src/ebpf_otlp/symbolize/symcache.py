"""Symbol tables kept on disk by GNU build ID, so each library is parsed once per host.

The directory, atomic writes, damage checks and the size bound are buildid_cache's; this
module is the entry format. Entry layout (one file per build ID, `<build-id>.sym`): a
header (magic, version, symbol count, source length, names length, CRC-32 of the rest),
the source (".symtab", ".dynsym" or the debug file's path), starts and sizes as
little-endian uint64 arrays, then the names joined by NUL.
"""

from __future__ import annotations

import sys
from array import array
from typing import NamedTuple

from ebpf_otlp import buildid_cache
from ebpf_otlp.buildid_cache import BuildIdCache, EntryFormat

ENV = "EBPF_OTLP_SYMBOL_CACHE"                 # a directory; "" or "off" disables
SUFFIX = ".sym"
FORMAT = EntryFormat(b"EOTLPSYM", 2, 3)       # fields: count, source_len, names_len (2: PLT names, bounded sizes)
DEFAULT = object()                             # "whatever the environment says", for ElfObject


def default_dir() -> str | None:
    return buildid_cache.cache_dir(ENV, "symbols")


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
    return FORMAT.pack((len(starts), len(src), names_len), body)


def decode(blob: bytes) -> CachedSymbols | None:
    """The entry in blob; None for anything damaged, truncated or of another version."""
    unpacked = FORMAT.unpack(blob)
    if unpacked is None:
        return None
    (count, source_len, names_len), body = unpacked
    if len(body) != source_len + 16 * count + names_len:
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


class SymbolCache(BuildIdCache):
    """Symbol tables by build ID, in a bounded directory (see buildid_cache)."""

    suffix = SUFFIX
    version = FORMAT.version

    def load(self, build_id: str) -> CachedSymbols | None:
        return self.read(build_id, decode)

    def store(self, build_id: str, starts, sizes, names, source: str) -> bool:
        """Write the entry atomically; False if not cached."""
        try:
            blob = encode(starts, sizes, names, source)
        except (ValueError, OverflowError, UnicodeError):
            return False
        return self.write(build_id, blob)


def default_cache() -> SymbolCache | None:
    """The cache the environment names (one object per directory), or None if disabled."""
    where = default_dir()
    return None if where is None else buildid_cache.shared(SymbolCache, where)
