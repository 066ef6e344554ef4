"""A directory of OTLP payloads the collector did not take, resent later, oldest first.

Each file holds one serialized Export*ServiceRequest; its name says the signal and
orders it. The directory has a size cap: past it the oldest payloads are dropped,
and the drop is counted and reported, never silent.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ebpf_otlp.errors import AgentError

DEFAULT_DIR = os.environ.get("EBPF_OTLP_SPOOL", "/var/lib/ebpf-otlp/spool")


@dataclass(frozen=True)
class SpooledPayload:
    path: Path
    signal: str

    def read(self) -> bytes:
        return self.path.read_bytes()


class Spool:
    def __init__(self, directory: str = DEFAULT_DIR, max_bytes: int = 256 << 20):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.dropped = 0
        self._seq = 0

    def _ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AgentError(f"cannot create spool directory {self.dir}: {e.strerror}") from None

    def put(self, signal: str, payload: bytes) -> Path:
        """Store a payload (atomically: a reader never sees half of one)."""
        self._ensure_dir()
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:04d}.{signal}.pb"
        tmp = self.dir / f".{name}.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, self.dir / name)
        self._enforce_cap()
        return self.dir / name

    def pending(self) -> list[SpooledPayload]:
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.glob("*.pb")):
            parts = p.name.split(".")
            if len(parts) == 3:
                out.append(SpooledPayload(p, parts[1]))
        return out

    def size(self) -> int:
        return sum(p.path.stat().st_size for p in self.pending())

    def remove(self, item: SpooledPayload) -> None:
        item.path.unlink(missing_ok=True)

    def _enforce_cap(self) -> None:
        items = self.pending()
        total = sum(p.path.stat().st_size for p in items)
        for item in items:
            if total <= self.max_bytes:
                break
            total -= item.path.stat().st_size
            self.remove(item)
            self.dropped += 1
