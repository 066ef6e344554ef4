"""ELF symbols, build IDs and file-offset → address translation.

A stripped file (Debian's libc, most packaged binaries) keeps only .dynsym, its exported
functions. Its full .symtab may sit in a separate debug file under the build-ID path
that gdb, perf and debuginfod use (/usr/lib/debug/.build-id/ab/cdef….debug, installed
by the -dbg and -dbgsym packages); it is read from there when present.

pyelftools reads the headers, notes and segments. Symbol arrays are decoded here in bulk
from the section's bytes: pyelftools builds one object per symbol, which for libc's ~10k
debug symbols took most of the agent's start-up after the BPF compile. Tables are kept
on disk by build ID (symcache), so a library is parsed once per host.
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from typing import BinaryIO

from elftools.common.exceptions import ELFError
from elftools.common.utils import struct_parse
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import NoteSegment

from ebpf_otlp.symbolize import symcache

STT_FUNC, STT_GNU_IFUNC = 2, 10
SHF_ALLOC, SHF_TLS = 0x2, 0x400
_FUNC_TYPES = frozenset((STT_FUNC, STT_GNU_IFUNC))
STB_GLOBAL, STB_WEAK = 1, 2
_GLOBAL_BINDINGS = frozenset((STB_GLOBAL, STB_WEAK))
DEBUG_DIRS = ("/usr/lib/debug",)
_ERRORS = (ELFError, OSError, ValueError, struct.error)


def debug_file_path(build_id: str, debug_dirs=DEBUG_DIRS) -> str | None:
    """The separate debug file for a build ID, if one is installed."""
    if len(build_id) < 3:
        return None
    for root in debug_dirs:
        path = os.path.join(root, ".build-id", build_id[:2], build_id[2:] + ".debug")
        if os.path.isfile(path):
            return path
    return None


def _symbol_rows(data: bytes, elf64: bool, little_endian: bool, entsize: int = 0):
    """(name offset, info, shndx, value, size) of each entry of a raw Elf{32,64}_Sym array."""
    order = "<" if little_endian else ">"
    # Elf64_Sym: name, info, other, shndx, value, size. Elf32_Sym: name, value, size, info, other, shndx.
    fmt = order + ("IBBHQQ" if elf64 else "IIIBBH")
    size = struct.calcsize(fmt)
    stride = entsize if entsize > size else size
    if stride > size:
        fmt += f"{stride - size}x"
    view = memoryview(data)[: len(data) - len(data) % stride]
    if elf64:
        return ((n, i, sh, v, s) for n, i, _, sh, v, s in struct.iter_unpack(fmt, view))
    return ((n, i, sh, v, s) for n, v, s, i, _, sh in struct.iter_unpack(fmt, view))


def _string_at(strings: bytes, at: int) -> str:
    end = strings.find(b"\0", at)
    return (strings[at:end] if end >= 0 else strings[at:]).decode("utf-8", "replace")


def decode_function_symbols(data: bytes, strings: bytes, elf64: bool, little_endian: bool,
                            entsize: int = 0, global_only: bool = False) -> list[tuple[int, int, str]]:
    """(value, size, name) of the defined, nonzero function symbols in a raw Elf{32,64}_Sym
    array; names come from the linked string table, cut at '@' (symbol versions).
    `global_only`: global and weak symbols only, what other code can call by name."""
    found = []
    for name_at, info, shndx, value, sym_size in _symbol_rows(data, elf64, little_endian, entsize):
        if value and shndx and (info & 0xF) in _FUNC_TYPES and \
                (not global_only or info >> 4 in _GLOBAL_BINDINGS):   # shndx 0: SHN_UNDEF
            name = _string_at(strings, name_at)
            found.append((value, sym_size, name.split("@", 1)[0] if "@" in name else name))
    return found


def bound_sizes(symbols: list[tuple[int, int, str]],
                sections: list[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """Size-0 symbols (assembly: _init, _start) made to end at the next symbol or at their
    section's end, whichever is first (sections: the loaded ones' sorted (start, end)):
    unbounded, the code after one took its name, as the PLT after .init took _init's."""
    starts = sorted({value for value, _, _ in symbols})
    section_starts = [start for start, _ in sections]
    out = []
    for value, size, name in symbols:
        if not size:
            i = bisect.bisect_right(section_starts, value) - 1
            if i >= 0 and value < sections[i][1]:
                j = bisect.bisect_right(starts, value)
                size = min(starts[j] if j < len(starts) else sections[i][1], sections[i][1]) - value
        out.append((value, size, name))
    return out


_JUMP_SLOT, _GLOB_DAT = 7, 6          # x86_64 relocations of a PLT entry's GOT slot


