"""Symbolizer parts against files we build or write here: no kernel needed."""

import ctypes
import os
import re
import subprocess

from conftest import compile_c, need
from ebpf_otlp.symbolize.elf import ElfObject, SymbolTable, debug_file_path
from ebpf_otlp.symbolize.kernel import KernelSymbols
from ebpf_otlp.symbolize.perfmap import PerfMap, parse_perf_map
from ebpf_otlp.symbolize.procmaps import parse_maps
from ebpf_otlp.symbolize.symbolizer import Symbolizer


def nm_symbols(path):
    out = subprocess.run(["nm", "--defined-only", str(path)], capture_output=True, text=True).stdout
    return {parts[2]: int(parts[0], 16) for parts in (l.split() for l in out.splitlines())
            if len(parts) == 3 and parts[1] in "tT"}


def test_elf_functions_pie_and_build_id(tmp_path):
    for flags in ((), ("-no-pie",)):
        binary = compile_c("hot.c", tmp_path / f"hot{len(flags)}", *flags)
        syms = nm_symbols(binary)
        with open(binary, "rb") as f:
            elf = ElfObject(f, str(binary))
            for name in ("hot_a", "hot_b", "run", "main"):
                vaddr = syms[name] + 4
                # The file offset a process would map this address from:
                off = next(o + vaddr - v for o, size, v in elf._load_segments()
                           if v <= vaddr < v + size)
                assert elf.function_at(off) == name
            notes = subprocess.run(["readelf", "-n", str(binary)], capture_output=True, text=True).stdout
            assert elf.build_id == re.search(r"Build ID: ([0-9a-f]+)", notes).group(1)


def file_offset(elf: ElfObject, vaddr: int) -> int:
    return next(o + vaddr - v for o, size, v in elf._load_segments() if v <= vaddr < v + size)


def test_stripped_binary_takes_symbols_from_its_build_id_debug_file(tmp_path):
    binary = compile_c("hot.c", tmp_path / "hot")
    vaddr = nm_symbols(binary)["hot_a"] + 4
    debug_root = tmp_path / "debug"
    with open(binary, "rb") as f:
        build_id = ElfObject(f, str(binary)).build_id
    target = debug_root / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    target.parent.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(target)], check=True)
    subprocess.run(["strip", "--strip-all", str(binary)], check=True)
    with open(binary, "rb") as f:
        bare = ElfObject(f, str(binary), debug_dirs=())
        assert bare.function_at(file_offset(bare, vaddr)) is None   # only .dynsym is left
        assert bare.symbol_source == ".dynsym"
    with open(binary, "rb") as f:
        elf = ElfObject(f, str(binary), debug_dirs=(str(debug_root),))
        assert elf.function_at(file_offset(elf, vaddr)) == "hot_a"
        assert elf.symbol_source == str(target)


def test_debian_libc_is_named_through_libc6_dbg():
    """Debian strips libc to .dynsym; libc6-dbg (make setup-test) has the rest."""
    libc_path = next(line.split()[-1] for line in open("/proc/self/maps")
                     if re.search(r"/libc\.so\.6$", line))
    with open(libc_path, "rb") as f:
        elf = ElfObject(f, libc_path)
        need(None if debug_file_path(elf.build_id) else
             f"no debug file for {libc_path} (build ID {elf.build_id}): install libc6-dbg")
        names = {name for _, _, name in elf._read_symbols()}
        assert "__libc_start_call_main" in names and elf.symbol_source.startswith("/usr/lib/debug")


def test_not_an_elf(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"not an elf at all")
    with open(p, "rb") as f:
        elf = ElfObject(f, str(p))
        assert not elf.valid and elf.function_at(10) is None and elf.build_id == ""


def test_symbol_table_bounds():
    t = SymbolTable([(0x1000, 0x10, "a"), (0x1020, 0, "b"), (0x1040, 0x8, "c")])
    assert t.lookup(0x1000) == "a" and t.lookup(0x100f) == "a"
    assert t.lookup(0x1010) is None          # past a's size, before b
    assert t.lookup(0x1030) == "b"           # size 0: up to the next symbol
    assert t.lookup(0x0fff) is None and t.lookup(0x1048) is None


def test_parse_maps_keeps_executable_mappings():
    text = """\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 1234 /usr/bin/app
55d0c0001000-55d0c0005000 r-xp 00001000 08:01 1234 /usr/bin/app
7f0000000000-7f0000100000 r-xp 00028000 08:01 99 /usr/lib/libc.so.6 (deleted)
7f0000200000-7f0000300000 rwxp 00000000 00:00 0
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
"""
    entries = parse_maps(text)
    assert [e.path for e in entries] == ["/usr/bin/app", "/usr/lib/libc.so.6", "", "[vdso]"]
    assert entries[0].offset == 0x1000 and entries[0].is_file
    assert not entries[2].is_file and not entries[3].is_file


def test_perf_map(tmp_path):
    assert parse_perf_map("1000 20 LazyCompile:*foo a.js:1\nbad line\n2000 10 bar\n") == [
        (0x1000, 0x20, "LazyCompile:*foo a.js:1"), (0x2000, 0x10, "bar")]
    pm = PerfMap(999999)
    pm.paths = [str(tmp_path / "perf.map")]
    (tmp_path / "perf.map").write_text("1000 20 old\n")
    pm.refresh()
    assert pm.lookup(0x1010) == "old" and pm.lookup(0x1020) is None
    (tmp_path / "perf.map").write_text("1000 20 old\n1000 20 newer\n3000 4 other\n")
    pm.refresh()
    assert pm.lookup(0x1010) == "newer" and pm.lookup(0x3002) == "other"


def test_kernel_symbols(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text("ffffffff81000000 T _stext\nffffffff81000100 t do_thing\n"
                 "ffffffff81000200 D some_data\nffffffff81000300 T later [mod]\n")
    k = KernelSymbols(str(p))
    assert k.lookup(0xffffffff81000150) == "do_thing"
    assert k.lookup(0xffffffff81000250) == "do_thing"   # data symbols are not functions
    assert k.lookup(0xffffffff81000300) == "later"


def test_symbolizer_names_libc_function_in_this_process():
    libc = ctypes.CDLL(None)
    addr = ctypes.cast(libc.getppid, ctypes.c_void_p).value
    s = Symbolizer()
    assert s.remember(os.getpid())
    frame = s.user_frame(os.getpid(), addr, leaf=True)
    assert frame.function == "getppid" and "libc" in frame.module
    assert frame.mapping and frame.mapping.build_id
    unknown = s.user_frame(os.getpid(), 0x10, leaf=True)
    assert unknown.function == "[unknown]"
