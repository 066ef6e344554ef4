"""Unwind tables for the BPF stack walker, compiled from an ELF file's call frame info.

Code built without frame pointers can only be unwound with its CFI (.eh_frame, else
.debug_frame): a small program per function that BPF cannot run. We run it here, ahead
of time, and keep only what an x86_64 unwinder needs to step to the caller: how to get
the CFA (the caller's rsp) and where the caller's rbp was saved. One 8-byte ROW per
change, sorted by address, for a binary search in BPF; the return address is always at
CFA-8 (other rules are marked UNSUPPORTED). Tables are cached on disk by build ID.

pyelftools parses the section; the rules are interpreted here because its decoder keeps
every register of every row (most of the cost), fails on DW_CFA_GNU_args_size (found in
Debian's libc) and scales DW_CFA_def_cfa_sf by the code alignment factor.
"""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import threading
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO

from elftools.common.exceptions import DWARFError, ELFError
from elftools.construct import ConstructError
from elftools.dwarf.callframe import FDE, CallFrameInfo
from elftools.dwarf.structs import DWARFStructs
from elftools.elf.elffile import ELFFile

from ebpf_otlp import buildid_cache
from ebpf_otlp.buildid_cache import BuildIdCache, EntryFormat

ROW = struct.Struct("<IHBb")     # pc, cfa_off, kind, rbp_slot; read as is by the BPF side
FUNCTION = struct.Struct("<II")  # an FDE's start and end: where a function is, symbols or not

# Row kinds.
GAP = 0            # no CFI here: the unwinder falls back to frame pointers
SP = 1             # CFA = rsp + cfa_off
FP = 2             # CFA = rbp + cfa_off
PLT = 3            # CFA = rsp + cfa_off + ((rip & 15) >= rbp_slot ? 8 : 0)
END = 4            # return address undefined: the outermost frame
UNSUPPORTED = 5    # CFI the unwinder cannot follow

RBP, RSP = 6, 7                  # x86_64 DWARF registers (the return address is 16)
_TOMBSTONES = (0, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF)   # FDEs of code the linker dropped
_UNSUPPORTED = (0, UNSUPPORTED, 0)
_END = (0, END, 0)
# gcc/ld's CFA for .plt: rsp+8, plus 8 once rip is past the entry's push (at offset N).
_PLT_EXPR = re.compile(rb"\x77([\x00-\x3f])\x80\x00\x3f\x1a(?:([\x30-\x4f])|\x08([\x00-\x10]))"
                       rb"\x2a\x33\x24\x22")
# What pyelftools (or damaged input) raises on a bad file; not our own bugs.
_BAD_INPUT = (ELFError, DWARFError, ConstructError, AssertionError, ValueError, KeyError,
              IndexError, TypeError, struct.error, OSError)


@dataclass(frozen=True)
class UnwindTable:
    """The rows of one ELF file, or none and why (source)."""

    rows: bytes          # packed ROW, sorted by pc
    source: str          # ".eh_frame", ".debug_frame", or why there is no table
    skipped_fdes: int = 0   # FDEs we could not interpret: their ranges are GAPs
    functions: bytes = b""  # packed FUNCTION of every FDE, sorted by start

    def __len__(self) -> int:
        return len(self.rows) // ROW.size

    @cached_property
    def _pcs(self) -> list[int]:
        return [pc for pc, *_ in ROW.iter_unpack(self.rows)]

    @cached_property
    def _function_starts(self) -> array:
        pairs = array("I", self.functions)
        if sys.byteorder == "big":
            pairs.byteswap()
        return pairs[::2]

    def function_at(self, vaddr: int) -> int | None:
        """The start of the function (its FDE) holding vaddr: what groups a stripped file's
        addresses by function, where no symbol names them."""
        i = bisect_right(self._function_starts, vaddr) - 1
        if i < 0:
            return None
        start, end = FUNCTION.unpack_from(self.functions, i * FUNCTION.size)
        return start if vaddr < end else None

    def find(self, vaddr: int) -> tuple[int, int, int, int] | None:
        """(pc, cfa_off, kind, rbp_slot) of the row covering vaddr, as the BPF side's search
        should find it; None before the first row."""
        i = bisect_right(self._pcs, vaddr) - 1
        return ROW.unpack_from(self.rows, i * ROW.size) if i >= 0 else None


def compile_table(stream: BinaryIO) -> UnwindTable:
    """The table of an open ELF file; a file we cannot use gives no rows and the reason."""
    try:
        elf = ELFFile(stream)
        if elf.elfclass != 64 or elf["e_machine"] != "EM_X86_64":
            return UnwindTable(b"", "not x86_64")
        for name in (".eh_frame", ".debug_frame"):
            section = elf.get_section_by_name(name)
            if section is not None and section["sh_type"] != "SHT_NOBITS" and section["sh_size"]:
                return compile_cfi(section.data(), section["sh_addr"], name)
    except _BAD_INPUT as e:
        return UnwindTable(b"", _why("unreadable ELF", e))
    return UnwindTable(b"", "no CFI")


