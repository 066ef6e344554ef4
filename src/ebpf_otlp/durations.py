"""Parse human durations: 30s, 2m, 1h30m, 500ms, or plain seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


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
