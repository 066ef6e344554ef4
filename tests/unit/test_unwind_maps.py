"""The pure parts of loading unwind tables into BPF maps: LPM prefixes and row space."""

from __future__ import annotations

import os
import random

import pytest

from ebpf_otlp.unwind.kernel_tables import RowSpace, _big_endian, prefixes


def covered(blocks):
    return [(start, start + (1 << (64 - bits))) for start, bits in blocks]


@pytest.mark.parametrize("start,end", [(0x1000, 0x2000), (0x7f12_3456_7000, 0x7f12_3489_a000),
                                       (0x5555_5555_4000, 0x5555_5555_5000), (0, 1 << 20)])
def test_prefixes_cover_the_range_exactly_with_aligned_blocks(start, end):
    blocks = prefixes(start, end)
    spans = covered(blocks)
    assert spans[0][0] == start and spans[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))          # contiguous, no overlap
    assert all(s % (e - s) == 0 for s, e in spans)                      # each block aligned
    assert len(blocks) <= 2 * 64


def test_prefixes_of_random_ranges_are_few():
    rng = random.Random(7)
    for _ in range(200):
        start = rng.randrange(1 << 47) & ~0xfff
        end = start + (rng.randrange(1, 1 << 16) << 12)
        blocks = prefixes(start, end)
        assert sum(e - s for s, e in covered(blocks)) == end - start
        assert len(blocks) <= 2 * (64 - 12)


def test_lpm_address_is_stored_big_endian():
    assert _big_endian(0x0102030405060708).to_bytes(8, "little") == bytes(range(1, 9))


def test_row_space_first_fit_and_coalescing():
    space = RowSpace(100)
    a, b, c = space.take(30), space.take(30), space.take(30)
    assert (a, b, c) == (0, 30, 60) and space.take(20) is None
    space.give(a, 30)
    space.give(c, 30)
    assert space.free == [(0, 30), (60, 40)]   # c merged with the free tail
    assert space.take(50) is None              # 70 free, but not in one piece
    space.give(b, 30)
    assert space.free == [(0, 100)] and space.used == 0
    assert space.take(100) == 0


class FakeMap(dict):
    """A BPF map as KernelTables uses it: Key/Leaf constructors and item access."""
    map_fd = -1

    @staticmethod
    def Key(*fields):
        return fields

    Leaf = Key


@pytest.fixture
def sleepers():
    """Three `sleep` processes, each asleep: its libraries all mapped (read earlier, one
    could have fewer objects than another, and the rows would not add up)."""
    import subprocess
    import time
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    deadline = time.monotonic() + 10
    for p in procs:
        while time.monotonic() < deadline:
            with open(f"/proc/{p.pid}/stat") as f:
                asleep = f.read().rsplit(")", 1)[1].split()[0] == "S"
            with open(f"/proc/{p.pid}/maps") as f:
                if asleep and "libc" in f.read():
                    break
            time.sleep(0.005)
    yield [p.pid for p in procs]
    for p in procs:
        p.kill()
        p.wait()


def test_full_rows_evict_the_least_recently_seen_process(sleepers, monkeypatch):
    """Three processes, room for two: the third's tables push out the first's (its
    mappings leave the LPM map, its rows are reused), and that is counted."""
    from ebpf_otlp.unwind import kernel_tables
    from ebpf_otlp.unwind.tables import UnwindTable

    written = []
    monkeypatch.setattr(kernel_tables, "write_run", lambda table, first, rows: written.append((first, len(rows))))
    monkeypatch.setattr(kernel_tables, "cached_table", lambda build_id: None)
    monkeypatch.setattr(kernel_tables, "load_table", lambda path, build_id: UnwindTable(b"\0" * 80, ".eh_frame"))
    monkeypatch.setattr(kernel_tables, "vdso_table", lambda: UnwindTable(b"", "no vDSO"))   # shared, no rows
    # Every process's objects distinct (as if each ran its own binaries): 10 rows each.
    monkeypatch.setattr(kernel_tables, "_identify",
                        lambda pid, entry: (entry.path, f"{pid}{entry.path}", entry.start - 0x1000))
    objects = len([e for e in kernel_tables.parse_maps(open(f"/proc/{sleepers[0]}/maps").read()) if e.is_file])
    mappings = FakeMap()
    tables = kernel_tables.KernelTables({"unwind_rows": FakeMap(), "unwind_mappings": mappings},
                                        max_rows=2 * 10 * objects + 5)
    first, second, third = sleepers
    assert tables.update(first) and tables.update(second)
    assert {pid for _bits, pid, _addr in mappings} == {first, second}
    tables.update(first)                   # seen again: now the second is the least recent
    assert tables.update(third)
    assert {pid for _bits, pid, _addr in mappings} == {first, third}
    assert tables.counts["processes left to frame pointers (tables full)"] == 1
    assert tables.loaded() == {"processes": 2, "objects": 2 * objects + 1, "rows": 2 * 10 * objects}
    bias = {value[2] for value in mappings.values()}
    assert bias == {0x1000}                # runtime start - ELF address of the mapping's start


def test_the_common_objects_are_this_hosts_loader_and_libc_once_each():
    """What a cold cache compiles first, while BPF compiles: the loader and libc this host's
    processes map (read from our own maps), by real path, each once."""
    from ebpf_otlp.unwind.kernel_tables import common_objects

    objects = common_objects()
    names = [os.path.basename(p) for p in objects]
    assert "libc.so.6" in names and any(n.startswith("ld-linux") for n in names), objects
    assert len(objects) == len(set(objects)) and all(os.path.isfile(p) for p in objects)
    assert all(os.path.realpath(p) == p for p in objects)


def test_a_kept_kernel_stack_ends_at_its_first_zero():
    """bpf_get_stack zeroes the buffer after the last frame (kernel_stacks.inc)."""
    import ctypes as ct
    from ebpf_otlp.unwind.unwinder import kernel_frames

    class KernelStack(ct.Structure):
        _fields_ = [("ips", ct.c_uint64 * 127)]
    st = KernelStack()
    assert kernel_frames(st) == ()
    st.ips[0], st.ips[1], st.ips[2] = 0xffffffff81000010, 0xffffffff81000020, 0xffffffff81000030
    assert kernel_frames(st) == (0xffffffff81000010, 0xffffffff81000020, 0xffffffff81000030)
    for i in range(127):
        st.ips[i] = 0xffffffff81000000 + i + 1
    assert len(kernel_frames(st)) == 127
