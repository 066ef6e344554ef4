"""The on-disk symbol cache: round trips, damage, the size bound, unusable directories."""

import os
import shutil
import subprocess

import pytest

from conftest import CACHE_DAMAGE, damaged, need
from ebpf_otlp.symbolize import symcache
from ebpf_otlp.symbolize.elf import ElfObject
from ebpf_otlp.symbolize.symcache import SymbolCache

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
COLUMNS = ([0x1000, 0x1000, 0xffff_ffff_ffff_fff0], [16, 16, 0], ["a", "alias_ü", "last"])


def libc(cache) -> ElfObject:
    with open(LIBC, "rb") as f:
        return ElfObject(f, LIBC, cache=cache).load()


def test_round_trip(tmp_path):
    cache = SymbolCache(str(tmp_path / "c"))
    assert cache.store("abcdef01", *COLUMNS, source="/usr/lib/debug/x.debug")
    hit = cache.load("abcdef01")
    assert (hit.starts, hit.sizes, hit.names) == COLUMNS and hit.source == "/usr/lib/debug/x.debug"
    assert cache.store("ab", [], [], [], ".dynsym") and cache.load("ab").names == []
    assert cache.load("0123") is None
    assert cache.path("../../etc/passwd") is None and not cache.store("../x", *COLUMNS, source="")
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o700


def test_elf_object_reads_from_the_cache(tmp_path):
    cache = SymbolCache(str(tmp_path))
    cold = libc(cache)
    entry = tmp_path / f"{cold.build_id}.v{SymbolCache.version}.sym"
    assert entry.is_file() and [p.name for p in tmp_path.iterdir()] == [entry.name]   # no temp left
    warm = libc(cache)
    assert warm.symbols.columns() == cold.symbols.columns()
    assert warm.symbol_source == cold.symbol_source
    addr = next(s for s, _, n in zip(*cold.symbols.columns()) if n == "getppid")
    assert warm.symbols.lookup(addr + 1) == "getppid"


@pytest.mark.parametrize("damage", CACHE_DAMAGE)
def test_damaged_entries_are_ignored_and_rewritten(tmp_path, damage):
    cache = SymbolCache(str(tmp_path))
    good = libc(cache).symbols.columns()
    entry = next(tmp_path.glob("*.sym"))
    blob = entry.read_bytes()
    entry.write_bytes(damaged(blob, damage))
    assert cache.load(entry.name.split(".")[0]) is None and not entry.exists()
    assert libc(cache).symbols.columns() == good
    assert entry.read_bytes() == blob


def test_size_bound_evicts_least_recently_used(tmp_path):
    one = len(symcache.encode(*COLUMNS, source="s"))
    cache = SymbolCache(str(tmp_path), max_bytes=3 * one)
    for i, name in enumerate(("aa", "bb", "cc")):
        assert cache.store(name, *COLUMNS, source="s")
        os.utime(tmp_path / f"{name}.v{SymbolCache.version}.sym", (1000 + i, 1000 + i))   # aa oldest
    (tmp_path / "not-ours.txt").write_bytes(b"x" * 10 * one)       # never counted nor removed
    assert cache.load("aa") is not None                              # a hit: now the newest
    assert cache.store("dd", *COLUMNS, source="s")
    assert sorted(p.name for p in tmp_path.glob("*.sym")) == [f"{n}.v{SymbolCache.version}.sym" for n in ("aa", "cc", "dd")]
    assert (tmp_path / "not-ours.txt").exists()
    assert not SymbolCache(str(tmp_path), max_bytes=one - 1).store("ee", *COLUMNS, source="s")


def test_unusable_directories_just_do_not_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for cache in (SymbolCache(str(blocker / "sub")), SymbolCache("/proc/no/such/dir")):
        assert not cache.store("abcd", *COLUMNS, source="s") and cache.load("abcd") is None
        assert len(libc(cache).symbols) > 1000
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)                     # others could plant names: not trusted
    assert not SymbolCache(str(shared)).store("abcd", *COLUMNS, source="s")


def test_environment_names_or_disables_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EBPF_OTLP_SYMBOL_CACHE", str(tmp_path / "x"))
    assert symcache.default_cache().directory == str(tmp_path / "x")
    assert symcache.default_cache() is symcache.default_cache()
    for off in ("", "off", "OFF"):
        monkeypatch.setenv("EBPF_OTLP_SYMBOL_CACHE", off)
        assert symcache.default_cache() is None
    monkeypatch.delenv("EBPF_OTLP_SYMBOL_CACHE")
    monkeypatch.setenv("EBPF_OTLP_CACHE", str(tmp_path / "agent"))
    assert symcache.default_dir() == str(tmp_path / "agent" / "symbols")


def test_exports_only_tables_are_not_cached(tmp_path):
    """A stripped copy seen first must not hide its debug file, nor an unstripped copy's
    .symtab (same build ID), seen later."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        need("no C compiler")
    (tmp_path / "p.c").write_text("int work(int x) { return x * 3; }\nint main(void) { return work(2); }\n")
    full, bare = tmp_path / "p", tmp_path / "p.stripped"
    subprocess.run([cc, "-O0", "-o", str(full), str(tmp_path / "p.c")], check=True)
    subprocess.run(["strip", "--strip-all", "-o", str(bare), str(full)], check=True)
    cache = SymbolCache(str(tmp_path / "cache"))
    with open(full, "rb") as f:
        build_id = ElfObject(f, str(full), cache=None).build_id
    debug_root = tmp_path / "debug"
    target = debug_root / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    target.parent.mkdir(parents=True)
    subprocess.run(["objcopy", "--only-keep-debug", str(full), str(target)], check=True)

    def names(path, debug_dirs=()):
        with open(path, "rb") as f:
            elf = ElfObject(f, str(path), debug_dirs=debug_dirs, cache=cache)
            return [n for n in elf.symbols.columns()[2] if not n.endswith("@plt")], elf.symbol_source

    assert names(bare) == ([], ".dynsym") and cache.load(build_id) is None
    assert "work" in names(full)[0] and cache.load(build_id).source == ".symtab"
    assert names(bare) == (names(full)[0], ".symtab")        # the same code, so the same names
    os.unlink(cache.path(build_id))
    assert names(bare, (str(debug_root),))[1] == str(target)
    assert cache.load(build_id).source == str(target)
