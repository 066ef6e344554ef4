"""Symbolizer parts against files we build or write here: no kernel needed."""

import ctypes
import errno
import os
import re
import shutil
import struct
import subprocess
import threading

import pytest
from elftools.elf.elffile import ELFFile

from conftest import compile_c, need
from ebpf_otlp.symbolize import symbolizer as symbolizer_module
from ebpf_otlp.symbolize.elf import ElfObject, SymbolTable, debug_file_path, decode_function_symbols
from ebpf_otlp.symbolize.kernel import KernelSymbols
from ebpf_otlp.symbolize.perfmap import PerfMap, parse_perf_map
from ebpf_otlp.symbolize.procmaps import parse_maps
from ebpf_otlp.symbolize.symbolizer import Symbolizer

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


@pytest.fixture(autouse=True)
def symbol_cache(tmp_path, monkeypatch):
    """Each test its own symbol cache: never the host's, never another test's."""
    monkeypatch.setenv("EBPF_OTLP_SYMBOL_CACHE", str(tmp_path / "symcache"))
    return tmp_path / "symcache"


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


# -- bulk symbol decoding against pyelftools' one object per symbol ------------------

def pyelftools_functions(path, section_name):
    """The reference: pyelftools symbol by symbol (it names STT_GNU_IFUNC 'STT_LOOS')."""
    with open(path, "rb") as f:
        section = ELFFile(f).get_section_by_name(section_name)
        if section is None or section["sh_type"] == "SHT_NOBITS":
            return []
        return [(s["st_value"], s["st_size"], s.name.split("@", 1)[0]) for s in section.iter_symbols()
                if s["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC", "STT_LOOS")
                and s["st_value"] and s["st_shndx"] != "SHN_UNDEF"]


def bulk_functions(path, section_name):
    with open(path, "rb") as f:
        return ElfObject(f, str(path), cache=None)._section_symbols(section_name)


IFUNC_C = r"""
static int impl(void) { return 7; }
static int (*resolve_ifn(void))(void) { return impl; }
int ifn(void) __attribute__((ifunc("resolve_ifn")));
int twice(int x) { return 2 * x; }
int main(void) { return ifn() + twice(1); }
"""


def gcc(tmp_path, name, source, *flags):
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        need("no C compiler")
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    out = tmp_path / name
    subprocess.run([cc, "-O0", "-g0", "-o", str(out), str(src), *flags], check=True)
    return out


def test_bulk_decoding_equals_pyelftools_on_real_files(tmp_path):
    binary = gcc(tmp_path, "ifn", IFUNC_C, "-rdynamic")   # exports: a .dynsym with functions
    cases = [(binary, ".symtab"), (binary, ".dynsym"), (LIBC, ".dynsym")]
    with open(LIBC, "rb") as f:
        debug = debug_file_path(ElfObject(f, LIBC, cache=None).build_id)
    if debug:
        cases.append((debug, ".symtab"))
    for path, section in cases:
        expected = pyelftools_functions(path, section)
        assert expected and bulk_functions(path, section) == expected, (path, section)
    names = {name for _, _, name in bulk_functions(binary, ".symtab")}
    assert {"ifn", "twice", "main", "impl"} <= names          # the IFUNC too


def test_bulk_decoding_elf32(tmp_path):
    source = "int f(int x){return x+1;}\nint g(int x){return f(x)*2;}\nvoid _start(void){for(;;) g(1);}\n"
    try:
        binary = gcc(tmp_path, "t32", source, "-m32", "-nostdlib", "-static")
    except subprocess.CalledProcessError:
        pytest.skip("gcc cannot build 32-bit code here")
    with open(binary, "rb") as f:
        assert ELFFile(f).elfclass == 32
    expected = pyelftools_functions(binary, ".symtab")
    assert {n for _, _, n in expected} >= {"f", "g", "_start"}
    assert bulk_functions(binary, ".symtab") == expected


