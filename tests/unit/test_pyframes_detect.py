"""Finding CPython in an ELF file: Debian's python3.11 (libpython linked in) and pyenv's
shared libpython builds; anything else is not an interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ebpf_otlp.pyframes.detect import detect

from support.pythons import PYENV


def runtime_offset(python: str) -> tuple[str, int]:
    """Where the running interpreter itself has _PyRuntime: the object that holds it, and
    the address less that object's base (its mapping at file offset 0; a shared libpython's
    first segment is at virtual address 0)."""
    code = ("import ctypes\n"
            "addr = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, '_PyRuntime'))\n"
            "maps = [line.split() for line in open('/proc/self/maps')]\n"
            "path = next(m[5] for m in maps if len(m) > 5 and int(m[0].split('-')[0], 16) <= addr"
            " < int(m[0].split('-')[1], 16))\n"
            "base = min(int(m[0].split('-')[0], 16) for m in maps if len(m) > 5 and m[5] == path)\n"
            "print(path, addr - base)\n")
    path, offset = subprocess.run([python, "-c", code], capture_output=True, text=True,
                                  check=True).stdout.split()
    return path, int(offset)


def test_debians_python3_has_its_runtime_in_the_executable():
    if not Path("/usr/bin/python3.11").is_file():
        pytest.skip("not Debian 12's python3.11")
    found = detect("/usr/bin/python3.11")
    assert found and found.version == (3, 11) and not found.unsupported, found
    assert found.hexversion >> 16 == 0x030B


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_pyenvs_shared_libpython(version):
    libs = sorted(PYENV.glob(f"{version}.*/lib/libpython{version}.so.1.0")) if PYENV.is_dir() else []
    if not libs:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no pyenv CPython {version} (the image has them)")
        pytest.skip(f"no pyenv CPython {version}")
    found = detect(str(libs[0]))
    assert found and found.version == tuple(map(int, version.split("."))), found
    assert not found.unsupported and not found.free_threaded, found
    # The address agrees with the running interpreter's own.
    path, offset = runtime_offset(str(libs[0].parents[1] / "bin" / "python3"))
    assert Path(path).resolve() == libs[0].resolve()
    assert offset == found.runtime_vaddr


def test_older_versions_are_named_and_not_walked():
    libs = sorted(PYENV.glob("3.9.*/lib/libpython3.9.so.1.0")) if PYENV.is_dir() else []
    if not libs:
        pytest.skip("no pyenv CPython 3.9")
    found = detect(str(libs[0]))
    assert found and found.version == (3, 9) and found.unsupported, found


def test_other_programs_are_not_interpreters():
    assert detect("/bin/true") is None
    assert detect(sys.executable + ".missing") is None