def compile_cfi(data: bytes, address: int, section: str = ".eh_frame") -> UnwindTable:
    """The table of a CFI section's bytes, loaded at `address` (for pc-relative pointers);
    `section` says which format (".eh_frame" or ".debug_frame")."""
    eh = section == ".eh_frame"
    try:
        # CallFrameInfo alone: get_dwarf_info() would read every .debug_* section first.
        entries = CallFrameInfo(io.BytesIO(data), len(data), address,
                                DWARFStructs(little_endian=True, dwarf_format=32, address_size=8),
                                for_eh_frame=eh).get_entries()
        fdes = sorted((e for e in entries if isinstance(e, FDE) and e["address_range"]
                       and e["initial_location"] not in _TOMBSTONES),
                      key=lambda fde: fde["initial_location"])
    except _BAD_INPUT as e:
        return UnwindTable(b"", _why(f"unreadable {section}", e))
    if fdes and max(f["initial_location"] + f["address_range"] for f in fdes) > 0xFFFF_FFFF:
        return UnwindTable(b"", "addresses beyond 4 GiB")
    return _compile(fdes, eh, section)


def _why(what: str, error: Exception) -> str:
    return f"{what} ({type(error).__name__}: {error})"[:200]


def _compile(fdes: list[FDE], eh: bool, source: str) -> UnwindTable:
    out: list[tuple[int, int, int, int]] = []
    skipped = 0
    cies: dict[int, tuple] = {}         # CIE offset -> state after its initial instructions
    kinds: dict[tuple, tuple[int, int, int]] = {}
    for fde in fdes:
        start = fde["initial_location"]
        end = start + fde["address_range"]
        while out and out[-1][0] >= start:      # a later-starting FDE wins from its start
            out.pop()
        try:
            cie = fde.cie
            initial = cies.get(cie.offset)
            if initial is None:
                initial = cies[cie.offset] = _run(cie, 0, 1 << 64, _UNSET, _UNSET, eh)[1]
            rows = _run(fde, start, end, initial, initial, eh)[0]
        except (ValueError, IndexError, KeyError, TypeError, DWARFError):
            skipped += 1
            rows = []
            out.append((start, 0, GAP, 0))
        for pc, state in rows:
            row = kinds.get(state)
            if row is None:
                row = kinds[state] = _classify(*state)
            out.append((pc, *row))
        out.append((end, 0, GAP, 0))
    packed, last = bytearray(), None
    for row in out:
        if row[1:] != last:                     # merge rows that change nothing
            packed += ROW.pack(*row)
            last = row[1:]
    functions = b"".join(FUNCTION.pack(f["initial_location"], f["initial_location"] + f["address_range"])
                         for f in fdes)
    return UnwindTable(bytes(packed), source, skipped, functions)


# Interpreter state: (cfa_reg, cfa_off, cfa_expr, rbp rule, return address rule). A rule is
# None (unspecified), "u" (undefined), "s" (same value), an int (saved at CFA+n) or "x"
# (anything else: another register, an expression, a value rule).
_UNSET = (None, 0, None, None, None)


