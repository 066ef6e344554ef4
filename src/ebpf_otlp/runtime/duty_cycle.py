"""Time-sharing a costly hook: keep it attached only for the share of each period that
keeps the events it handles within a budget per second.

Why: some hooks cost on every event whether or not their program does anything (the
syscall entry hook: a tracepoint dispatch and a clock read per call). At a few thousand
events per second that is nothing and the hook stays attached all the time, so results
are exact; at millions per second it would dominate the cost of tracing. Above the budget
the hook is attached for one window per period, at a random offset (so periodic workloads
don't alias with it), and what it measures becomes a sample whose share is known.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import Callable


class DutyCycle:
    """Drives `attach`/`detach` from a thread. `events()` returns a running count of the
    events the budget is about (counted by a hook that stays attached)."""

    def __init__(self, attach: Callable[[], None], detach: Callable[[], None],
                 events: Callable[[], int], budget_per_s: float, period_s: float = 1.0,
                 min_share: float = 0.001, attached: bool = True, look_s: float = 0.1,
                 horizon_s: float = 1.0):
        self._attach, self._detach, self._events = attach, detach, events
        self.budget = budget_per_s
        self.period = period_s
        self.look = min(look_s, period_s)   # how often the rate is checked while attached
        self.horizon = horizon_s            # the rate is of events over this trailing time
        self.min_share = min_share
        self.attached = attached      # the hook's state as the caller left it
        self.share = 1.0              # the share of time the hook is attached, as last set
        self.lowest_share = 1.0
        self.error: Exception | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="duty-cycle", daemon=True)

    def start(self) -> None:
        if self.budget > 0:           # no budget: the hook simply stays attached
            self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()

    def share_for(self, rate: float) -> float:
        if self.budget <= 0 or rate <= self.budget:
            return 1.0
        return max(self.budget / rate, self.min_share)

    def _set(self, on: bool) -> None:
        if on != self.attached:
            (self._attach if on else self._detach)()
            self.attached = on

    def _run(self) -> None:
        try:
            # Sharing starts once the trailing horizon (a second) holds more events than
            # the budget allows: a burst smaller than that changes nothing, while a flood
            # is caught within one look. The share is then sized to the latest rate.
            seen = deque([(time.monotonic(), self._events())])
            wait = self.look
            while not self._halt.wait(wait):
                t, n = time.monotonic(), self._events()
                while len(seen) > 1 and seen[1][0] <= t - self.horizon:
                    seen.popleft()
                over = n - seen[0][1] > self.budget * self.horizon
                prev_t, prev_n = seen[-1]
                self.share = self.share_for((n - prev_n) / max(t - prev_t, 1e-3)) if over else 1.0
                self.lowest_share = min(self.lowest_share, self.share)
                seen.append((t, n))
                if self.share >= 1.0:      # a burst is caught within one look
                    self._set(True)
                    wait = self.look
                    continue
                on = self.period * self.share
                offset = random.uniform(0, self.period - on)
                self._set(False)
                if self._halt.wait(offset):
                    break
                self._set(True)
                if self._halt.wait(on):
                    break
                self._set(False)
                wait = self.period - offset - on
        except Exception as e:        # an attach that fails leaves the hook detached
            self.error = e
