"""Keeping a per-event cost within a budget of events per second: below the budget every
event is handled; above it a known share, so results are exact when cheap and a sample
(weighed back up) when not. Two ways to apply the share:

- DutyCycle time-shares a hook: attached only for the share of each period, in one window
  at a random offset (so periodic workloads don't alias with it). For hooks whose
  dispatch alone costs (the syscall entry hook: a tracepoint and a clock read per call).
- SampleShare tells the kernel side the share of events to handle, at random. For
  programs whose work costs (off-CPU stack walks) while the hook itself is cheap.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import Callable


class RateMeter:
    """The share of events a budget allows, from a running event count. Sharing starts
    once the trailing horizon (a second) holds more events than the budget allows: a burst
    smaller than that changes nothing, while a flood is caught at the next look. The share
    is then sized to the latest rate."""

    def __init__(self, budget_per_s: float, horizon_s: float = 1.0, min_share: float = 0.001):
        self.budget = budget_per_s
        self.horizon = horizon_s
        self.min_share = min_share
        self._seen: deque[tuple[float, int]] = deque()

    def share_for(self, rate: float) -> float:
        if self.budget <= 0 or rate <= self.budget:
            return 1.0
        return max(self.budget / rate, self.min_share)

    def share(self, t: float, n: int) -> float:
        """Feed the count `n` at time `t`; the share allowed from now on."""
        seen = self._seen
        if not seen:
            seen.append((t, n))
            return 1.0
        while len(seen) > 1 and seen[1][0] <= t - self.horizon:
            seen.popleft()
        over = n - seen[0][1] > self.budget * self.horizon
        prev_t, prev_n = seen[-1]
        seen.append((t, n))
        return self.share_for((n - prev_n) / max(t - prev_t, 1e-3)) if over else 1.0


class _Governor:
    """A thread that looks at the event rate and applies the share (see subclasses).
    `events()` returns a running count of the events the budget is about.

    The thread only calls `step()`, which does one move and says how long until the next;
    `clock` and `wait` are injectable so tests can drive that on a fake clock. `wait(s)`
    returns True when the loop should end (the default: `stop()` was called)."""

    name = "budget"

    def __init__(self, events: Callable[[], int], budget_per_s: float, look_s: float,
                 horizon_s: float, min_share: float, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], bool] | None = None):
        self._events = events
        self.meter = RateMeter(budget_per_s, horizon_s, min_share)
        self.look = look_s
        self.share = 1.0              # the share in force, as last set
        self.lowest_share = 1.0
        self.error: Exception | None = None
        self._clock = clock
        self._halt = threading.Event()
        self._wait = wait or self._halt.wait
        self._primed = False
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)

    def start(self) -> None:
        if self.meter.budget > 0:     # no budget: every event, always
            self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()

    def run(self) -> None:
        """The thread's body: step until told to stop; an error is kept, not raised."""
        try:
            delay = self.step()
            while not self._wait(delay) and not self._halt.is_set():
                delay = self.step()
        except Exception as e:        # kept for the caller to report; the thread ends
            self.error = e

    def step(self) -> float:
        """One move of the loop; returns the seconds until the next. The first only
        takes the baseline count, as a rate needs two."""
        if not self._primed:
            self._primed = True
            self._measure()
            return self.look
        return self._act()

    def _measure(self) -> float:
        self.share = self.meter.share(self._clock(), self._events())
        self.lowest_share = min(self.lowest_share, self.share)
        return self.share

    def _act(self) -> float:
        raise NotImplementedError


class SampleShare(_Governor):
    """Hands the share to `set_share` (which tells the kernel side) whenever it changes."""

    name = "sample-share"

    def __init__(self, set_share: Callable[[float], None], events: Callable[[], int],
                 budget_per_s: float, look_s: float = 0.1, horizon_s: float = 1.0,
                 min_share: float = 0.001, *, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], bool] | None = None):
        super().__init__(events, budget_per_s, look_s, horizon_s, min_share, clock, wait)
        self._set_share = set_share
        self._applied = 1.0

    def _act(self) -> float:
        share = self._measure()
        if share != self._applied:
            self._set_share(share)
            self._applied = share
        return self.look


class DutyCycle(_Governor):
    """Drives `attach`/`detach`: attached throughout while under budget, else one window
    per period sized to the share. An attach that fails leaves the hook detached.
    `rng` (anything with `uniform`) places the windows; injectable for tests."""

    name = "duty-cycle"

    def __init__(self, attach: Callable[[], None], detach: Callable[[], None],
                 events: Callable[[], int], budget_per_s: float, period_s: float = 1.0,
                 min_share: float = 0.001, attached: bool = True, look_s: float = 0.1,
                 horizon_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], bool] | None = None, rng=None):
        super().__init__(events, budget_per_s, min(look_s, period_s), horizon_s, min_share,
                         clock, wait)
        self._attach, self._detach = attach, detach
        self.period = period_s
        self.attached = attached      # the hook's state as the caller left it
        self._rng = rng if rng is not None else random
        self._edges: list[tuple[bool, float]] = []   # the rest of this period's window

    def _set(self, on: bool) -> None:
        if on != self.attached:
            (self._attach if on else self._detach)()
            self.attached = on

    def _act(self) -> float:
        if self._edges:               # inside a period: the window's next edge
            on, until_next = self._edges.pop(0)
            self._set(on)
            return until_next
        if self._measure() >= 1.0:    # a burst is caught within one look
            self._set(True)
            return self.look
        on = self.period * self.share
        offset = self._rng.uniform(0, self.period - on)
        self._set(False)
        self._edges = [(True, on), (False, self.period - offset - on)]
        return offset
