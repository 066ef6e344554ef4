"""Kernel symbols from /proc/kallsyms (root sees real addresses)."""

from __future__ import annotations

import bisect


class KernelSymbols:
    def __init__(self, path: str = "/proc/kallsyms"):
        self.path = path
        self._starts: list[int] | None = None
        self._names: list[str] = []

    def _load(self) -> None:
        entries = []
        try:
            with open(self.path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in "tTwW":
                        addr = int(parts[0], 16)
                        if addr:
                            entries.append((addr, parts[2]))
        except OSError:
            pass
        entries.sort()
        self._starts = [a for a, _ in entries]
        self._names = [n for _, n in entries]

    def lookup(self, addr: int) -> str | None:
        if self._starts is None:
            self._load()
        i = bisect.bisect_right(self._starts, addr) - 1
        return self._names[i] if i >= 0 else None
