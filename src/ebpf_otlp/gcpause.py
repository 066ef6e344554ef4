"""Pausing Python's cycle collector around passes that build many small objects.

Symbolizing and encoding tens of thousands of stacks allocate frames, tuples and protobuf
messages by the hundred thousand, none of them in cycles; the collector's generational
passes over them cost about a fifth of the time and find nothing to free."""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def gc_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def collect_frozen() -> None:
    """A full collection, frozen objects included. trace-net's drain freezes what it keeps
    (gc.freeze()), and with it any cycle alive or uncollected then: one that becomes garbage
    later is never freed. A long-running agent does this once a window, after the cut has
    dropped the window's records (measured: 0.5-0.7 MB a minute of pyelftools cycles from
    the unwind-table worker otherwise stayed for good)."""
    gc.unfreeze()
    gc.collect()
