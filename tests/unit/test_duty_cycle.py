"""The entry-hook time-sharing, driven by a fake event counter."""

import threading
import time

from ebpf_otlp.runtime.duty_cycle import DutyCycle


class FakeHook:
    def __init__(self, rate_per_s: float):
        self.rate = rate_per_s
        self.t0 = time.monotonic()
        self.log: list[tuple[float, bool]] = []
        self.lock = threading.Lock()

    def events(self) -> int:
        return int((time.monotonic() - self.t0) * self.rate)

    def attach(self):
        with self.lock:
            self.log.append((time.monotonic(), True))

    def detach(self):
        with self.lock:
            self.log.append((time.monotonic(), False))


def run_for(hook: FakeHook, budget: float, seconds: float, period=0.05) -> DutyCycle:
    duty = DutyCycle(hook.attach, hook.detach, hook.events, budget, period_s=period,
                     horizon_s=period)
    duty.start()
    time.sleep(seconds)
    duty.stop()
    return duty


def test_under_budget_the_hook_stays_attached():
    hook = FakeHook(rate_per_s=1000)
    duty = run_for(hook, budget=100_000, seconds=0.4)
    assert hook.log == [] and duty.attached and duty.lowest_share == 1.0


def test_over_budget_the_hook_is_shared_in_proportion():
    hook = FakeHook(rate_per_s=10_000_000)
    duty = run_for(hook, budget=1_000_000, seconds=0.6)
    assert abs(duty.share - 0.1) < 0.01 and abs(duty.lowest_share - 0.1) < 0.01
    ons = [on for _, on in hook.log]
    assert ons[0] is False and ons.count(True) >= 3   # detached, then one window per period
    assert all(a != b for a, b in zip(ons, ons[1:]))  # strictly alternating


def test_a_burst_under_the_budget_per_second_changes_nothing():
    class Burst(FakeHook):
        def events(self):   # 50k events at once, then quiet
            return 50_000 if time.monotonic() - self.t0 > 0.05 else 0
    hook = Burst(0)
    duty = DutyCycle(hook.attach, hook.detach, hook.events, 100_000, look_s=0.02)
    duty.start()
    time.sleep(0.3)
    duty.stop()
    assert hook.log == [] and duty.lowest_share == 1.0


def test_share_has_a_floor_and_no_budget_means_no_thread():
    duty = DutyCycle(lambda: None, lambda: None, lambda: 0, budget_per_s=10, min_share=0.01)
    assert duty.meter.share_for(1e9) == 0.01 and duty.meter.share_for(5) == 1.0
    hook = FakeHook(rate_per_s=1e9)
    assert run_for(hook, budget=0, seconds=0.15).lowest_share == 1.0 and hook.log == []


def test_a_failing_attach_is_kept_not_raised():
    hook = FakeHook(rate_per_s=1e7)

    def broken():
        raise OSError("attach refused")
    duty = DutyCycle(broken, hook.detach, hook.events, 1000, period_s=0.05, horizon_s=0.05)
    duty.start()
    time.sleep(0.3)
    duty.stop()
    assert isinstance(duty.error, OSError) and not duty.attached


def test_sample_share_tells_the_kernel_side_only_changes():
    from ebpf_otlp.runtime.duty_cycle import SampleShare

    told: list[float] = []
    hook = FakeHook(rate_per_s=1_000_000)
    share = SampleShare(told.append, hook.events, budget_per_s=100_000, look_s=0.02, horizon_s=0.02)
    share.start()
    time.sleep(0.3)
    share.stop()
    assert told and abs(told[-1] - 0.1) < 0.02 and share.lowest_share <= told[-1] + 1e-9
    assert all(a != b for a, b in zip(told, told[1:]))
    quiet = SampleShare(told.append, FakeHook(rate_per_s=10).events, budget_per_s=100_000)
    quiet.start()
    time.sleep(0.25)
    quiet.stop()
    assert quiet.share == 1.0 and quiet.error is None
