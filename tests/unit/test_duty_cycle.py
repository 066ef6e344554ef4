"""The budget governors, driven on a fake clock: `run()` (the thread's body) or `step()`
directly, with the waits advancing fake time, so nothing depends on the machine's load."""

import random

import pytest

from ebpf_otlp.signals.duty_cycle import DutyCycle, SampleShare


class FakeTime:
    """A clock that only moves when waited on; the loop ends once it reaches `until`."""

    def __init__(self, until: float = float("inf")):
        self.now = 0.0
        self.until = until
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        assert seconds >= 0
        self.waits.append(seconds)
        self.now += seconds
        return self.now >= self.until


class FakeHook:
    """Events at a rate over fake time (or any function of it), and the attach/detach log."""

    def __init__(self, time: FakeTime, rate_per_s: float = 0.0, count=None):
        self.time = time
        self.count = count or (lambda t: int(t * rate_per_s))
        self.log: list[tuple[float, bool]] = []

    def events(self) -> int:
        return self.count(self.time.now)

    def attach(self):
        self.log.append((self.time.now, True))

    def detach(self):
        self.log.append((self.time.now, False))


class FixedRng:
    """Places every window at the same fraction of the room it has."""

    def __init__(self, fraction: float):
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


def duty_for(hook: FakeHook, budget: float, period=0.05, rng=None, **kw) -> DutyCycle:
    return DutyCycle(hook.attach, hook.detach, hook.events, budget, period_s=period,
                     horizon_s=period, clock=hook.time.clock, wait=hook.time.wait,
                     rng=rng or random.Random(7), **kw)


def test_under_budget_the_hook_stays_attached():
    time = FakeTime(until=0.4)
    hook = FakeHook(time, rate_per_s=1000)
    duty = duty_for(hook, budget=100_000)
    duty.run()
    assert hook.log == [] and duty.attached and duty.lowest_share == 1.0 and duty.error is None
    assert set(time.waits) == {0.05}   # one look per look_s (capped at the period)


def test_step_walks_one_window_per_period():
    time = FakeTime()
    hook = FakeHook(time, rate_per_s=10_000_000)
    duty = DutyCycle(hook.attach, hook.detach, hook.events, 1_000_000, period_s=1.0,
                     horizon_s=0.1, clock=time.clock, wait=time.wait, rng=FixedRng(0.5))
    assert duty.step() == duty.look == 0.1 and hook.log == []   # the baseline only
    time.now = 0.1
    offset = duty.step()               # 10x over budget: detached, window at half the room
    assert duty.share == pytest.approx(0.1)
    assert offset == pytest.approx(0.45) and hook.log == [(0.1, False)]
    time.now += offset
    on = duty.step()
    assert on == pytest.approx(0.1) and hook.log[-1] == (time.now, True)
    time.now += on
    rest = duty.step()
    assert hook.log[-1] == (time.now, False) and offset + on + rest == pytest.approx(1.0)
    time.now += rest
    assert duty.step() == pytest.approx(0.45)   # measured again: the next period
    assert len(hook.log) == 3                    # still detached: no second detach


def test_over_budget_the_hook_is_shared_in_proportion():
    time = FakeTime(until=1.0)
    hook = FakeHook(time, rate_per_s=10_000_000)
    duty = duty_for(hook, budget=1_000_000, period=0.05)
    duty.run()
    assert duty.share == pytest.approx(0.1) and duty.lowest_share == pytest.approx(0.1)
    ons = [on for _, on in hook.log]
    assert ons[0] is False and ons.count(True) >= 15    # detached, then one window per period
    assert all(a != b for a, b in zip(ons, ons[1:]))    # strictly alternating
    windows = [(t0, t1) for (t0, a), (t1, b) in zip(hook.log, hook.log[1:]) if a and not b]
    assert all(t1 - t0 == pytest.approx(0.005) for t0, t1 in windows)   # the share of a period
    starts = [t0 for t0, _ in windows]
    assert len({round(t % 0.05, 6) for t in starts}) > 1   # at random offsets, not aliased


