"""Links between signals: CPU samples labelled with the request their thread was serving,
when the CPU profile and request spans run in one capture (snapshot, agent). The sampler
then keeps each sample's time (SAMPLE_TIMES: 1.05 ms), trace-net each request's serving
thread (the one that read its first bytes) and span ids; a sample taken on that thread
between the request's first and last bytes carries the request's trace and span id (pprof
labels trace_id and span_id; an OTLP profile's sample link). A server that hands requests
from a reading thread to a worker (grpcio's thread pool) serves them on a thread the
request never touched: its samples stay unlabelled."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from dataclasses import replace

SLOT_NS = 1 << 20   # the sampler's time resolution (cpu_sampler.bpf.c: slot)


class RequestIndex:
    """Requests served, by thread, in order of their start."""

    def __init__(self) -> None:
        self._by_tid: dict[int, list[tuple[int, int, tuple[str, str]]]] = defaultdict(list)
        self._sorted = True

    def add(self, requests) -> None:
        for r in requests:
            if r.kind == "server" and r.tid and r.span_id:
                self._by_tid[r.tid].append((r.start_ns, r.end_ns, (r.trace_id, r.span_id)))
                self._sorted = False

    def span_at(self, tid: int, time_ns: int) -> tuple[str, str] | tuple[()]:
        """The request `tid` was serving in the slot that begins at `time_ns`, or ()."""
        served = self._by_tid.get(tid)
        if not served:
            return ()
        i = bisect.bisect_right(served, (time_ns + SLOT_NS,)) - 1   # the last that began by then
        if i >= 0 and served[i][1] >= time_ns:
            return served[i][2]
        return ()

    def label(self, counts: Counter) -> Counter:
        """Samples with their time → samples with their request (times dropped, so the same
        stack of one request counts together again)."""
        if not self._sorted:
            for served in self._by_tid.values():
                served.sort()
            self._sorted = True
        out: Counter = Counter()
        for raw, n in counts.items():
            if raw.time_ns:
                raw = replace(raw, time_ns=0, span=self.span_at(raw.tid, raw.time_ns))
            out[raw] += n
        return out

    def forget_before(self, time_ns: int) -> None:
        """Requests that ended before `time_ns` label no sample to come (the agent's windows)."""
        for tid in list(self._by_tid):
            kept = [r for r in self._by_tid[tid] if r[1] >= time_ns]
            if kept:
                self._by_tid[tid] = kept
            else:
                del self._by_tid[tid]


def link(processors: list) -> None:
    """Wire a capture's CPU profile to its request spans, if it has both."""
    from ebpf_otlp.signals.net.processor import NetProcessor
    from ebpf_otlp.signals.profile.processor import StackProcessor

    cpu = [p for p in processors if isinstance(p, StackProcessor) and not p.settings.off_cpu]
    net = [p for p in processors if isinstance(p, NetProcessor) and p.collector.requests]
    if not (cpu and net):
        return
    index = RequestIndex()
    for p in net:
        p.request_index = index
    for p in cpu:
        p.request_index = index
        p.collector.sample_times = True
