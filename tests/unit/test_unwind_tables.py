"""Unwind tables: rows checked against readelf's interpretation of the same CFI (a
compiled program, Debian's libc and python3.11), the encoding on hand-made .eh_frame
sections, and the on-disk cache."""

import os
import re
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import CACHE_DAMAGE, damaged, need_tool
from ebpf_otlp.unwind import tables
from ebpf_otlp.unwind.tables import (END, FP, GAP, PLT, ROW, SP, UNSUPPORTED, UnwindCache,
                                     UnwindTable, compile_cfi, compile_table, load_table)

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
PYTHON = "/usr/bin/python3.11"

PROGRAM = r"""
#include <stdio.h>
#include <string.h>

__attribute__((noipa)) int leaf(int x) { return x * 3 + 1; }

__attribute__((noinline)) int big(int n)            /* sub $8192: the CFA offset moves */
{
    volatile char buf[8192];
    for (int i = 0; i < n; i++)
        buf[i % sizeof buf] = (char)i;
    return buf[n % sizeof buf] + leaf(n);
}

__attribute__((noinline)) long saves(long a, long b, long c)   /* pushes rbp as data */
{
    long x = a * b, y = b * c, z = a * c;
    for (long i = 0; i < a; i++) {
        x += leaf((int)(i + y));
        y ^= leaf((int)(x + z));
        z += leaf((int)(y - i));
    }
    return x + y + z;
}

__attribute__((noinline, optimize("no-omit-frame-pointer"))) int framed(int n)
{
    volatile char buf[64];
    memset((char *)buf, n, sizeof buf);
    return buf[n & 63] + big(n) + (int)saves(n, n + 1, n + 2);
}

int main(int argc, char **argv)
{
    (void)argv;
    printf("%d\n", framed(argc));
    return 0;
}
"""


# --- ground truth: readelf --debug-dump=frames-interp ------------------------------------

_ENTRY = re.compile(r"([0-9a-f]{8}) [0-9a-f]+ [0-9a-f]+ (CIE|FDE)"
                    r"(?: cie=([0-9a-f]+) pc=([0-9a-f]+)\.\.([0-9a-f]+))?")
_ROW = re.compile(r"[0-9a-f]{16} ")
EXP = "exp"    # a CFA expression: readelf does not show it, so PLT or UNSUPPORTED


def expected(columns: dict[str, str]):
    """The row we should have made of one readelf row: (cfa_off, kind, rbp_slot)."""
    ra, cfa, rbp = columns.get("ra", "u"), columns["CFA"], columns.get("rbp", "u")
    unsupported = (0, UNSUPPORTED, 0)
    if ra == "u":
        return (0, END, 0)
    if ra != "c-8":
        return unsupported
    saved = re.fullmatch(r"c([+-]\d+)", rbp)
    if rbp in ("u", "s"):
        slot = 0
    elif saved and int(saved[1]) and int(saved[1]) % 8 == 0 and -128 <= int(saved[1]) // 8 <= 127:
        slot = int(saved[1]) // 8
    else:
        return unsupported
    if cfa == "exp":
        return EXP
    rule = re.fullmatch(r"(rsp|rbp)\+(\d+)", cfa)
    if not rule or int(rule[2]) > 0xFFFF:
        return unsupported
    return (int(rule[2]), SP if rule[1] == "rsp" else FP, slot)


