"""Dictionary tables as pprof and OTLP profiles both build them: each distinct key gets
the next index once, and its table entry is written then."""

from __future__ import annotations

from typing import Callable, Hashable


class Interned:
    """Maps keys to indices from `first`; `add(key, index)` writes the new table entry."""

    def __init__(self, first: int, add: Callable[[Hashable, int], object]):
        self._index: dict[Hashable, int] = {}
        self._by_id: dict[int, int] = {}
        self._next = first
        self._add = add

    def of_all(self, objs, key: Callable[[object], Hashable]) -> list[int]:
        """The indices of `key(o)` for each object, remembered by the object's identity: the
        symbolizer shares one Frame among the stacks that have it, and hashing a frame's
        fields each time is most of an encoder's work (one call per stack, not per frame).
        The caller keeps the objects alive while it interns."""
        by_id, out = self._by_id, []
        for o in objs:
            idx = by_id.get(id(o))
            if idx is None:
                idx = by_id[id(o)] = self(key(o))
            out.append(idx)
        return out

    def __call__(self, key: Hashable) -> int:
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = self._next
            self._next += 1
            self._add(key, idx)
        return idx
