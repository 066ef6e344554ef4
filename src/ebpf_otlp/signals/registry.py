"""Every signal, named once. Order matters: the config's tables, the snapshot's parts and
the capture's results follow it."""

from __future__ import annotations

from ebpf_otlp.signals.heap import HEAP
from ebpf_otlp.signals.net import NET
from ebpf_otlp.signals.profile import OFF_CPU, PROFILE
from ebpf_otlp.signals.signal import Signal, schema_of
from ebpf_otlp.signals.syscalls import SYSCALLS

SIGNALS: tuple[Signal, ...] = (PROFILE, OFF_CPU, SYSCALLS, NET, HEAP)
BY_NAME = {s.name: s for s in SIGNALS}
TABLES = tuple(dict.fromkeys(s.table for s in SIGNALS if s.table))   # [profile] holds off-CPU too


def of(result) -> Signal:
    """The signal a finished result belongs to."""
    for s in SIGNALS:
        if isinstance(result, s.result) and s.takes(result):
            return s
    raise TypeError(f"no signal makes a {type(result).__name__}")


def in_table(table: str) -> list[Signal]:
    return [s for s in SIGNALS if s.table == table]


def schemas() -> dict[str, dict]:
    """Each capture table's TOML keys and their checkers, from its settings' fields."""
    return {s.table: schema_of(s.settings_type) for s in SIGNALS if s.table and s.settings_type}