def readelf_rows(path, section=".eh_frame") -> list[tuple[int, object]]:
    """(address, expected row) for every row readelf prints for `section`; an FDE without
    rows starts with its CIE's last row."""
    readelf = need_tool("readelf")
    # Not check=True: readelf exits 1, silently, on Debian's libc, yet prints every entry.
    text = subprocess.run([readelf, "--debug-dump=frames-interp", str(path)],
                          capture_output=True, text=True).stdout
    rows, cies, columns, current, fde = [], {}, [], None, None
    printed = False

    def finish():
        if fde and not printed:
            rows.append((fde[0], cies[fde[1]]))

    for line in text.splitlines():
        if line.startswith("Contents of the "):
            current = line.split()[3]
            continue
        if current != section:
            continue
        entry = _ENTRY.match(line)
        if entry:
            finish()
            printed = False
            if entry[2] == "CIE":
                fde, cie_at = None, int(entry[1], 16)
            else:
                start, end = int(entry[4], 16), int(entry[5], 16)
                fde = (start, int(entry[3], 16)) if end > start else None
                cie_at = None
        elif line.strip().startswith("LOC"):
            columns = line.split()[1:]
        elif _ROW.match(line):
            tokens = []
            for token in line.split():
                if token.startswith("(") and tokens:     # "r9 (r9)": one column
                    tokens[-1] += " " + token
                else:
                    tokens.append(token)
            row = expected(dict(zip(columns, tokens[1:])))
            if cie_at is not None:
                cies[cie_at] = row
            elif fde:
                rows.append((int(tokens[0], 16), row))
                printed = True
    finish()
    return rows


def check_against_readelf(table: UnwindTable, path, section=".eh_frame") -> dict[str, int]:
    rows = readelf_rows(path, section)
    assert rows
    wrong, counts = [], {"rows": len(rows), "unsupported": 0, "exp": 0}
    for loc, want in rows:
        got = table.find(loc)
        if want == EXP:
            counts["exp"] += 1
            ok = got is not None and got[2] in (PLT, UNSUPPORTED)
        else:
            counts["unsupported"] += want[1] == UNSUPPORTED
            ok = got is not None and got[1:] == want
        if not ok:
            wrong.append((hex(loc), want, got))
    assert not wrong, f"{len(wrong)} rows differ from readelf, e.g. {wrong[:10]}"
    return counts


def check_sorted(table: UnwindTable) -> None:
    rows = list(ROW.iter_unpack(table.rows))
    assert all(a[0] < b[0] for a, b in zip(rows, rows[1:]))
    assert all(a[1:] != b[1:] for a, b in zip(rows, rows[1:]))    # merged


def functions(path) -> dict[str, int]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        found = {}
        for name in (".symtab", ".dynsym"):
            symbols = elf.get_section_by_name(name)
            for sym in symbols.iter_symbols() if symbols else ():
                if (sym["st_info"]["type"] == "STT_FUNC" and sym["st_value"]
                        and sym["st_shndx"] != "SHN_UNDEF"):
                    found.setdefault(sym.name, sym["st_value"])
        return found


def section_range(path, name) -> tuple[int, int]:
    with open(path, "rb") as f:
        section = ELFFile(f).get_section_by_name(name)
        return section["sh_addr"], section["sh_addr"] + section["sh_size"]


def table_of(path) -> UnwindTable:
    with open(path, "rb") as f:
        return compile_table(f)


# --- a compiled program --------------------------------------------------------------------

@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    cc = need_tool("gcc")
    where = tmp_path_factory.mktemp("unwind")
    (where / "p.c").write_text(PROGRAM)
    subprocess.run([cc, "-O2", "-fomit-frame-pointer", "-o", str(where / "p"), str(where / "p.c")],
                   check=True)
    return where / "p"


def test_program_rows_agree_with_readelf(program):
    table = table_of(program)
    assert table.source == ".eh_frame" and table.skipped_fdes == 0
    check_sorted(table)
    counts = check_against_readelf(table, program)
    assert counts["unsupported"] == 0
    kinds = {kind for _, _, kind, _ in ROW.iter_unpack(table.rows)}
    assert {SP, FP, PLT, END, GAP} <= kinds
    entries = functions(program)
    for name, address in entries.items():
        row = table.find(address)
        if row is None or row[2] == GAP:
            continue                                  # _init, _fini: no CFI
        assert row[1:] == ((0, END, 0) if name == "_start" else (8, SP, 0)), name
    # Inside: the 8 KiB array, the frame pointer, rbp pushed as a callee-saved register.
    assert any(table.find(a)[1] > 8192 for a in range(entries["big"], entries["big"] + 32))
    assert any(table.find(a)[1:] == (16, FP, -2)
               for a in range(entries["framed"], entries["framed"] + 64))
    assert any(table.find(a)[2] == SP and table.find(a)[3] < 0
               for a in range(entries["saves"], entries["saves"] + 32))


