"""Line numbers from a code object's line table, as the interpreter that made it reads it.

The tables are read out of another process's memory, whatever CPython it runs, so they are
decoded here rather than by this interpreter's code objects:

- 3.10: `co_linetable` (PEP 626), pairs of (bytes advanced, signed line delta; -128: no line).
- 3.11+: the location table (CPython's Objects/locations.md), one entry per run of code units,
  each its line delta (and columns, not needed here) in one of five forms.

Both decode to ranges of byte offsets into the bytecode, each with its line or None."""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple


MAX_LINE = (1 << 31) - 1     # co_firstlineno and the interpreter's line numbers are C ints


class LineRanges(NamedTuple):
    """Sorted start offsets (bytes), each range's line (None: no line), and where the last ends."""
    starts: list[int]
    lines: list[int | None]
    end: int

    def line_at(self, offset: int) -> int | None:
        """The line of the instruction at byte `offset`; None where the table names none."""
        if offset < 0 or offset >= self.end:
            return None
        i = bisect_right(self.starts, offset) - 1
        return self.lines[i] if i >= 0 else None


def decode(version: tuple[int, int], table: bytes, first_line: int) -> LineRanges:
    """The line ranges of a code object of CPython `version` (major, minor). ValueError for
    a table that ends inside an entry: read from another process's memory, it may be one
    being freed and reused as the kernel sampled it."""
    if version < (3, 10):
        raise ValueError(f"CPython {version[0]}.{version[1]}: line tables before 3.10 are not read")
    try:
        ranges = _pep626(table, first_line) if version == (3, 10) else _locations(table, first_line)
    except IndexError:
        raise ValueError(f"a line table of {len(table)} bytes ends inside an entry") from None
    if any(line is not None and not 0 <= line <= MAX_LINE for line in ranges.lines):
        raise ValueError("line numbers past a C int: not a line table (the object was freed?)")
    return ranges


def _pep626(table: bytes, first_line: int) -> LineRanges:
    """3.10's co_linetable: as Objects/codeobject.c's advance() walks it."""
    starts: list[int] = []
    lines: list[int | None] = []
    line, end = first_line, 0
    for i in range(0, len(table) - 1, 2):
        advance, delta = table[i], table[i + 1]
        start, end = end, end + advance
        if delta == 0x80:   # -128
            this = None
        else:
            line += delta - 256 if delta > 127 else delta
            this = line
        if start == end:
            continue
        if lines and lines[-1] == this:   # the same line goes on
            continue
        starts.append(start)
        lines.append(this)
    return LineRanges(starts, lines, end)


def _varint(table: bytes, i: int) -> tuple[int, int]:
    """An unsigned varint of 6-bit chunks, low first, 0x40 meaning more follow."""
    b = table[i]
    value, shift = b & 63, 6
    i += 1
    while b & 64:
        b = table[i]
        value |= (b & 63) << shift
        shift += 6
        i += 1
    return value, i


def _svarint(table: bytes, i: int) -> tuple[int, int]:
    value, i = _varint(table, i)
    return (-(value >> 1) if value & 1 else value >> 1), i


def _locations(table: bytes, first_line: int) -> LineRanges:
    """3.11+'s location table: each entry's first byte has bit 7 set, a code in bits 3-6
    and its length in code units (2 bytes) minus one in bits 0-2."""
    starts: list[int] = []
    lines: list[int | None] = []
    line, offset, i, n = first_line, 0, 0, len(table)
    while i < n:
        head = table[i]
        code, units = (head >> 3) & 15, (head & 7) + 1
        i += 1
        if code == 15:          # no location
            this = None
        elif code == 14:        # long form: line delta, end line delta, columns
            delta, i = _svarint(table, i)
            line += delta
            this = line
            for _ in range(3):
                _, i = _varint(table, i)
        elif code == 13:        # no columns
            delta, i = _svarint(table, i)
            line += delta
            this = line
        elif code >= 10:        # one line: delta code - 10, then start and end column bytes
            line += code - 10
            this = line
            i += 2
        else:                   # short form: same line, one byte of columns
            this = line
            i += 1
        if not (lines and lines[-1] == this):
            starts.append(offset)
            lines.append(this)
        offset += 2 * units
    return LineRanges(starts, lines, offset)
