"""What a span says of an SQL statement: its text with the literals replaced by `?` (as
OpenTelemetry's database conventions recommend: values may be personal data), the
operation (its first keyword) and the table it names.

A small scanner, not a parser: it walks quoted strings, quoted identifiers, dollar-quoted
bodies and comments as units, so a quote or keyword inside them is never taken for one
outside; what is left is words, numbers and punctuation."""

from __future__ import annotations

import functools
import re

# The operations whose table follows a keyword: SELECT ... FROM t, INSERT INTO t, UPDATE t,
# DELETE FROM t, ... (the first one after it names the span).
_TABLE_AFTER = {"FROM", "INTO", "UPDATE", "JOIN", "TABLE"}
_NOT_A_TABLE = {"SELECT", "ONLY", "LATERAL", "IF", "NOT", "EXISTS", "("}
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*|/\*.*?(?:\*/|$))
  | (?P<string>[eEbBxXnN]?'(?:[^']|'')*(?:'|$))
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?(?:\$(?P=tag)?\$|$))
  | (?P<param>\$\d+|\?|:[A-Za-z_]\w*|%s|%\(\w+\)s)
  | (?P<quoted>"(?:[^"]|"")*(?:"|$)|`[^`]*(?:`|$))
  | (?P<number>(?<![\w.])-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|(?<!\w)0[xX][0-9a-fA-F]+)
  | (?P<word>[A-Za-z_][\w$.]*)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


@functools.lru_cache(maxsize=4096)
def statement(text: str) -> tuple[str, str, str]:
    """(operation, table, sanitised text): prepared statements repeat, so each is scanned once."""
    return (*describe(text), sanitize(text))


def described(q) -> tuple[str, str, str]:
    """An SQL parser's `describe`: its statement's operation, table and sanitised text."""
    return statement(q.text)


def tokens(text: str):
    for m in _TOKEN.finditer(text):
        yield m.lastgroup if m.lastgroup != "tag" else "dollar", m.group()


def sanitize(text: str) -> str:
    """Literals (strings, numbers, dollar-quoted bodies) as `?`; comments dropped; runs of
    space as one; parameters ($1, ?, %s) and the rest as written."""
    out = []
    for kind, value in tokens(text):
        if kind in ("string", "dollar", "number"):
            out.append("?")
        elif kind == "space" or kind == "comment":
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(value)
    return "".join(out).strip()


def describe(text: str) -> tuple[str, str]:
    """(operation, table): the statement's first keyword upper-cased (WITH's main verb), and
    the first table named after FROM, INTO, UPDATE, JOIN or TABLE ("" when none)."""
    words = [(kind, value) for kind, value in tokens(text) if kind in ("word", "quoted", "other")]
    operation = ""
    for kind, value in words:
        if kind == "word":
            operation = value.upper()
            break
    if operation == "WITH":   # WITH x AS (...) SELECT|INSERT|UPDATE|DELETE ...
        depth = 0
        for kind, value in words:
            depth += value == "("
            depth -= value == ")"
            if depth == 0 and kind == "word" and value.upper() in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                operation = value.upper()
    table = ""
    for i, (kind, value) in enumerate(words[:-1]):
        if kind == "word" and value.upper() in _TABLE_AFTER:
            nxt_kind, nxt = words[i + 1]
            if nxt_kind in ("word", "quoted") and nxt.upper() not in _NOT_A_TABLE:
                table = nxt.strip('"`')
                break
    return operation, table