def test_decoding_both_classes_and_endiannesses():
    strings = b"\0fn\0fn2@GLIBC_2.2\0data\0undef\0"
    # (name offset, info, shndx, value, size): null entry, FUNC, IFUNC, OBJECT, undefined FUNC, zero value
    symbols = [(0, 0, 0, 0, 0), (1, 0x12, 1, 0x1000, 16), (4, 0x1a, 1, 0x2000, 8),
               (18, 0x11, 2, 0x3000, 4), (23, 0x12, 0, 0x4000, 0), (1, 0x12, 1, 0, 0)]
    for order in "<>":
        raw64 = b"".join(struct.pack(order + "IBBHQQ", n, i, 0, sh, v, s) for n, i, sh, v, s in symbols)
        raw32 = b"".join(struct.pack(order + "IIIBBH", n, v, s, i, 0, sh) for n, i, sh, v, s in symbols)
        for raw, elf64 in ((raw64, True), (raw32, False)):
            assert decode_function_symbols(raw, strings, elf64, order == "<") == [
                (0x1000, 16, "fn"), (0x2000, 8, "fn2")]
    padded = b"".join(struct.pack("<IBBHQQ", n, i, 0, sh, v, s) + b"\xff" * 8 for n, i, sh, v, s in symbols)
    assert decode_function_symbols(padded, strings, True, True, entsize=32) == [
        (0x1000, 16, "fn"), (0x2000, 8, "fn2")]


STATIC_C = """
static int hidden(int x) { return x + 1; }
__attribute__((weak)) int maybe(int x) { return hidden(x) * 2; }
int shown(int x) { return maybe(x) + 3; }
int main(void) { return shown(1); }
"""


def test_a_static_executables_callable_functions_come_from_symtab(tmp_path):
    """A static executable has no .dynsym: its global and weak functions (malloc, free, ...)
    are read from .symtab, at nm's addresses; file-local ones are not callable by name."""
    binary = gcc(tmp_path, "static", STATIC_C, "-static")
    syms = {parts[2]: int(parts[0], 16) for parts in (line.split() for line in subprocess.run(
        ["nm", str(binary)], capture_output=True, text=True).stdout.splitlines()) if len(parts) == 3}
    with open(binary, "rb") as f:
        elf = ElfObject(f, str(binary), cache=None)
        assert elf.exported_functions() == {}
        found = elf.global_functions()
    for name in ("shown", "maybe", "main", "malloc", "free"):
        assert found[name] == syms[name], name
    assert "hidden" not in found
    assert found["__libc_malloc"] == found["malloc"]   # glibc's alias, one function


def test_libc_symbol_table_same_as_before(tmp_path):
    """The whole table (sources tried in the same order) equals pyelftools' table."""
    with open(LIBC, "rb") as f:
        elf = ElfObject(f, LIBC, cache=None)
        table = elf.symbols
        source = elf.symbol_source
    path, section = (source, ".symtab") if source.startswith("/") else (LIBC, source)
    assert table.columns() == SymbolTable(pyelftools_functions(path, section)).columns()


# -- open-file bound, losses, preparing symbols in a thread ------------------------------

LIB_C = "int x_hot(int n) { int s = 0; for (int i = 0; i < n; i++) s += i; return s; }\n"
MAIN_C = r"""
#include <stdio.h>
#include <unistd.h>
int x_hot(int);
int main(void) {
    printf("ready %d\n", x_hot(3) + getppid() * 0);
    fflush(stdout);
    char c;
    return (int)read(0, &c, 1);
}
"""


def vaddr_to_addr(snap, path, elf, vaddr):
    """Where a link-time address of the file at `path` sits in a process's memory."""
    for entry in snap.entries:
        if entry.path == str(path):
            for off, size, v in elf._load_segments():
                if v <= vaddr < v + size:
                    addr = entry.start + (off + vaddr - v) - entry.offset
                    if entry.start <= addr < entry.end:
                        return addr
    raise AssertionError(f"{vaddr:#x} of {path} not mapped")


