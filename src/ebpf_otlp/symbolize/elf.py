"""ELF symbols, build IDs and file-offset → address translation, through pyelftools.

A stripped file (Debian's libc, most packaged binaries) keeps only .dynsym, its exported
functions. Its full .symtab may sit in a separate debug file under the build-ID path
that gdb, perf and debuginfod use (/usr/lib/debug/.build-id/ab/cdef….debug, installed
by the -dbg and -dbgsym packages); it is read from there when present.
"""

from __future__ import annotations

import bisect
import os
from typing import BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

_FUNC_TYPES = {"STT_FUNC", "STT_GNU_IFUNC"}
DEBUG_DIRS = ("/usr/lib/debug",)


def debug_file_path(build_id: str, debug_dirs=DEBUG_DIRS) -> str | None:
    """The separate debug file for a build ID, if one is installed."""
    if len(build_id) < 3:
        return None
    for root in debug_dirs:
        path = os.path.join(root, ".build-id", build_id[:2], build_id[2:] + ".debug")
        if os.path.isfile(path):
            return path
    return None


class SymbolTable:
    """Sorted function symbols; looks up the function containing an address."""

    def __init__(self, symbols: list[tuple[int, int, str]]):
        symbols = sorted(set(symbols))
        self._starts = [s[0] for s in symbols]
        self._sizes = [s[1] for s in symbols]
        self._names = [s[2] for s in symbols]

    def __len__(self) -> int:
        return len(self._starts)

    def lookup(self, addr: int) -> str | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        # Several symbols may share a start (aliases): take the one that covers addr.
        size = self._sizes[i]
        if size and addr >= self._starts[i] + size:
            return None
        if not size and i + 1 < len(self._starts) and addr >= self._starts[i + 1]:
            return None
        return self._names[i]


class ElfObject:
    """One ELF file, opened once, parsed lazily: symbols are read only when asked for."""

    def __init__(self, stream: BinaryIO, path: str, debug_dirs=DEBUG_DIRS):
        self.path = path
        self.debug_dirs = debug_dirs
        self.symbol_source = ""       # where the symbols came from, once read
        self._stream = stream
        self._parsed: ELFFile | None | bool = False   # False: not yet parsed; None: not ELF
        self._symbols: SymbolTable | None = None
        self._segments: list[tuple[int, int, int]] | None = None
        self._build_id: str | None = None

    @property
    def _elf(self) -> ELFFile | None:
        # Parsed on first use: most files a process maps are never hit by a sample.
        if self._parsed is False:
            try:
                self._parsed = ELFFile(self._stream)
            except (ELFError, OSError, ValueError):
                self._parsed = None
        return self._parsed

    @property
    def valid(self) -> bool:
        return self._elf is not None

    @property
    def build_id(self) -> str:
        if self._build_id is None:
            self._build_id = self._read_build_id() if self.valid else ""
        return self._build_id

    def _read_build_id(self) -> str:
        try:
            for seg in self._elf.iter_segments():
                if seg["p_type"] != "PT_NOTE":
                    continue
                for note in seg.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return note["n_desc"]
        except (ELFError, OSError, ValueError):
            pass
        return ""

    def _load_segments(self) -> list[tuple[int, int, int]]:
        if self._segments is None:
            self._segments = []
            if self.valid:
                for seg in self._elf.iter_segments():
                    if seg["p_type"] == "PT_LOAD":
                        self._segments.append((seg["p_offset"], seg["p_filesz"], seg["p_vaddr"]))
        return self._segments

    def offset_to_vaddr(self, file_offset: int) -> int | None:
        """The link-time address of a file offset, via the PT_LOAD segment holding it."""
        for off, size, vaddr in self._load_segments():
            if off <= file_offset < off + max(size, 1):
                return file_offset - off + vaddr
        return None

    @property
    def symbols(self) -> SymbolTable:
        if self._symbols is None:
            self._symbols = SymbolTable(self._read_symbols() if self.valid else [])
        return self._symbols

    def _read_symbols(self) -> list[tuple[int, int, str]]:
        found = self._section_symbols(".symtab")
        if found:
            self.symbol_source = ".symtab"
            return found
        debug = debug_file_path(self.build_id, self.debug_dirs)
        if debug:
            try:
                with open(debug, "rb") as f:
                    found = ElfObject(f, debug, debug_dirs=())._section_symbols(".symtab")
            except OSError:
                found = []
            if found:
                self.symbol_source = debug
                return found
        self.symbol_source = ".dynsym"
        return self._section_symbols(".dynsym")

    def _section_symbols(self, name: str) -> list[tuple[int, int, str]]:
        found: list[tuple[int, int, str]] = []
        if not self.valid:
            return found
        try:
            section = self._elf.get_section_by_name(name)
            if section is None or section["sh_type"] == "SHT_NOBITS":
                return found
            for sym in section.iter_symbols():
                if (sym["st_info"]["type"] in _FUNC_TYPES and sym["st_value"]
                        and sym["st_shndx"] != "SHN_UNDEF"):
                    found.append((sym["st_value"], sym["st_size"], sym.name.split("@", 1)[0]))
        except (ELFError, OSError, ValueError):
            pass
        return found

    def function_at(self, file_offset: int) -> str | None:
        vaddr = self.offset_to_vaddr(file_offset)
        return None if vaddr is None else self.symbols.lookup(vaddr)
