"""Is this mapped object a CPython interpreter, which version, and can its frames be walked?

Looked for in the executable and in a mapped `libpython3.X.so` (pyenv's builds are shared;
Debian's /usr/bin/python3.11 has libpython linked in): `_PyRuntime` in the dynamic symbols,
the version from `Py_Version` (3.11+; the file's name for 3.10), and for 3.13+ the
`_Py_DebugOffsets` that CPython keeps at the start of `.PyRuntime` (a static initializer, so
the file holds it), whose cookie, version and free-threading flag must agree."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

SUPPORTED = ((3, 10), (3, 11), (3, 12), (3, 13))   # GIL builds walked and tested here
DEBUG_COOKIE = b"xdebugpy"
_NAMED = re.compile(r"(?:^|/)(?:lib)?python(\d)\.(\d+)(t?)(?:\.so|$|[^/\d])")


@dataclass(frozen=True)
class Interpreter:
    """A CPython found in an object: where `_PyRuntime` is (ELF virtual address) and why
    it is walked or not (`unsupported`: '' when it is)."""
    path: str
    version: tuple[int, int]
    hexversion: int              # PY_VERSION_HEX (0 where only the name gave the version)
    runtime_vaddr: int
    code_type_vaddr: int = 0     # PyCode_Type: what a code object's ob_type points to
    free_threaded: bool = False
    unsupported: str = ""

    @property
    def name(self) -> str:
        return f"CPython {self.version[0]}.{self.version[1]}{'t' if self.free_threaded else ''}"


def detect(path: str, open_path: str | None = None, unreadable_raises: bool = False) -> Interpreter | None:
    """The interpreter in the ELF file at `path` (read from `open_path`, e.g. through
    /proc/PID/root), or None when it is not one (or cannot be opened: OSError instead
    with `unreadable_raises`, for a caller that remembers the answer)."""
    try:
        f = open(open_path or path, "rb")
    except OSError:
        if unreadable_raises:
            raise
        return None
    with f:
        try:
            return _detect(ELFFile(f), path)
        except (OSError, ELFError, struct.error, ValueError):
            return None


def _symbol(elf: ELFFile, name: str):
    """A dynamic symbol by name, through the GNU hash table (one bucket, not the ~10,000
    symbols of a libpython: 3 ms rather than 150-700 ms)."""
    table = elf.get_section_by_name(".gnu.hash")
    if table is not None and hasattr(table, "get_symbol"):
        return table.get_symbol(name)
    table = elf.get_section_by_name(".dynsym")
    found = table.get_symbol_by_name(name) if table is not None else None
    return found[0] if found else None


def _read(elf: ELFFile, vaddr: int, size: int) -> bytes | None:
    """`size` bytes at ELF virtual address `vaddr`, from the segment that holds them in the file."""
    for seg in elf.iter_segments("PT_LOAD"):
        if seg["p_vaddr"] <= vaddr and vaddr + size <= seg["p_vaddr"] + seg["p_filesz"]:
            elf.stream.seek(seg["p_offset"] + vaddr - seg["p_vaddr"])
            return elf.stream.read(size)
    return None


def _detect(elf: ELFFile, path: str) -> Interpreter | None:
    runtime = _symbol(elf, "_PyRuntime")
    if runtime is None or not runtime["st_value"]:
        return None
    hexversion, free_threaded = 0, False
    version_symbol = _symbol(elf, "Py_Version")
    raw = _read(elf, version_symbol["st_value"], 4) if version_symbol else None
    if raw:
        hexversion = int.from_bytes(raw, "little")
        version = (hexversion >> 24, (hexversion >> 16) & 0xFF)
    else:   # 3.10 and older have no Py_Version: the file's name says it
        named = _NAMED.search(path)
        if not named:
            return None
        version, free_threaded = (int(named.group(1)), int(named.group(2))), bool(named.group(3))
    why = ""
    if version >= (3, 13):
        head = _read(elf, runtime["st_value"], 24)
        if not head or head[:8] != DEBUG_COOKIE:
            why = "no _Py_DebugOffsets in .PyRuntime"
        else:
            offsets_version, threaded = struct.unpack_from("<QQ", head, 8)
            free_threaded = bool(threaded & 0xFF)
            if offsets_version != hexversion:
                why = f"_Py_DebugOffsets of {offsets_version:#x}, not this build's {hexversion:#x}"
    if free_threaded:
        why = "free-threaded build"
    elif version not in SUPPORTED and not why:
        why = "not a version walked here (3.10 to 3.13)"
    code_type = _symbol(elf, "PyCode_Type")
    return Interpreter(path, version, hexversion, runtime["st_value"],
                       code_type["st_value"] if code_type else 0, free_threaded, why)
