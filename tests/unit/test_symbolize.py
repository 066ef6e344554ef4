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
from ebpf_otlp.symbolize.kernel import KernelSymbols, build_id_from_notes
from ebpf_otlp.symbolize.symcache import SymbolCache
from ebpf_otlp.symbolize.perfmap import PerfMap, parse_perf_map
from ebpf_otlp.symbolize.procmaps import parse_maps
from ebpf_otlp.unwind.tables import function_table
from ebpf_otlp.symbolize.symbolizer import Symbolizer

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


@pytest.fixture(autouse=True)
def symbol_cache(tmp_path, monkeypatch):
    """Each test its own symbol and unwind caches: never the host's, never another test's."""
    monkeypatch.setenv("EBPF_OTLP_SYMBOL_CACHE", str(tmp_path / "symcache"))
    monkeypatch.setenv("EBPF_OTLP_UNWIND_CACHE", str(tmp_path / "unwind"))
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
    """The whole table (sources tried in the same order) holds pyelftools' functions, sizes
    kept where they are given, and the PLT entries objdump names."""
    with open(LIBC, "rb") as f:
        elf = ElfObject(f, LIBC, cache=None)
        table = elf.symbols
        source = elf.symbol_source
    path, section = (source, ".symtab") if source.startswith("/") else (LIBC, source)
    ours = list(zip(*table.columns()))
    reference = set(pyelftools_functions(path, section))
    functions = {row for row in ours if not row[2].endswith("@plt")}
    assert {(s, n) for s, _, n in functions} == {(s, n) for s, _, n in reference}
    assert {row for row in reference if row[1]} <= functions
    assert all(size for _, size, _ in functions)
    plt = {n: s for s, _, n in ours if n.endswith("@plt")}
    assert plt == {n: s for n, s in objdump_plt(LIBC).items() if not n.startswith("*ABS*")}


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
    assert (symbol_cache / f"{libc_id}.v{SymbolCache.version}.sym").is_file()      # prepared once for the host
    addr = ctypes.cast(ctypes.CDLL(None).getppid, ctypes.c_void_p).value
    assert s.user_frame(os.getpid(), addr, leaf=True).function == "getppid"
    assert s.losses == {}


# -- PLT entries and symbol bounds ------------------------------------------------------

