"""Time to get libc's symbol table: cold the old way (pyelftools, one object per symbol),
cold the new way (bulk decode), and warm (from the on-disk cache); then the same for every
file this process maps, through Symbolizer.prepare_symbols().

    .venv/bin/python bench/symbol_load.py [--runs N] [--lib PATH]

Files are in the page cache after the first run: these are CPU costs, not disk reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from elftools.elf.elffile import ELFFile  # noqa: E402

from ebpf_otlp.symbolize.elf import ElfObject, SymbolTable, debug_file_path  # noqa: E402
from ebpf_otlp.symbolize.symcache import SymbolCache  # noqa: E402
from ebpf_otlp.symbolize.symbolizer import Symbolizer  # noqa: E402

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def old_way(path: str) -> SymbolTable:
    """What ElfObject.symbols did before: pyelftools' iter_symbols over the first of
    .symtab, the build-ID debug file's .symtab, .dynsym."""
    def functions(elf_path: str, name: str) -> list:
        with open(elf_path, "rb") as f:
            section = ELFFile(f).get_section_by_name(name)
            if section is None or section["sh_type"] == "SHT_NOBITS":
                return []
            return [(s["st_value"], s["st_size"], s.name.split("@", 1)[0])
                    for s in section.iter_symbols()
                    if s["st_info"]["type"] in ("STT_FUNC", "STT_GNU_IFUNC")
                    and s["st_value"] and s["st_shndx"] != "SHN_UNDEF"]

    with open(path, "rb") as f:
        build_id = ElfObject(f, path, cache=None).build_id
    debug = debug_file_path(build_id)
    found = (functions(path, ".symtab") or (debug and functions(debug, ".symtab"))
             or functions(path, ".dynsym"))
    return SymbolTable(found)


def new_way(path: str, cache) -> ElfObject:
    with open(path, "rb") as f:
        elf = ElfObject(f, path, cache=cache)
        elf.symbols
    return elf


def timed(fn, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3, statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--lib", default=LIBC)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cache = SymbolCache(os.path.join(tmp, "symbols"))
        elf = new_way(args.lib, cache)                   # primes the cache
        print(f"{args.lib}: {len(elf.symbols)} function symbols from {elf.symbol_source}")
        rows = [("cold, before (pyelftools per symbol)", lambda: old_way(args.lib)),
                ("cold, after (bulk decode)", lambda: new_way(args.lib, None)),
                ("warm (on-disk cache)", lambda: new_way(args.lib, cache))]
        for label, fn in rows:
            best, median = timed(fn, args.runs)
            print(f"  {label:38s} min {best:8.1f} ms   median {median:8.1f} ms")

        os.environ["EBPF_OTLP_SYMBOL_CACHE"] = os.path.join(tmp, "all")
        for label in ("cold", "warm"):
            s = Symbolizer()
            s.remember(os.getpid())
            t = time.perf_counter()
            n = s.prepare_symbols()
            print(f"prepare_symbols, {len(s._files)} files mapped by this process, {label}: "
                  f"{(time.perf_counter() - t) * 1e3:.1f} ms ({n} ready)")


if __name__ == "__main__":
    main()
