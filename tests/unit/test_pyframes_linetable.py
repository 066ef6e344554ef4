"""The line-table decoders against each CPython's own answer, for every code object of a
few stdlib modules: 3.10's co_lines(), 3.11+'s co_positions(), code unit by code unit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ebpf_otlp.pyframes import linetable

HERE = Path(__file__).parent
MODULES = ["json.decoder", "argparse", "asyncio.base_events", "dataclasses"]
from support.pythons import PYENV


def interpreters() -> dict[str, str]:
    """This one, and pyenv's 3.10-3.13 where the image has them."""
    found = {f"{sys.version_info[0]}.{sys.version_info[1]}": sys.executable}
    for d in sorted(PYENV.glob("3.1[0-3].*")) if PYENV.is_dir() else []:
        found.setdefault(".".join(d.name.split(".")[:2]), str(d / "bin" / "python3"))
    return found


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_every_instructions_line_as_the_interpreter_says(version):
    python = interpreters().get(version)
    if python is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no CPython {version} on this machine (pyenv's are on the image)")
        pytest.skip(f"no CPython {version} here")
    done = subprocess.run([python, str(HERE / "dump_line_tables.py"), *MODULES],
                          capture_output=True, text=True, check=True)
    dump = json.loads(done.stdout)
    assert dump["version"] == [int(p) for p in version.split(".")]
    checked = 0
    for code in dump["codes"]:
        ranges = linetable.decode(tuple(dump["version"]), bytes.fromhex(code["table"]), code["first_line"])
        got = [ranges.line_at(2 * unit) for unit in range(len(code["lines"]))]
        assert got == code["lines"], code["name"]
        checked += len(got)
    assert len(dump["codes"]) > 200 and checked > 10000, (len(dump["codes"]), checked)


def test_an_offset_outside_the_code_has_no_line():
    ranges = linetable.decode((3, 12), bytes([0x80 | (13 << 3) | 1, 2]), 10)   # 2 units, line 11
    assert [ranges.line_at(o) for o in (-2, 0, 2, 4)] == [None, 11, 11, None]
    with pytest.raises(ValueError):
        linetable.decode((3, 9), b"", 1)


@pytest.mark.parametrize("version", [(3, 10), (3, 11), (3, 13)])
def test_a_table_from_memory_being_reused_is_a_value_error_never_another(version):
    """Any bytes at all (a table read as its code object was freed and its memory reused)
    decode or raise ValueError: an agent reading them must not die of an IndexError (a soak
    hour saw one: a location table cut inside a varint)."""
    import random
    rng = random.Random(7)
    cut = bytes([0x80 | (14 << 3), 0x41])   # a long-form entry, its varint cut short
    tables = [cut] + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(2000)]
    for table in tables:
        try:
            ranges = linetable.decode(version, table, 1)
        except ValueError:
            continue
        # what decodes is a C int's line: pprof and OTLP carry it as int64 (a soak's window
        # once died encoding a line of -2.6e19 from such bytes)
        assert all(line is None or 0 <= line <= linetable.MAX_LINE for line in ranges.lines)
    with pytest.raises(ValueError):
        linetable.decode((3, 12), cut, 1)
    huge = bytes([0x80 | (13 << 3)]) + bytes([0xFE] * 12 + [0x7E])   # a varint of 2^84: no line number
    with pytest.raises(ValueError):
        linetable.decode((3, 12), huge, 1)