PLT_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) { printf("%d\n", getppid() + atoi("1")); return 0; }
"""


def objdump_plt(path) -> dict[str, int]:
    """name@plt -> address, as objdump labels the PLT entries (binutils decodes each
    entry's jump to its GOT slot, as perf does)."""
    out = subprocess.run(["objdump", "-d", "-j", ".plt", "-j", ".plt.sec", "-j", ".plt.got", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return {m[2]: int(m[1], 16) for m in re.finditer(r"^([0-9a-f]+) <([^>]+@plt)>:$", out, re.M)}


@pytest.mark.parametrize("flags", [(), ("-no-pie",), ("-Wl,-z,now",), ("-fcf-protection", "-Wl,-z,ibtplt")],
                         ids=["pie", "no-pie", "now", "ibt"])
def test_plt_entries_are_named_name_at_plt_never_init(tmp_path, flags):
    """A call through the PLT lands past the end of _init (a size-0 symbol in .init): the
    stub is named as objdump and perf name it, and the PLT's header is no one's."""
    binary = gcc(tmp_path, "plt", PLT_C, *flags)
    labels = objdump_plt(binary)
    assert {"getppid@plt", "atoi@plt", "printf@plt"} <= set(labels), labels
    with open(binary, "rb") as f:
        elf = ElfObject(f, str(binary), cache=None)
        plt = ELFFile(f).get_section_by_name(".plt")["sh_addr"]
        for name, vaddr in labels.items():
            assert elf.function_at(file_offset(elf, vaddr + 4)) == name
        assert elf.function_at(file_offset(elf, plt + 2)) is None          # the lazy resolver stub
        init = nm_symbols(binary)["_init"]
        assert elf.function_at(file_offset(elf, init)) == "_init"


# -- the vDSO ---------------------------------------------------------------------------

def vdso_function(name: str) -> int:
    """Where this process's vDSO has `name`, as the dynamic linker finds it."""
    vdso = ctypes.CDLL("linux-vdso.so.1", mode=os.RTLD_NOLOAD)
    return ctypes.cast(getattr(vdso, name), ctypes.c_void_p).value


def test_vdso_functions_are_named_from_the_image_in_memory(child):
    """No file holds the vDSO: its image is read from each process's memory while it lives,
    and named as perf names it (the global __vdso_ export, not its weak alias)."""
    proc, *_ = child
    addr = vdso_function("__vdso_clock_gettime")
    s = Symbolizer()
    assert s.remember(os.getpid()) and s.remember(proc.pid)
    own, theirs = (next(e for e in s.processes[(pid, 0)].entries if e.path == "[vdso]")
                   for pid in (os.getpid(), proc.pid))
    proc.kill()
    proc.wait()
    for pid, base in ((os.getpid(), own.start), (proc.pid, theirs.start)):
        frame = s.user_frame(pid, base + addr - own.start + 8, leaf=True)
        assert (frame.function, frame.module) == ("__vdso_clock_gettime", "[vdso]")
        assert frame.mapping.path == "[vdso]" and re.fullmatch(r"[0-9a-f]{40}", frame.mapping.build_id)
        caller = s.user_frame(pid, base + vdso_function("__vdso_gettimeofday") - own.start, leaf=False)
        assert caller.function != "__vdso_gettimeofday"   # a return address: the call before it
    assert len(s._vdso) == 1 and s.losses == {}            # one image, shared by both


# -- stripped code, grouped by the functions its call frame info knows ------------------

TWO_FUNCTIONS_C = r"""
#include <stdio.h>
#include <unistd.h>
__attribute__((noinline)) int first(int n) { int s = 0; for (int i = 0; i < n; i++) s += i * 3; return s; }
__attribute__((noinline)) int second(int n) { int s = 1; for (int i = 0; i < n; i++) s ^= i << 2; return s; }
int main(void) {
    printf("ready %d\n", first(3) + second(3));
    fflush(stdout);
    char c;
    return (int)read(0, &c, 1);
}
"""


def test_stripped_code_adds_up_by_function(tmp_path):
    """No symbol names a stripped file's own functions: each address is named after the
    start of the FDE covering it (module+offset of the function), so two addresses in one
    function get one name and those in another function another."""
    exe = gcc(tmp_path, "two", TWO_FUNCTIONS_C)
    syms = nm_symbols(exe)
    with open(exe, "rb") as f:
        elf = ElfObject(f, str(exe), cache=None)
        start_offset = {name: file_offset(elf, syms[name]) for name in ("first", "second")}
    subprocess.run(["strip", "--strip-all", str(exe)], check=True)
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ready")
        s = Symbolizer(function_table=function_table)   # as the profile's processor makes it
        assert s.remember(proc.pid)
        snap = s.processes[(proc.pid, 0)]
        with open(exe, "rb") as f:
            stripped = ElfObject(f, str(exe), cache=None)
            addr = {name: vaddr_to_addr(snap, exe, stripped, syms[name]) for name in ("first", "second")}

        def named(name, delta, leaf=True):
            return s.user_frame(proc.pid, addr[name] + delta, leaf=leaf).function
    finally:
        proc.stdin.close()
        proc.wait()
    for name in ("first", "second"):
        expected = f"two+{start_offset[name]:#x}"
        assert named(name, 0) == named(name, 5) == named(name, 12, leaf=False) == expected
    assert named("first", 5) != named("second", 5)


# -- the kernel's build ID -------------------------------------------------------------------

def note(name: bytes, kind: int, desc: bytes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 4)
    return struct.pack("=III", len(name), len(desc), kind) + pad(name) + pad(desc)


KERNEL_ID = bytes(range(0xA0, 0xB4))


def test_kernel_build_id_from_its_notes(tmp_path):
    """/sys/kernel/notes is the kernel image's ELF notes: the GNU build ID among them goes on
    the kernel's mapping (pprof and OTLP), as perf records it."""
    notes = note(b"Xen\0", 3, b"\1\2\3") + note(b"Linux\0", 0x101, b"\1") + note(b"GNU\0", 3, KERNEL_ID)
    assert build_id_from_notes(notes) == KERNEL_ID.hex()
    assert build_id_from_notes(notes[:-4]) == "" and build_id_from_notes(b"") == ""
    (tmp_path / "notes").write_bytes(notes)
    (tmp_path / "kallsyms").write_text("ffffffff81000000 T _stext\nffffffff81000100 t do_thing\n")
    s = Symbolizer(KernelSymbols(str(tmp_path / "kallsyms"), str(tmp_path / "notes")))
    frame = s.kernel_frame(0xffffffff81000150)
    assert frame.function == "do_thing" and frame.mapping.build_id == KERNEL_ID.hex()

    from ebpf_otlp.export import otlp_profiles, pprof
    from ebpf_otlp.export.pprof_schema import Profile as PprofProfile
    from ebpf_otlp.records import Profile, StackSample, cpu_shape
    from opentelemetry.sdk.resources import Resource

    profile = Profile([StackSample(1, 1, "t", "p", (frame,), (1, 10))], start_ns=0, duration_ns=1, **cpu_shape(99))
    prof = PprofProfile.FromString(pprof.build(profile).SerializeToString())
    assert [(prof.string_table[m.filename], prof.string_table[m.build_id]) for m in prof.mapping] == [
        ("[kernel.kallsyms]", KERNEL_ID.hex())]
    d = otlp_profiles.build(profile, Resource.create({})).dictionary
    (mapping,) = d.mapping_table[1:]
    attrs = {d.string_table[d.attribute_table[i].key_strindex]: d.attribute_table[i].value.string_value
             for i in mapping.attribute_indices}
    assert attrs == {otlp_profiles.BUILD_ID_ATTR: KERNEL_ID.hex()}


def test_this_kernels_build_id_is_on_its_frames():
    need(None if os.path.exists("/sys/kernel/notes") else "no /sys/kernel/notes")
    with open("/sys/kernel/notes", "rb") as f:
        raw = f.read()
    build_id = Symbolizer().kernel_frame(0xffffffff81000000).mapping.build_id
    assert re.fullmatch(r"[0-9a-f]{40}", build_id) and bytes.fromhex(build_id) in raw