def test_plt_entries(program):
    for path in (program, LIBC):
        if not os.path.exists(path):
            continue
        table = table_of(path)
        start, end = section_range(path, ".plt")
        # The first 16 bytes (PLT0) push and jump: plain rules. Then the expression.
        assert table.find(start)[1:] == (16, SP, 0)
        assert {table.find(a)[1:] for a in range(start + 16, end)} == {(8, PLT, 11)}


def test_debug_frame(program, tmp_path):
    cc = need_tool("gcc")
    need_tool("objcopy")
    out = tmp_path / "dbg"
    subprocess.run([cc, "-O2", "-g", "-fomit-frame-pointer", "-fno-asynchronous-unwind-tables",
                    "-o", str(out), str(program.parent / "p.c")], check=True)
    subprocess.run(["objcopy", "--remove-section=.eh_frame", "--remove-section=.eh_frame_hdr",
                    str(out)], check=True)
    table = table_of(out)
    assert table.source == ".debug_frame"
    check_against_readelf(table, out, ".debug_frame")
    assert table.find(functions(out)["big"])[1:] == (8, SP, 0)
    subprocess.run(["objcopy", "--remove-section=.debug_frame", str(out)], check=True)
    assert table_of(out) == UnwindTable(b"", "no CFI")


def test_files_without_a_table(program, tmp_path):
    blob = bytearray(program.read_bytes())
    struct.pack_into("<H", blob, 18, 183)             # e_machine: EM_AARCH64
    (tmp_path / "arm").write_bytes(blob)
    assert table_of(tmp_path / "arm") == UnwindTable(b"", "not x86_64")
    (tmp_path / "text").write_text("not an ELF file\n" * 10)
    bad = table_of(tmp_path / "text")
    assert not bad.rows and bad.source.startswith("unreadable ELF")


# --- system objects ------------------------------------------------------------------------

@pytest.mark.parametrize("path", [LIBC, PYTHON])
def test_system_objects_agree_with_readelf(path):
    if not os.path.exists(path):
        pytest.skip(f"no {path}")
    table = table_of(path)
    # Debian's libc has DW_CFA_GNU_args_size, which pyelftools' own decoder rejects.
    assert table.source == ".eh_frame" and table.skipped_fdes == 0 and len(table) > 10_000
    check_sorted(table)
    counts = check_against_readelf(table, path)
    unsupported = sum(kind == UNSUPPORTED for _, _, kind, _ in ROW.iter_unpack(table.rows))
    assert unsupported < 20 and counts["exp"] < 20       # longjmp, signal frames, vfork...
    for name, address in functions(path).items():
        row = table.find(address)
        if row and row[2] not in (GAP, END):
            assert row[1:] == (8, SP, 0), name


# --- hand-made .eh_frame sections -----------------------------------------------------------

def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte | (0 if done else 0x80))
        if done:
            return bytes(out)


def adv(n): return bytes([0x40 | n])
def cfa_offset(n): return b"\x0e" + uleb(n)
def cfa(reg, off): return b"\x0c" + uleb(reg) + uleb(off)
def cfa_register(reg): return b"\x0d" + uleb(reg)
def saved(reg, factored): return bytes([0x80 | reg]) + uleb(factored)
def in_register(reg, other): return b"\x09" + uleb(reg) + uleb(other)
def cfa_expression(code: bytes): return b"\x0f" + uleb(len(code)) + code


REMEMBER, RESTORE, ARGS_SIZE = b"\x0a", b"\x0b", b"\x2e\x20"
UNDEFINED_RA, UNDEFINED_RBP, SAME_RBP = b"\x07\x10", b"\x07\x06", b"\x08\x06"