def plt_symbols(elf: ELFFile) -> list[tuple[int, int, str]]:
    """`name@plt` for each x86_64 PLT entry (.plt, .plt.sec, .plt.got), found as binutils
    and perf find them: the GOT slot the entry's indirect jump reads, named by the dynamic
    relocation of that slot. Entries that jump elsewhere (the lazy resolver, IBT's lazy
    stubs) or through a slot without a symbol (IRELATIVE) stay unnamed."""
    if elf.elfclass != 64 or elf["e_machine"] != "EM_X86_64":
        return []
    dynsym = elf.get_section_by_name(".dynsym")
    if dynsym is None:
        return []
    strings = elf.get_section(dynsym["sh_link"]).data()
    names = [_string_at(strings, row[0]).split("@", 1)[0]
             for row in _symbol_rows(dynsym.data(), True, elf.little_endian, dynsym["sh_entsize"])]
    order = "<" if elf.little_endian else ">"
    slots = {}
    for section in elf.iter_sections():
        if section["sh_type"] != "SHT_RELA" or elf.get_section(section["sh_link"]).name != ".dynsym":
            continue
        relocations = section.data()
        for offset, info, _addend in struct.iter_unpack(order + "QQq", relocations[: len(relocations) // 24 * 24]):
            sym = info >> 32
            if info & 0xFFFF_FFFF in (_JUMP_SLOT, _GLOB_DAT) and 0 < sym < len(names) and names[sym]:
                slots[offset] = names[sym]
    found = []
    for section_name in (".plt", ".plt.sec", ".plt.got"):
        section = elf.get_section_by_name(section_name)
        if section is None or section["sh_type"] != "SHT_PROGBITS":
            continue
        code, base = section.data(), section["sh_addr"]
        step = section["sh_entsize"] or 16
        for at in range(0, len(code) - step + 1, step):
            entry = code[at:at + step]
            for pos in (0, 4):                   # 4: after IBT's endbr64
                pos += entry[pos:pos + 1] == b"\xf2"                    # bnd prefix
                if entry[pos:pos + 2] == b"\xff\x25" and pos + 6 <= step:   # jmp *disp32(%rip)
                    disp = struct.unpack_from(order + "i", entry, pos + 2)[0]
                    name = slots.get(base + at + pos + 6 + disp)
                    if name:
                        found.append((base + at, step, f"{name}@plt"))
                    break
    return found


class SymbolTable:
    """Sorted function symbols; looks up the function containing an address."""

    def __init__(self, symbols: list[tuple[int, int, str]]):
        symbols = sorted(set(symbols))
        self._starts = [s[0] for s in symbols]
        self._sizes = [s[1] for s in symbols]
        self._names = [s[2] for s in symbols]

    @classmethod
    def from_columns(cls, starts: list[int], sizes: list[int], names: list[str]) -> SymbolTable:
        """A table from columns already sorted as __init__ sorts them (the disk cache's)."""
        table = cls.__new__(cls)
        table._starts, table._sizes, table._names = starts, sizes, names
        return table

    def columns(self) -> tuple[list[int], list[int], list[str]]:
        return self._starts, self._sizes, self._names

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
    """One ELF file, parsed lazily: symbols are read only when asked for.

    `cache` is the on-disk symbol cache (default: symcache.default_cache(), from the
    environment); None disables it.
    """

    def __init__(self, stream: BinaryIO, path: str, debug_dirs=DEBUG_DIRS, cache=symcache.DEFAULT):
        self.path = path
        self.debug_dirs = debug_dirs
        self.symbol_source = ""       # where the symbols came from, once read
        self._stream = stream
        self._cache = cache
        self._file: ELFFile | None = None
        self._valid: bool | None = None   # None: not parsed yet
        self._symbols: SymbolTable | None = None
        self._segments: list[tuple[int, int, int]] | None = None
        self._phdrs: list | None = None
        self._build_id: str | None = None

    @property
    def _elf(self) -> ELFFile | None:
        # Parsed on first use: most files a process maps are never hit by a sample.
        if self._valid is None:
            try:
                self._file = ELFFile(self._stream)
                self._valid = True
            except _ERRORS:
                self._valid = False
        return self._file

    @property
    def valid(self) -> bool:
        self._elf
        return bool(self._valid)

    def load(self) -> ElfObject:
        """Read all that lookups need (build ID, segments, symbols) and drop the parser:
        afterwards the caller may close the stream."""
        self.build_id
        self._load_segments()
        self.symbols
        self._file = self._stream = self._phdrs = None
        return self

    @property
    def build_id(self) -> str:
        if self._build_id is None:
            self._build_id = self._read_build_id() if self.valid else ""
        return self._build_id

    def _program_headers(self) -> list:
        # Parsed once, as headers: iter_segments() builds a DynamicSegment for PT_DYNAMIC,
        # which walks every section, 4x the cost of what we need (notes and PT_LOAD).
        if self._phdrs is None:
            self._phdrs = []
            elf = self._elf
            if elf is not None:
                try:
                    self._phdrs = [struct_parse(elf.structs.Elf_Phdr, elf.stream,
                                                stream_pos=elf["e_phoff"] + i * elf["e_phentsize"])
                                   for i in range(elf.num_segments())]
                except _ERRORS:
                    pass
        return self._phdrs

    def _read_build_id(self) -> str:
        try:
            for header in self._program_headers():
                if header["p_type"] != "PT_NOTE":
                    continue
                for note in NoteSegment(header, self._elf.stream, self._elf).iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return note["n_desc"]
        except _ERRORS:
            pass
        return ""

    def _load_segments(self) -> list[tuple[int, int, int]]:
        if self._segments is None:
            self._segments = [(h["p_offset"], h["p_filesz"], h["p_vaddr"])
                              for h in self._program_headers() if h["p_type"] == "PT_LOAD"]
        return self._segments

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """The file offset of a link-time address (to read the code there)."""
        for off, size, seg_vaddr in self._load_segments():
            if seg_vaddr <= vaddr < seg_vaddr + size:
                return vaddr - seg_vaddr + off
        return None

    def exported_functions(self) -> dict[str, int]:
        """Name -> address of the functions in .dynsym (what uprobes attach to by name)."""
        return {name: addr for addr, _size, name in self._section_symbols(".dynsym")}

    def global_functions(self) -> dict[str, int]:
        """Name -> address of the functions callable by name: .dynsym's, and .symtab's
        global and weak ones (a static executable exports nothing, yet has its malloc)."""
        found = {name: addr for addr, _size, name in self._section_symbols(".symtab", global_only=True)}
        found.update(self.exported_functions())
        return found

    def offset_to_vaddr(self, file_offset: int) -> int | None:
        """The link-time address of a file offset, via the PT_LOAD segment holding it."""
        for off, size, vaddr in self._load_segments():
            if off <= file_offset < off + max(size, 1):
                return file_offset - off + vaddr
        return None

    @property
    def symbols(self) -> SymbolTable:
        if self._symbols is None:
            self._symbols = self._cached_or_read() if self.valid else SymbolTable([])
        return self._symbols

    def _cached_or_read(self) -> SymbolTable:
        cache = symcache.default_cache() if self._cache is symcache.DEFAULT else self._cache
        build_id = self.build_id if cache else ""
        if build_id:
            hit = cache.load(build_id)
            if hit and hit.source != ".dynsym":
                self.symbol_source = hit.source
                return SymbolTable.from_columns(hit.starts, hit.sizes, hit.names)
        table = SymbolTable(self._code_symbols())
        # Exports only are not kept: cheap to read again, and they would hide a debug file
        # installed later, or the .symtab of an unstripped copy with the same build ID.
        if build_id and self.symbol_source != ".dynsym":
            cache.store(build_id, *table.columns(), source=self.symbol_source)
        return table

    def _code_symbols(self) -> list[tuple[int, int, str]]:
        """What lookups search: the functions, each ending where it ends, and the PLT's stubs."""
        symbols = self._read_symbols()
        try:
            elf = self._elf
            sections = sorted((sec["sh_addr"], sec["sh_addr"] + sec["sh_size"]) for sec in elf.iter_sections()
                              if sec["sh_flags"] & SHF_ALLOC and not sec["sh_flags"] & SHF_TLS and sec["sh_size"])
            return bound_sizes(symbols, sections) + plt_symbols(elf)
        except _ERRORS:
            return symbols

    def _read_symbols(self) -> list[tuple[int, int, str]]:
        found = self._section_symbols(".symtab")
        if found:
            self.symbol_source = ".symtab"
            return found
        debug = debug_file_path(self.build_id, self.debug_dirs)
        if debug:
            try:
                with open(debug, "rb") as f:
                    found = ElfObject(f, debug, debug_dirs=(), cache=None)._section_symbols(".symtab")
            except OSError:
                found = []
            if found:
                self.symbol_source = debug
                return found
        self.symbol_source = ".dynsym"
        return self._section_symbols(".dynsym")

    def _section_symbols(self, name: str, global_only: bool = False) -> list[tuple[int, int, str]]:
        if not self.valid:
            return []
        try:
            elf = self._elf
            section = elf.get_section_by_name(name)
            if section is None or section["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM"):
                return []
            strings = elf.get_section(section["sh_link"]).data()
            return decode_function_symbols(section.data(), strings, elf.elfclass == 64,
                                           elf.little_endian, section["sh_entsize"], global_only)
        except _ERRORS:
            return []

    def function_at(self, file_offset: int) -> str | None:
        vaddr = self.offset_to_vaddr(file_offset)
        return None if vaddr is None else self.symbols.lookup(vaddr)


class VdsoImage(ElfObject):
    """The vDSO's ELF image, read from a process's memory (no file holds it). It exports each
    function twice, `__vdso_X` (global) and `X` (weak): perf names the global one, so do we."""

    def __init__(self, image: bytes, path: str = "[vdso]"):
        super().__init__(io.BytesIO(image), path, debug_dirs=(), cache=None)
        self.image = image

    def _code_symbols(self) -> list[tuple[int, int, str]]:
        symbols = super()._code_symbols()
        own = {(value, size) for value, size, name in symbols if name.startswith("__vdso_")}
        return [s for s in symbols if s[2].startswith("__vdso_") or s[:2] not in own]
