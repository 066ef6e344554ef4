"""Latency histograms as the kernel fills them: OTLP exponential buckets at scale 4.

Bucket i holds values in (2^(i/16), 2^((i+1)/16)] nanoseconds, each ~4.4 % wide, so a
percentile read from them (the bucket's geometric middle) is within ~2.2 % of the true
value. Index -1 holds values of at most 1 ns.
"""

from __future__ import annotations

import math

SCALE = 4
PER_OCTAVE = 1 << SCALE   # 16 buckets per power of two


def sub_bucket_table() -> list[int]:
    """For the BPF side: the top 8 mantissa bits m → floor(16·log2(1 + m/256))."""
    return [min(PER_OCTAVE - 1, int(PER_OCTAVE * math.log2(1 + m / 256))) for m in range(256)]


def index_of(value: float) -> int:
    """The bucket a value falls in (what the kernel computes, up to its 8-bit mantissa)."""
    if value <= 1:
        return -1
    return math.ceil(PER_OCTAVE * math.log2(value)) - 1


def bounds(index: int) -> tuple[float, float]:
    if index < 0:
        return (0.0, 1.0)
    base = 2 ** (1 / PER_OCTAVE)
    return (base ** index, base ** (index + 1))


def percentile(hist: dict[int, int], q: float, lo: float | None = None,
               hi: float | None = None) -> float:
    """The q-quantile (0..1) of the recorded values, clamped to the observed min/max."""
    total = sum(hist.values())
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            low, high = bounds(index)
            value = math.sqrt(low * high) if index >= 0 else 1.0
            if lo is not None:
                value = max(value, lo)
            if hi is not None:
                value = min(value, hi)
            return value
    return hi or 0.0


def scale_counts(hist: dict[int, int], total: int) -> dict[int, int]:
    """Bucket counts scaled to sum to `total` (a sample's histogram as an estimate of the
    whole), rounded by largest remainder so the counts stay integers and add up."""
    have = sum(hist.values())
    if have == 0 or have == total:
        return dict(hist)
    exact = {i: c * total / have for i, c in hist.items()}
    out = {i: int(v) for i, v in exact.items()}
    short = total - sum(out.values())
    for i in sorted(exact, key=lambda i: out[i] - exact[i])[:short]:
        out[i] += 1
    return out
