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
# Strings as each dialect reads them. PostgreSQL: '' doubles a quote, and only E'...' takes
# backslash escapes (standard_conforming_strings, the default since 9.1). MySQL: a
# backslash escapes in any string, and "..." is a string too (without ANSI_QUOTES).
_STRINGS = {
    "postgresql": r"""[eE]'(?:[^'\\]|\\.|'')*(?:'|$)|[bBxXnNuU]?&?'(?:[^']|'')*(?:'|$)""",
    "mysql": r"""[bBxXnN_]?'(?:[^'\\]|\\.|'')*(?:'|$)|"(?:[^"\\]|\\.|"")*(?:"|$)""",
}
_QUOTED = {"postgresql": r'"(?:[^"]|"")*(?:"|$)', "mysql": r"`[^`]*(?:`|$)"}
_COMMENTS = {"postgresql": r"--[^\n]*|/\*.*?(?:\*/|$)", "mysql": r"--[^\n]*|\#[^\n]*|/\*.*?(?:\*/|$)"}
_TOKEN_FORM = r"""
    (?P<space>\s+)
  | (?P<comment>{comments})
  | (?P<string>{strings})
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?(?:\$(?P=tag)?\$|$))
  | (?P<param>\$\d+|\?|:[A-Za-z_]\w*|%s|%\(\w+\)s)
  | (?P<quoted>{quoted})
  | (?P<number>(?<![\w.])-?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|(?<!\w)0[xX][0-9a-fA-F]+)
  | (?P<word>[A-Za-z_][\w$.]*)
  | (?P<other>.)
"""
_TOKENS = {d: re.compile(_TOKEN_FORM.format(strings=_STRINGS[d], quoted=_QUOTED[d], comments=_COMMENTS[d]),
                         re.VERBOSE | re.DOTALL) for d in _STRINGS}


@functools.lru_cache(maxsize=4096)
def statement(text: str, dialect: str = "postgresql") -> tuple[str, str, str]:
    """(operation, table, sanitised text): prepared statements repeat, so each is scanned once."""
    return (*describe(text, dialect), sanitize(text, dialect))


def tokens(text: str, dialect: str = "postgresql"):
    for m in _TOKENS[dialect].finditer(text):
        yield m.lastgroup if m.lastgroup != "tag" else "dollar", m.group()


def sanitize(text: str, dialect: str = "postgresql") -> str:
    """Literals (strings, numbers, dollar-quoted bodies) as `?`; comments dropped; runs of
    space as one; parameters ($1, ?, %s) and the rest as written."""
    out = []
    for kind, value in tokens(text, dialect):
        if kind in ("string", "dollar", "number"):
            out.append("?")
        elif kind == "space" or kind == "comment":
            if out and out[-1] != " ":
                out.append(" ")
        else:
            out.append(value)
    return "".join(out).strip()


def describe(text: str, dialect: str = "postgresql") -> tuple[str, str]:
    """(operation, table): the statement's first keyword upper-cased (WITH's main verb), and
    the first table named after FROM, INTO, UPDATE, JOIN or TABLE ("" when none)."""
    words = [(kind, value) for kind, value in tokens(text, dialect) if kind in ("word", "quoted", "other")]
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
