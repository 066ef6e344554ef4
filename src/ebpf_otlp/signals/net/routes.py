"""Low-cardinality routes for tables, metrics and span names. A raw path carries ids
(/users/8812, /orders/3f2a…): a user's patterns (`--route /users/{id}`) name the route a
path matched; a path none matches has its segments that look like ids folded to `*`."""

from __future__ import annotations

import re

_ID = re.compile(r"^(\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                 r"|.*\d.*\d.*\d.*|.{33,})$")


def route_of(path: str) -> str:
    """/users/8812/orders → /users/*/orders; a segment with three digits or more, a hex
    run of 8 or more, a UUID or anything over 32 characters counts as an id."""
    return "/".join("*" if segment and _ID.match(segment) else segment
                    for segment in path.split("?", 1)[0].split("/"))


def check_pattern(pattern: str) -> str:
    """A route pattern: a path whose segments may be `{name}` or `*` (one segment each),
    and whose last may be `**` (the rest of the path)."""
    if not pattern.startswith("/"):
        raise ValueError(f"{pattern!r}: a route starts with /")
    segments = pattern.split("/")
    if "**" in segments[:-1]:
        raise ValueError(f"{pattern!r}: ** only as the last segment")
    return pattern


class Routes:
    """The first of the user's patterns that a path matches."""

    def __init__(self, patterns: list[str]):
        self.patterns = [check_pattern(p) for p in patterns]
        self._compiled = [(p, re.compile("^" + "/".join(_segment(s) for s in p.split("/")) + "$"))
                          for p in self.patterns]

    def match(self, target: str) -> str:
        """The pattern the path (query left out) matches, or ""."""
        path = target.split("?", 1)[0]
        return next((p for p, rx in self._compiled if rx.match(path)), "")


def _segment(s: str) -> str:
    if s == "**":
        return ".*"
    if s == "*" or (s.startswith("{") and s.endswith("}")):
        return "[^/]+"
    return re.escape(s)