def _run(entry, pc: int, end: int, state: tuple, initial: tuple, eh: bool):
    """Run a CIE's or FDE's instructions from `state`: the (pc, state) rows at each change
    below `end`, and the final state. Raises ValueError for what we cannot follow."""
    cie = entry.cie if isinstance(entry, FDE) else entry
    code_align = cie["code_alignment_factor"]
    data_align = cie["data_alignment_factor"]
    ra_reg = cie["return_address_register"]
    cfa_reg, cfa_off, cfa_expr, rbp, ra = state
    stack: list[tuple] = []
    rows: list[tuple[int, tuple]] = []
    for instr in entry.instructions:
        op, args = instr.opcode, instr.args
        if op == 0x40 or 0x02 <= op <= 0x04 or op == 0x01:      # advance_loc*, set_loc
            if op == 0x01:
                if eh or args[0] < pc:
                    raise ValueError("DW_CFA_set_loc")           # encoding not handled
                delta = args[0] - pc
            else:
                delta = args[0] * code_align
            if delta:
                state = (cfa_reg, cfa_off, cfa_expr, rbp, ra)
                if not rows or rows[-1][1] != state:
                    rows.append((pc, state))
                pc += delta
                if pc >= end:
                    return rows, state
        elif op == 0x0E:                                          # def_cfa_offset
            cfa_off = args[0]
        elif op in (0x80, 0x05, 0x11, 0x07, 0x08, 0x09, 0x10, 0x14, 0x15, 0x16):
            reg = args[0]
            if reg == RBP or reg == ra_reg:
                if op in (0x80, 0x05, 0x11):                      # offset*
                    rule = args[1] * data_align
                else:
                    rule = "u" if op == 0x07 else "s" if op == 0x08 else "x"
                if reg == RBP:
                    rbp = rule
                else:
                    ra = rule
        elif op == 0x0A:                                          # remember_state
            stack.append((cfa_reg, cfa_off, cfa_expr, rbp, ra))
        elif op == 0x0B:                                          # restore_state
            cfa_reg, cfa_off, cfa_expr, rbp, ra = stack.pop()
        elif op == 0xC0 or op == 0x06:                            # restore*
            if args[0] == RBP:
                rbp = initial[3]
            elif args[0] == ra_reg:
                ra = initial[4]
        elif op == 0x0D:                                          # def_cfa_register
            cfa_reg, cfa_expr = args[0], None
        elif op == 0x0C:                                          # def_cfa
            cfa_reg, cfa_off, cfa_expr = args[0], args[1], None
        elif op == 0x12:                                          # def_cfa_sf
            cfa_reg, cfa_off, cfa_expr = args[0], args[1] * data_align, None
        elif op == 0x13:                                          # def_cfa_offset_sf
            cfa_off = args[0] * data_align
        elif op == 0x0F:                                          # def_cfa_expression
            cfa_reg, cfa_off, cfa_expr = None, 0, bytes(args[0])
        elif op != 0x00 and op != 0x2E:                           # nop, GNU_args_size
            raise ValueError(f"CFI opcode {int(op):#x}")
    state = (cfa_reg, cfa_off, cfa_expr, rbp, ra)
    if pc < end and (not rows or rows[-1][1] != state):
        rows.append((pc, state))
    return rows, state


def _classify(cfa_reg, cfa_off, cfa_expr, rbp, ra) -> tuple[int, int, int]:
    """(cfa_off, kind, rbp_slot) of an interpreter state."""
    if ra == "u":
        return _END
    if ra != -8:
        return _UNSUPPORTED
    if rbp is None or rbp == "u" or rbp == "s":
        slot = 0
    elif isinstance(rbp, int) and rbp and rbp % 8 == 0 and -128 <= rbp // 8 <= 127:
        slot = rbp // 8
    else:
        return _UNSUPPORTED
    if cfa_expr is not None:
        plt = _PLT_EXPR.fullmatch(cfa_expr)
        if plt is None or slot:
            return _UNSUPPORTED
        threshold = plt[2][0] - 0x30 if plt[2] else plt[3][0]
        return (plt[1][0], PLT, threshold)
    kind = SP if cfa_reg == RSP else FP if cfa_reg == RBP else None
    if kind is None or not 0 <= cfa_off <= 0xFFFF:
        return _UNSUPPORTED
    return (cfa_off, kind, slot)


# The on-disk cache: one `<build-id>.unw` per file, the header's fields being the row
# count, the source's length, the skipped FDEs and the function count; the body the
# source, the rows, then the functions.
ENV = "EBPF_OTLP_UNWIND_CACHE"                 # a directory; "" or "off" disables
FORMAT = EntryFormat(b"EOTLPUNW", 2, 4)       # 2: the functions
DEFAULT = object()                             # "whatever the environment says"


