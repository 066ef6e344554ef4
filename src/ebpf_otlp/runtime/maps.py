"""Reading BPF maps the same way in every collector: double buffers, drains, counters."""

from __future__ import annotations

import ctypes as ct
import time


class DoubleBuffer:
    """The program writes to map set `control[0]` (0 or 1); flipping it lets user space
    drain the idle set while the kernel keeps counting in the other, so nothing is read
    twice, lost to a concurrent delete, or left to fill a map."""

    def __init__(self, bpf, control: str = "control"):
        self._table = bpf[control]
        self.active = 0

    def flip(self) -> int:
        """Switch sets; return the index of the now idle one, ready to drain."""
        idle = self.active
        self.active ^= 1
        self._table[ct.c_int(0)] = ct.c_uint32(self.active)
        time.sleep(0.002)   # programs that read the old index finish within microseconds
        return idle


def _plain(value):
    """Scalar ctypes values as ints (BCC's batch and plain reads differ on this)."""
    return value.value if isinstance(value, ct._SimpleCData) else value


def drain(table) -> list[tuple[object, object]]:
    """Read and empty a hash map: batch lookup-and-delete (Linux ≥ 5.6), else read then clear."""
    try:
        items = list(table.items_lookup_and_delete_batch())
    except Exception:   # BCC raises bare Exception when the kernel lacks batch ops
        items = list(table.items())
        table.clear()
    return [(k, _plain(v)) for k, v in items]


def percpu_counters(table, count: int) -> list[int]:
    """Sum a BPF_PERCPU_ARRAY of u64 counters over CPUs."""
    return [sum(table[ct.c_int(i)]) for i in range(count)]