def test_a_burst_under_the_budget_per_second_changes_nothing():
    time = FakeTime(until=3.0)
    hook = FakeHook(time, count=lambda t: 50_000 if t > 0.05 else 0)   # at once, then quiet
    duty = DutyCycle(hook.attach, hook.detach, hook.events, 100_000, look_s=0.02,
                     clock=time.clock, wait=time.wait)
    duty.run()
    assert hook.log == [] and duty.lowest_share == 1.0


def test_a_flood_is_caught_at_the_first_look_past_the_budget():
    time = FakeTime(until=2.0)
    # Quiet for a second, then 10x the budget: over once the horizon holds 100k events.
    hook = FakeHook(time, count=lambda t: int(max(0.0, t - 1.0) * 1_000_000))
    duty = DutyCycle(hook.attach, hook.detach, hook.events, 100_000, look_s=0.02,
                     clock=time.clock, wait=time.wait, rng=FixedRng(0.0))
    duty.run()
    first_detach = hook.log[0]
    assert first_detach[1] is False and 1.1 < first_detach[0] <= 1.1 + 0.02 + 1e-9
    assert duty.lowest_share == pytest.approx(0.1)


def test_share_has_a_floor_and_no_budget_means_no_thread():
    duty = DutyCycle(lambda: None, lambda: None, lambda: 0, budget_per_s=10, min_share=0.01)
    assert duty.meter.share_for(1e9) == 0.01 and duty.meter.share_for(5) == 1.0
    read: list[int] = []
    idle = DutyCycle(lambda: None, lambda: None, lambda: read.append(1) or 0, budget_per_s=0)
    idle.start()
    idle.stop()   # joins the thread had there been one: it would have read the count
    assert read == [] and idle.lowest_share == 1.0 and idle.error is None


def test_a_failing_attach_is_kept_not_raised():
    time = FakeTime(until=10.0)
    hook = FakeHook(time, rate_per_s=1e7)

    def broken():
        raise OSError("attach refused")
    duty = DutyCycle(broken, hook.detach, hook.events, 1000, period_s=0.05, horizon_s=0.05,
                     clock=time.clock, wait=time.wait, rng=FixedRng(0.5))
    duty.run()   # returns: the loop ends at the failure
    assert isinstance(duty.error, OSError) and not duty.attached
    assert hook.log == [(0.05, False)] and time.now < 0.1


def test_sample_share_tells_the_kernel_side_only_changes():
    time = FakeTime(until=0.6)
    told: list[float] = []
    hook = FakeHook(time, count=lambda t: int(min(t, 0.3) * 1_000_000))   # a flood, then quiet
    share = SampleShare(told.append, hook.events, budget_per_s=100_000, look_s=0.02,
                        horizon_s=0.02, clock=time.clock, wait=time.wait)
    share.run()
    assert told[0] == pytest.approx(0.1, rel=1e-3) and told[-1] == 1.0 and share.share == 1.0
    assert all(a != b for a, b in zip(told, told[1:]))
    assert share.lowest_share == pytest.approx(0.1, rel=1e-3) and share.error is None
    quiet_time = FakeTime(until=0.5)
    quiet = SampleShare(told.append, FakeHook(quiet_time, rate_per_s=10).events,
                        budget_per_s=100_000, clock=quiet_time.clock, wait=quiet_time.wait)
    before = len(told)
    quiet.run()
    assert quiet.share == 1.0 and quiet.error is None and len(told) == before


def test_the_thread_ends_on_stop():
    told: list[float] = []
    share = SampleShare(told.append, lambda: 0, budget_per_s=100)   # real clock and wait
    share.start()
    share.stop()
    assert not share._thread.is_alive() and share.error is None and told == []


def test_the_collectors_keywords_still_work():
    """signals/profile/collector.py and signals/syscalls/collector.py build them with these arguments."""
    duty = DutyCycle(attach=lambda: None, detach=lambda: None, events=lambda: 0,
                     budget_per_s=1000)
    share = SampleShare(lambda s: None, lambda: 0, budget_per_s=1000)
    assert duty.period == 1.0 and duty.look == 0.1 and share.look == 0.1
