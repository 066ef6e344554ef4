"""Low-cardinality routes for tables and metrics: a raw path carries ids (/users/8812,
/orders/3f2a…), so path segments that look like ids are folded to `*`. User patterns
(`--route /users/{id}`) are to come."""

from __future__ import annotations

import re

_ID = re.compile(r"^(\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                 r"|.*\d.*\d.*\d.*|.{33,})$")


def route_of(path: str) -> str:
    """/users/8812/orders → /users/*/orders; a segment with three digits or more, a hex
    run of 8 or more, a UUID or anything over 32 characters counts as an id."""
    return "/".join("*" if segment and _ID.match(segment) else segment
                    for segment in path.split("?", 1)[0].split("/"))
