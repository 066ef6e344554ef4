"""Span ids chosen before the span is made: a request's, so that the CPU samples taken
while it was served can carry them (pprof labels, OTLP profile links) whichever is
exported first. Every other span gets the SDK's random ids."""

from __future__ import annotations

import contextlib
import threading

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator


class PresetIds(RandomIdGenerator):
    def __init__(self) -> None:
        self._next = threading.local()

    @contextlib.contextmanager
    def preset(self, trace_id: int, span_id: int):
        """The span started inside gets these (its trace id only if it has no parent)."""
        self._next.ids = [trace_id, span_id]
        try:
            yield
        finally:
            self._next.ids = None

    def _take(self, which: int) -> int:
        """The preset id (0 trace, 1 span), once; 0 when there is none."""
        ids = getattr(self._next, "ids", None)
        if not ids:
            return 0
        value, ids[which] = ids[which], 0
        return value

    def generate_trace_id(self) -> int:
        return self._take(0) or super().generate_trace_id()

    def generate_span_id(self) -> int:
        return self._take(1) or super().generate_span_id()


IDS = PresetIds()   # the one the output's TracerProvider uses
