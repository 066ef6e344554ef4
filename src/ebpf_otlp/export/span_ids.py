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

    def generate_trace_id(self) -> int:
        ids = getattr(self._next, "ids", None)
        if ids and ids[0]:
            trace_id, ids[0] = ids[0], 0
            return trace_id
        return super().generate_trace_id()

    def generate_span_id(self) -> int:
        ids = getattr(self._next, "ids", None)
        if ids and ids[1]:
            span_id, ids[1] = ids[1], 0
            return span_id
        return super().generate_span_id()


IDS = PresetIds()   # the one the output's TracerProvider uses
