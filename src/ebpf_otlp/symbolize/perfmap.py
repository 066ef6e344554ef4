"""JIT symbols from /tmp/perf-PID.map (node --perf-basic-prof, JVM agents, ...)."""

from __future__ import annotations

import bisect
import os


def parse_perf_map(text: str) -> list[tuple[int, int, str]]:
    """Lines of 'START SIZE name' in hex; bad lines are skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) != 3:
            continue
        try:
            out.append((int(parts[0], 16), int(parts[1], 16), parts[2].strip()))
        except ValueError:
            continue
    return out


class PerfMap:
    """One process's JIT map; re-read when the file grew, since JITs append to it."""

    def __init__(self, pid: int):
        self.paths = [f"/proc/{pid}/root/tmp/perf-{pid}.map", f"/tmp/perf-{pid}.map"]
        self._size = -1
        self._starts: list[int] = []
        self._entries: list[tuple[int, int, str]] = []

    def refresh(self) -> None:
        for path in self.paths:
            try:
                size = os.stat(path).st_size
                if size == self._size:
                    return
                with open(path) as f:
                    text = f.read()
            except OSError:
                continue
            self._size = size
            # Later entries win: a JIT reuses addresses for new code.
            entries = {start: (start, sz, name) for start, sz, name in parse_perf_map(text)}
            self._entries = sorted(entries.values())
            self._starts = [e[0] for e in self._entries]
            return

    def lookup(self, addr: int) -> str | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        start, size, name = self._entries[i]
        return name if addr < start + max(size, 1) else None
