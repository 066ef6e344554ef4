"""Reading the pprof files the tests write, with the protobuf classes."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

from ebpf_otlp.export.pprof_schema import Profile


def load_pprof(path: Path):
    return Profile.FromString(gzip.decompress(path.read_bytes()))


def pprof_stacks(prof) -> Counter[tuple[str, ...]]:
    """Root-first function-name stacks with their sample counts, from the protobuf classes."""
    s = prof.string_table
    fn = {f.id: s[f.name] for f in prof.function}
    loc = {l.id: fn[l.line[0].function_id] for l in prof.location}
    out: Counter[tuple[str, ...]] = Counter()
    for sample in prof.sample:
        out[tuple(reversed([loc[i] for i in sample.location_id]))] += sample.value[0]
    return out


def self_share(stacks: Counter, name: str) -> float:
    total = sum(stacks.values())
    return sum(c for st, c in stacks.items() if st and st[-1] == name) / total