def encode(table: UnwindTable) -> bytes:
    src = table.source.encode()
    return FORMAT.pack((len(table), len(src), table.skipped_fdes, len(table.functions) // FUNCTION.size),
                       src + table.rows + table.functions)


def decode(blob: bytes) -> UnwindTable | None:
    """The table in blob; None for anything damaged, truncated or of another version."""
    unpacked = FORMAT.unpack(blob)
    if unpacked is None:
        return None
    (count, source_len, skipped, functions), body = unpacked
    rows_end = source_len + count * ROW.size
    if len(body) != rows_end + functions * FUNCTION.size:
        return None
    try:
        source = str(body[:source_len], "utf-8")
    except UnicodeDecodeError:
        return None
    return UnwindTable(bytes(body[source_len:rows_end]), source, skipped, bytes(body[rows_end:]))


class UnwindCache(BuildIdCache):
    """Unwind tables by build ID, in a bounded directory (see buildid_cache)."""

    suffix = ".unw"
    version = FORMAT.version

    def load(self, build_id: str) -> UnwindTable | None:
        return self.read(build_id, decode)

    def store(self, build_id: str, table: UnwindTable) -> bool:
        return self.write(build_id, encode(table))


def default_cache() -> UnwindCache | None:
    """The cache the environment names (one object per directory), or None if disabled."""
    where = buildid_cache.cache_dir(ENV, "unwind")
    return None if where is None else buildid_cache.shared(UnwindCache, where)


_compiling: dict[str, threading.Lock] = {}
_compiling_lock = threading.Lock()


def cached_table(build_id: str | None, cache=DEFAULT) -> UnwindTable | None:
    """The table from the disk cache alone (None: not there, or no cache)."""
    if cache is DEFAULT:
        cache = default_cache()
    return cache.load(build_id) if cache is not None and build_id else None


def load_table(path: str, build_id: str | None, cache=DEFAULT, nice: int | None = None) -> UnwindTable:
    """The table of the ELF file at path, from the cache if its build ID is there.
    Tables without rows are not cached: cheap to find again, and a copy with the same
    build ID may have CFI this one lost (a stripped .debug_frame). Two threads asking
    for the same build ID compile it once: the second waits and reads the cache. `nice`:
    a compiling child's (default CHILD_NICE; never below the agent's own)."""
    if cache is DEFAULT:
        cache = default_cache()
    if not build_id:
        cache = None
    if cache is None:
        return _compile_file(path, "", None, nice)
    with _compiling_lock:
        lock = _compiling.setdefault(build_id, threading.Lock())
    with lock:
        hit = cache.load(build_id)
        table = hit if hit is not None else _compile_file(path, build_id, cache, nice)
    with _compiling_lock:
        _compiling.pop(build_id, None)
    return table


def _compile_and_store(path: str, build_id: str, cache) -> UnwindTable:
    try:
        with open(path, "rb") as f:
            table = compile_table(f)
    except OSError as e:
        return UnwindTable(b"", f"unreadable ({e.strerror})")
    if cache is not None and build_id and table.rows:
        cache.store(build_id, table)
    return table


IN_PROCESS_MAX = 256 << 10   # bytes of file compiled in this process; larger ones in a child
CHILD_NICE = 10              # below the workloads, not starved on a busy host


def _compile_file(path: str, build_id: str, cache, nice: int | None) -> UnwindTable:
    """Compile here only small files. Others compile in a child process: parsing
    libpython's .eh_frame peaks at 40 MB of Python objects (LLVM's at 600 MB), memory an
    agent would keep, and holds for seconds the interpreter lock its capture loop needs.
    The child stores the table in the cache itself, so the work is kept even if the agent
    exits first (it does not wait for compiles)."""
    try:
        small = os.stat(path).st_size <= IN_PROCESS_MAX
    except OSError as e:
        return UnwindTable(b"", f"unreadable ({e.strerror})")
    if small:
        return _compile_and_store(path, build_id, cache)
    where = cache.directory if cache is not None else ""
    try:
        child = subprocess.run([sys.executable, "-m", "ebpf_otlp.unwind.tables", path, build_id, where,
                                str(CHILD_NICE if nice is None else nice)], capture_output=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        return UnwindTable(b"", f"compile failed ({e})")
    table = decode(child.stdout) if child.returncode == 0 else None
    if table is None:
        why = child.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        return UnwindTable(b"", f"compile failed ({why[0][:200]})")
    return table


def _child(path: str, build_id: str, where: str, nice: str) -> None:
    """The child of _compile_file: compile, store, then the encoded table on stdout."""
    try:   # never above the agent, whatever nice the thread that started us had
        os.setpriority(os.PRIO_PROCESS, 0, max(int(nice), os.getpriority(os.PRIO_PROCESS, os.getppid())))
    except OSError:
        pass
    cache = buildid_cache.shared(UnwindCache, where) if where else None
    table = _compile_and_store(path, build_id, cache)
    try:
        sys.stdout.buffer.write(encode(table))
        sys.stdout.flush()
    except BrokenPipeError:   # the agent is gone: the cache has the table
        pass


if __name__ == "__main__":
    _child(*sys.argv[1:5])


def function_table(paths: tuple[str, ...], elf) -> UnwindTable:
    """Where each function of a mapped file starts (`function_at`), for the symbolizer to
    group a stripped file's frames by function: its unwind table, from the disk cache by
    build ID, else compiled (once per host) from a path that still holds that build ID."""
    from ebpf_otlp.symbolize.elf import ElfObject

    table = cached_table(elf.build_id)
    if table is not None:
        return table
    for path in paths:
        try:
            with open(path, "rb") as f:
                if ElfObject(f, path, cache=None).build_id != elf.build_id:
                    continue
        except OSError:
            continue
        return load_table(path, elf.build_id or None)
    return UnwindTable(b"", "file gone")
