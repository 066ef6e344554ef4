"""Reading BPF maps the same way in every collector: double buffers, drains, counters."""

from __future__ import annotations

import ctypes as ct
import errno
import os
import select
import time
from array import array
from typing import Iterator


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


def plain(value):
    """Scalar ctypes values as ints (BCC's batch and plain reads differ on this)."""
    return value.value if isinstance(value, ct._SimpleCData) else value


BATCH = 1024   # entries per bpf() call


def drain(table) -> list[tuple[object, object]]:
    """Read and empty a hash map: batch lookup-and-delete (Linux ≥ 5.6), else read then clear.

    In chunks of BATCH entries through libbcc directly: BCC's own batch method allocates
    (and zeroes) buffers for the map's maximum size at every call, tens of MB for a large
    per-CPU map, which dominated a busy agent's CPU and memory."""
    return [(_copy(table.Key, k), plain(_copy(table.Leaf, v))) for k, v in drain_views(table)]


def _copy(ctype, item):
    """An entry out of the reused buffer: scalars come out as ints, the rest is copied."""
    return item if isinstance(item, (int, float)) else ctype.from_buffer_copy(item)


def drain_views(table) -> Iterator[tuple[object, object]]:
    """Read and empty a hash map, entry by entry, as views into a reused buffer: each is
    valid until the next is taken (copy what is kept). Scalars come as ints."""
    try:
        yield from _drain_batched(table)
    except _NoBatch:   # the kernel lacks batch operations for this map
        items = list(table.items())
        table.clear()
        yield from items


class _NoBatch(Exception):
    pass


def _drain_batched(table) -> Iterator[tuple[object, object]]:
    from bcc.libbcc import lib

    keys, values = (table.Key * BATCH)(), (table.Leaf * BATCH)()
    cursor = ct.c_uint32(0)
    first = True
    while True:
        count = ct.c_uint32(BATCH)
        res = lib.bpf_lookup_and_delete_batch(table.map_fd, None if first else ct.byref(cursor),
                                              ct.byref(cursor), keys, values, ct.byref(count))
        err = ct.get_errno()
        if res != 0 and err not in (errno.ENOENT,) and first and count.value == 0:
            raise _NoBatch(err)
        for i in range(count.value):
            yield keys[i], values[i]
        if res != 0:
            if err == errno.ENOENT:   # the whole map has been read
                return
            raise OSError(err, os.strerror(err))
        if count.value == 0:
            return
        first = False


def write_run(table, first: int, data: bytes, chunk: int = 65536) -> None:
    """Write consecutive entries of an array map (first, first+1, ...) from packed values,
    a chunk per bpf() call where the kernel has batch updates: no copy of the values, and
    keys built a chunk at a time (a million rows' keys as Python ints would be 40 MB)."""
    from bcc.libbcc import lib

    size = ct.sizeof(table.Leaf)
    n = len(data) // size
    base = ct.cast(ct.c_char_p(data), ct.c_void_p).value   # the bytes object's own buffer
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        keys = array("I", range(first + start, first + start + count))
        key_buf = (ct.c_uint32 * count).from_buffer(keys)
        done = ct.c_uint32(count)
        if lib.bpf_update_batch(table.map_fd, key_buf, ct.c_void_p(base + start * size),
                                ct.byref(done)) != 0:
            for i in range(start, start + count):
                table[ct.c_int(first + i)] = table.Leaf.from_buffer_copy(data, i * size)


def percpu_counters(table, count: int) -> list[int]:
    """Sum a BPF_PERCPU_ARRAY of u64 counters over CPUs."""
    return [sum(table[ct.c_int(i)]) for i in range(count)]


class RingWaiter:
    """One sleep for the ring buffers of several BPF objects (each BCC object polls only its
    own), until one is woken, a signal arrives, or the timeout passes.

    Edge-triggered: a ring whose records are submitted without a wakeup (tcp_life.bpf.c)
    does not wake it, nor keep it awake while they wait to be read at the next drain.
    epoll_wait is called through libc, not select.epoll, since Python retries that after
    a signal and the loop must see SIGINT or a launched command's SIGCHLD at once."""

    def __init__(self, rings: dict):
        """`rings`: owner -> the fds of its ring buffers; `owners` pairs them as sets."""
        self.owners = [(owner, set(fds)) for owner, fds in rings.items()]
        self._epoll = select.epoll()
        for _owner, fds in self.owners:
            for fd in fds:
                self._epoll.register(fd, select.EPOLLIN | select.EPOLLET)
        self._events = (ct.c_uint8 * (12 * 16))()   # struct epoll_event is 12 bytes (packed)
        self._libc = ct.CDLL(None, use_errno=True)

    def wait(self, timeout_s: float) -> set[int]:
        """The fds woken (none on a timeout or a signal)."""
        n = self._libc.epoll_wait(self._epoll.fileno(), self._events, 16, max(0, int(timeout_s * 1000)))
        raw = bytes(self._events)
        return {int.from_bytes(raw[12 * i + 4:12 * i + 8], "little") for i in range(max(n, 0))}

    def close(self) -> None:
        self._epoll.close()
