"""Checkers of configuration values: each returns the value as the settings hold it, or
raises ValueError with words for users (the caller names the file, table and key). The
settings of every signal and the [snapshot]/[agent]/[otlp] tables use them."""

from __future__ import annotations

import re
from typing import Any, Callable

from ebpf_otlp.runtime.processes import COMM_MAX
from ebpf_otlp.units import parse_count, parse_duration


def check_duration(v) -> float:
    if isinstance(v, bool):
        raise ValueError("a duration such as 30s, 2m or 7d")
    if isinstance(v, (int, float)):
        if v <= 0:
            raise ValueError("must be more than zero")
        return float(v)
    if isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)?d", v.strip()):
        return float(v.strip()[:-1]) * 86400
    return parse_duration(str(v))


_SIZE = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20,
         "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(v) -> int:
    """Bytes from 2GiB, 500MB, 1024 ...; ValueError for users."""
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(v))
    if not m or m.group(2).lower() not in _SIZE or float(m.group(1)) <= 0:
        raise ValueError(f"bad size {v!r}: use e.g. 500MB, 2GiB")
    return int(float(m.group(1)) * _SIZE[m.group(2).lower()])


def positive_int(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError("a whole number of at least 1")
    return v


def count(v) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    return parse_count(str(v))


def boolean(v) -> bool:
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def string(v) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("a non-empty string")
    return v


def ints(low: int, high: int) -> Callable[[Any], list[int]]:
    def check(v) -> list[int]:
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                              and low <= x <= high for x in v):
            raise ValueError(f"a list of whole numbers from {low} to {high}")
        return list(v)
    return check


def strings(v) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ValueError("a list of strings")
    return list(v)


def choice(*options: str) -> Callable[[Any], str]:
    def check(v) -> str:
        if v not in options:
            raise ValueError(f"one of {', '.join(options)}")
        return v
    return check


def comm(v) -> str:
    v = string(v)
    if len(v.encode()) > COMM_MAX:
        raise ValueError(f"at most {COMM_MAX} bytes (the kernel's command-name length)")
    return v


def headers(v) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise ValueError("a table of strings, e.g. {x-tenant = \"team-a\"}")
    return dict(v)


PIDS = ints(1, 2**22)


def format_size(n: int) -> str:
    """As a user would type it (what parse_size reads): 512KiB, 2GiB, 1000."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)
