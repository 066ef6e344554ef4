"""Run by each CPython under test: every code object of a few stdlib modules, its line
table and the line of each instruction as that interpreter says (co_positions, co_lines),
as one JSON document on stdout."""

import json
import sys
import types


def code_objects(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from code_objects(const)


def lines_of(code):
    """The line of every code unit (2 bytes), by byte offset."""
    units = len(code.co_code) // 2
    if sys.version_info >= (3, 11):
        return [pos[0] for pos in code.co_positions()]
    lines = [None] * units
    for start, end, line in code.co_lines():
        for unit in range(start // 2, end // 2):
            lines[unit] = line
    return lines


def main():
    out = {"version": list(sys.version_info[:2]), "codes": []}
    for name in sys.argv[1:]:
        path = __import__(name).__file__
        with open(path) as f:
            module = compile(f.read(), path, "exec")
        for code in code_objects(module):
            out["codes"].append({"name": code.co_name, "table": code.co_linetable.hex(),
                                 "first_line": code.co_firstlineno, "lines": lines_of(code)})
    json.dump(out, sys.stdout)


main()