@pytest.fixture
def child(tmp_path):
    """A stripped program that loads its own libx.so, started and waiting on stdin."""
    lib = gcc(tmp_path, "libx.so", LIB_C, "-shared", "-fPIC")
    exe = gcc(tmp_path, "main", MAIN_C, str(lib))
    main_vaddr = nm_symbols(exe)["main"]
    subprocess.run(["strip", "--strip-all", str(exe)], check=True)
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "LD_LIBRARY_PATH": str(tmp_path)})
    assert proc.stdout.readline().startswith("ready")
    yield proc, exe, lib, main_vaddr
    proc.kill()
    proc.wait()


def test_open_file_bound_and_losses(child, tmp_path):
    proc, exe, lib, main_vaddr = child
    s = Symbolizer(max_open_files=1)
    assert s.remember(proc.pid)
    snap = s.processes[(proc.pid, 0)]
    files = {e.file_key for e in snap.entries if e.is_file}
    assert len(files) >= 4 and s._open_files == 1          # exe, libx, libc, ld.so: one held
    with open(lib, "rb") as f:
        x_hot = vaddr_to_addr(snap, lib, ElfObject(f, str(lib)), nm_symbols(lib)["x_hot"])
    with open(exe, "rb") as f:
        main = vaddr_to_addr(snap, exe, ElfObject(f, str(exe)), main_vaddr)
    with open(LIBC, "rb") as f:
        libc_elf = ElfObject(f, LIBC)
        getppid = next(vaddr_to_addr(snap, LIBC, libc_elf, v)
                       for v, _, name in libc_elf._read_symbols() if name == "getppid")
    proc.kill()
    proc.wait()
    exe.unlink()
    lib.unlink()

    main_frame = s.user_frame(proc.pid, main + 1, leaf=True)
    assert main_frame.mapping.build_id                      # the held handle outlives the file
    assert main_frame.function.startswith("main+")           # stripped: .dynsym has no main
    assert s.user_frame(proc.pid, x_hot + 1, leaf=True).function.startswith("libx.so+")
    assert s.user_frame(proc.pid, x_hot + 2, leaf=True).function.startswith("libx.so+")
    assert s.user_frame(proc.pid, getppid, leaf=True).function == "getppid"   # reopened by path
    assert s.losses == {"symbol file missing": 1}   # an address without a symbol is no loss
    assert s._open_files == 0
    s.close()


def test_out_of_descriptors_is_a_loss(monkeypatch):
    def no_fds(*a, **k):
        raise OSError(errno.EMFILE, "Too many open files")
    s = Symbolizer()
    monkeypatch.setattr(symbolizer_module, "open", no_fds, raising=False)
    assert s.remember(os.getpid())
    assert s._open_files == 0 and s.losses == {}            # not final yet: opened when needed
    addr = ctypes.cast(ctypes.CDLL(None).getppid, ctypes.c_void_p).value
    frame = s.user_frame(os.getpid(), addr, leaf=True)
    assert frame.function.startswith("libc.so.6+")
    assert s.losses == {"too many open files": 1}
    monkeypatch.undo()
    s.user_frame(os.getpid(), addr, leaf=True)
    assert s.losses == {"too many open files": 1}           # once per file


def test_prepare_symbols_in_a_thread_while_remembering(child, symbol_cache):
    proc, *_ = child
    s = Symbolizer()
    assert s.remember(os.getpid())
    worker = threading.Thread(target=s.prepare_symbols)
    worker.start()
    for _ in range(20):
        assert s.remember(proc.pid)
    worker.join()
    s.prepare_symbols()                                      # the files remembered since
    assert s._open_files == 0 and all(m.loaded for m in s._files.values())
    with open(LIBC, "rb") as f:
        libc_id = ElfObject(f, LIBC, cache=None).build_id
    assert (symbol_cache / f"{libc_id}.sym").is_file()      # prepared once for the host
    addr = ctypes.cast(ctypes.CDLL(None).getppid, ctypes.c_void_p).value
    assert s.user_frame(os.getpid(), addr, leaf=True).function == "getppid"
    assert s.losses == {}
