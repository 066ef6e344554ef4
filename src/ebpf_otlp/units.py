"""Parse what users type for amounts: durations (30s, 2m, 1h30m, 500ms, 50us) and counts
(100k, 2M)."""

from __future__ import annotations

import re

_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 0.001, "s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds as a float; ValueError with a message fit for users."""
    s = text.strip().lower()
    try:
        value = float(s)
    except ValueError:
        pos, value = 0, 0.0
        for m in _PART.finditer(s):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise ValueError(f"bad duration {text!r}: use e.g. 30s, 2m, 1h30m, 500ms") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"bad duration {text!r}: must be more than zero")
    return value


_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000}


def parse_count(text: str) -> int:
    """A non-negative whole count, with an optional k or M suffix; ValueError for users."""
    s = text.strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([km]?)", s)
    if not m:
        raise ValueError(f"bad count {text!r}: use e.g. 0, 5000, 100k, 1M")
    return int(float(m.group(1)) * _SUFFIX[m.group(2)])


def format_seconds(seconds: float) -> str:
    """A run's length as people read it: `0.003 s` for a short command, `12.4 s` after."""
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.3g} s" if seconds >= 0.001 \
        else f"{seconds * 1e6:.0f} µs"


def format_duration(seconds: float) -> str:
    """As a user would type it (what parse_duration reads): 10s, 1us, 2m."""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= size:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def format_count(n: float) -> str:
    """As a user would type it (what parse_count reads): 5k, 100k, 1M, 65536."""
    n = int(n)
    if n and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n and n % 1000 == 0 else str(n)
