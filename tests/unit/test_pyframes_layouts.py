"""Every offset in pyframes.layouts against the numbers a CPython's own headers give, for
each set of headers on the machine (pyenv's 3.10-3.13, Debian's python3.11-dev)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ebpf_otlp.pyframes.layouts import LAYOUTS, NONE

PROBE = Path(__file__).with_name("pyframes_layout_probe.c")
from support.pythons import PYENV


def header_sets() -> list[tuple[tuple[int, int], Path]]:
    found = [((3, 11), Path("/usr/include/python3.11"))]
    for major_minor in ("3.10", "3.11", "3.12", "3.13"):
        found += [(tuple(map(int, major_minor.split("."))), d / "include" / f"python{major_minor}")
                  for d in sorted(PYENV.glob(f"{major_minor}.*"))] if PYENV.is_dir() else []
    return [(v, d) for v, d in found if (d / "Python.h").is_file()]


def test_the_layouts_are_those_of_the_headers(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    sets = header_sets()
    if not cc or not sets:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler or no CPython headers (the image has both)")
        pytest.skip("no C compiler or no CPython headers")
    assert {v for v, _ in sets} >= set(LAYOUTS) or os.environ.get("CI") != "true", sets
    for version, include in sets:
        probe = tmp_path / f"probe-{include.parent.parent.name}"
        subprocess.run([cc, "-w", f"-I{include}", f"-I{include / 'internal'}", "-o", str(probe),
                        str(PROBE)], check=True)
        printed = dict(line.split() for line in subprocess.run(
            [str(probe)], capture_output=True, text=True, check=True).stdout.splitlines())
        layout = dataclasses.asdict(LAYOUTS[version])
        expected = {k: v for k, v in layout.items() if v != NONE}
        assert {k: int(v) for k, v in printed.items()} == expected, include