def plt_expression(threshold: int) -> bytes:
    return cfa_expression(bytes([0x77, 8, 0x80, 0, 0x3F, 0x1A, 0x30 + threshold, 0x2A, 0x33, 0x24,
                                 0x22]))


def eh_frame(fdes, data_align=-8) -> bytes:
    """An .eh_frame at address 0: one CIE ("zR", absolute udata4 pointers, CFA rsp+8, RA at
    CFA-8), then FDEs given as (start, size, instructions)."""
    cie = (b"\0\0\0\0\x01zR\0" + uleb(1) + sleb(data_align) + b"\x10" + uleb(1) + b"\x03"
           + cfa(7, 8) + saved(16, 8 // -data_align))
    out = struct.pack("<I", len(cie)) + cie
    for start, size, code in fdes:
        body = struct.pack("<III", len(out) + 4, start, size) + uleb(0) + code
        out += struct.pack("<I", len(body)) + body
    return out + b"\0\0\0\0"


def rows_of(*fdes, **kw) -> list[tuple[int, int, int, int]]:
    table = compile_cfi(eh_frame(fdes, **kw), 0)
    assert table.source == ".eh_frame" and table.skipped_fdes == 0
    return list(ROW.iter_unpack(table.rows))


def test_identical_rows_merge_and_gaps_separate_fdes():
    assert rows_of(
        (0x1000, 0x10, adv(1) + cfa_offset(16) + adv(4) + saved(3, 2) + adv(4) + cfa_offset(8)),
        (0x1010, 0x10, b""),                              # same rule across the boundary
        (0x1030, 0x08, adv(2) + cfa_offset(16) + adv(0) + cfa_offset(24) + adv(9) + cfa_offset(8)),
    ) == [(0x1000, 8, SP, 0), (0x1001, 16, SP, 0), (0x1009, 8, SP, 0), (0x1020, 0, GAP, 0),
          (0x1030, 8, SP, 0), (0x1032, 24, SP, 0), (0x1038, 0, GAP, 0)]


def test_frame_pointer_and_saved_rbp():
    prologue = adv(1) + cfa_offset(16) + saved(6, 2) + adv(3) + cfa_register(6)
    assert rows_of((0x100, 0x20, prologue + adv(12) + cfa(7, 8) + adv(1) + SAME_RBP)) == [
        (0x100, 8, SP, 0), (0x101, 16, SP, -2), (0x104, 16, FP, -2), (0x110, 8, SP, -2),
        (0x111, 8, SP, 0), (0x120, 0, GAP, 0)]


def test_remembered_state_and_args_size():
    code = (adv(1) + cfa_offset(16) + ARGS_SIZE + adv(1) + REMEMBER + cfa_offset(8) + adv(1)
            + RESTORE)
    assert rows_of((0x10, 8, code)) == [(0x10, 8, SP, 0), (0x11, 16, SP, 0), (0x12, 8, SP, 0),
                                        (0x13, 16, SP, 0), (0x18, 0, GAP, 0)]


def test_outermost_and_plt_frames():
    assert rows_of((0x10, 4, UNDEFINED_RA + UNDEFINED_RBP),
                   (0x20, 32, cfa_offset(16) + adv(6) + cfa_offset(24) + adv(10)
                    + plt_expression(11)),
                   (0x40, 16, plt_expression(10))) == [
        (0x10, 0, END, 0), (0x14, 0, GAP, 0), (0x20, 16, SP, 0), (0x26, 24, SP, 0),
        (0x30, 8, PLT, 11), (0x40, 8, PLT, 10), (0x50, 0, GAP, 0)]


@pytest.mark.parametrize("code", [
    cfa(1, 0),                                            # CFA from rdx (longjmp)
    cfa_offset(70_000),                                   # beyond u16
    in_register(6, 0),                                    # rbp kept in rax
    in_register(16, 5),                                   # return address in rdi (vfork)
    saved(16, 2),                                         # return address not at CFA-8
    saved(6, 129),                                        # rbp beyond an s8 slot
    cfa_expression(bytes([0x77, 0xA0, 0x01, 0x06])),      # signal frame: *(rsp+160)
    plt_expression(11) + saved(6, 2),                     # the slot holds the threshold
])
def test_what_we_cannot_follow_is_unsupported(code):
    assert rows_of((0x10, 8, adv(1) + code)) == [(0x10, 8, SP, 0), (0x11, 0, UNSUPPORTED, 0),
                                                 (0x18, 0, GAP, 0)]


def test_rbp_slots_must_be_whole_words():
    # Data alignment -4: rbp at CFA-12.
    assert rows_of((8, 8, adv(1) + saved(6, 3)), data_align=-4)[1] == (9, 0, UNSUPPORTED, 0)
    assert rows_of((8, 8, adv(1) + saved(6, 4)), data_align=-4)[1] == (9, 8, SP, -2)


def test_overlapping_fdes_the_later_start_wins():
    assert rows_of((0x1000, 0x100, adv(0x10) + cfa_offset(16)),
                   (0x1040, 0x20, cfa_offset(32)),
                   (0x1040, 0x10, cfa_offset(48))) == [
        (0x1000, 8, SP, 0), (0x1010, 16, SP, 0), (0x1040, 48, SP, 0), (0x1050, 0, GAP, 0)]


def test_bad_fdes_are_skipped_as_gaps():
    table = compile_cfi(eh_frame([(0x10, 16, adv(1) + cfa_offset(16)),
                                  (0x20, 16, adv(1) + RESTORE),   # nothing remembered
                                  (0x30, 16, b"")]), 0)
    assert table.skipped_fdes == 1
    assert list(ROW.iter_unpack(table.rows)) == [
        (0x10, 8, SP, 0), (0x11, 16, SP, 0), (0x20, 0, GAP, 0), (0x30, 8, SP, 0), (0x40, 0, GAP, 0)]


def test_find_and_limits():
    table = compile_cfi(eh_frame([(0x1000, 0x10, adv(1) + cfa_offset(16))]), 0)
    assert len(table) == 3
    assert table.find(0xFFF) is None
    assert table.find(0x1000) == (0x1000, 8, SP, 0)
    assert table.find(0x100F) == (0x1001, 16, SP, 0)
    assert table.find(1 << 40) == (0x1010, 0, GAP, 0)
    assert compile_cfi(eh_frame([(0xFFFF_FFF0, 0x20, b"")]), 0) == UnwindTable(
        b"", "addresses beyond 4 GiB")
    assert compile_cfi(b"\x10\0\0\0garbage", 0).source.startswith("unreadable .eh_frame")


def test_functions_are_the_fdes_ranges_even_where_rows_merge():
    table = compile_cfi(eh_frame([(0x1000, 0x10, b""), (0x1010, 0x10, b""), (0x1040, 8, b"")]), 0)
    assert table.find(0x1010) == (0x1000, 8, SP, 0)          # one row for both: starts lost there
    assert [table.function_at(a) for a in (0xFFF, 0x1000, 0x100F, 0x1010, 0x1020, 0x1047, 0x1048)] == [
        None, 0x1000, 0x1000, 0x1010, None, 0x1040, None]
    assert tables.decode(tables.encode(table)) == table


# --- the cache -----------------------------------------------------------------------------

BUILD_ID = "0123456789abcdef0123456789abcdef01234567"


def no_compiling(*_):
    raise AssertionError("compiled instead of read from the cache")


def test_cache_round_trip(program, tmp_path, monkeypatch):
    cache = UnwindCache(str(tmp_path / "c"))
    cold = load_table(str(program), BUILD_ID, cache)
    entry = tmp_path / "c" / f"{BUILD_ID}.v{UnwindCache.version}.unw"
    assert cold.rows and [p.name for p in entry.parent.iterdir()] == [entry.name]
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o700
    os.utime(entry, (1000, 1000))
    monkeypatch.setattr(tables, "compile_table", no_compiling)
    warm = load_table(str(program), BUILD_ID, cache)
    assert warm == cold and warm.find(0) == cold.find(0)
    assert entry.stat().st_mtime > 1000                   # touched: recently used
    assert cache.path("../../etc/passwd") is None


@pytest.mark.parametrize("damage", CACHE_DAMAGE)
def test_damaged_entries_are_compiled_again(program, tmp_path, damage):
    cache = UnwindCache(str(tmp_path))
    good = load_table(str(program), BUILD_ID, cache)
    entry = tmp_path / f"{BUILD_ID}.v{UnwindCache.version}.unw"
    blob = entry.read_bytes()
    entry.write_bytes(damaged(blob, damage))
    assert cache.load(BUILD_ID) is None and not entry.exists()
    assert load_table(str(program), BUILD_ID, cache) == good
    assert entry.read_bytes() == blob


def test_what_is_not_cached(program, tmp_path, monkeypatch):
    monkeypatch.setenv("EBPF_OTLP_CACHE", str(tmp_path / "root"))
    where = tmp_path / "root" / "unwind"
    monkeypatch.delenv("EBPF_OTLP_UNWIND_CACHE", raising=False)
    assert tables.default_cache().directory == str(where)
    assert tables.default_cache() is tables.default_cache()
    assert load_table(str(program), None).rows                       # no build ID: no cache
    (tmp_path / "text").write_text("not an ELF file\n")
    assert not load_table(str(tmp_path / "text"), "abcd").rows        # nothing worth keeping
    assert load_table(str(tmp_path / "missing"), "abcd").source.startswith("unreadable")
    assert not where.exists() or not any(where.iterdir())
    for off in ("", "off", "OFF"):
        monkeypatch.setenv("EBPF_OTLP_UNWIND_CACHE", off)
        assert tables.default_cache() is None
        assert load_table(str(program), BUILD_ID).rows
    assert not where.exists() or not any(where.iterdir())
    monkeypatch.setenv("EBPF_OTLP_UNWIND_CACHE", str(tmp_path / "x"))
    assert tables.default_cache().directory == str(tmp_path / "x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert load_table(str(program), BUILD_ID, UnwindCache(str(blocker / "sub"))).rows


def test_size_bound_evicts_least_recently_used(tmp_path):
    table = UnwindTable(ROW.pack(0x1000, 8, SP, 0) * 4, ".eh_frame")
    one = len(tables.encode(table))
    cache = UnwindCache(str(tmp_path), max_bytes=3 * one)
    for i, name in enumerate(("aa", "bb", "cc")):
        assert cache.store(name, table)
        os.utime(tmp_path / f"{name}.v{UnwindCache.version}.unw", (1000 + i, 1000 + i))     # aa oldest
    assert cache.load("aa") == table                                  # a hit: now the newest
    assert cache.store("dd", table)
    assert sorted(p.name for p in tmp_path.glob("*.unw")) == [f"{n}.v{UnwindCache.version}.unw" for n in ("aa", "cc", "dd")]
    assert not UnwindCache(str(tmp_path), max_bytes=one - 1).store("ee", table)


def test_large_files_compile_in_a_child_to_the_same_table(monkeypatch):
    """Above IN_PROCESS_MAX a child process compiles (its memory leaves with it): same rows."""
    from ebpf_otlp.unwind import tables as unwind_tables

    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    with open(libc, "rb") as f:
        here = unwind_tables.compile_table(f)
    monkeypatch.setattr(unwind_tables, "IN_PROCESS_MAX", 0)
    child = unwind_tables.load_table(libc, None, cache=None)
    assert child.rows == here.rows and child.source == here.source and len(child) > 1000
    not_elf = unwind_tables.load_table("/proc/self/status", None, cache=None)
    assert not not_elf.rows and "ELF" in not_elf.source
