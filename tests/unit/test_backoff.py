"""Backoff: exact delay sequences against an injected clock and random source."""

from __future__ import annotations

import pytest

from controller.engine.backoff import CrashLoopBackoff, ErrorBackoff, crash_loop_delay
from controller.engine.clock import ManualClock
from controller.settings import BackoffSettings, CrashLoopSettings


def no_jitter(lo: float, hi: float) -> float:
    return lo


def full_jitter(lo: float, hi: float) -> float:
    return hi


def test_error_backoff_doubles_to_the_cap_per_name() -> None:
    backoff = ErrorBackoff(BackoffSettings(base=1.0, cap=10.0))
    assert [backoff.when("a") for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.when("b") == 1.0  # names are independent
    assert backoff.failures("a") == 6


def test_error_backoff_forget_starts_over() -> None:
    backoff = ErrorBackoff(BackoffSettings(base=0.5, cap=300.0))
    backoff.when("a")
    backoff.when("a")
    backoff.forget("a")
    assert backoff.failures("a") == 0
    assert backoff.when("a") == 0.5


def test_error_backoff_survives_huge_counts() -> None:
    backoff = ErrorBackoff(BackoffSettings(base=1.0, cap=7.0))
    for _ in range(2000):
        delay = backoff.when("a")
    assert delay == 7.0


@pytest.mark.parametrize(("failures", "low", "high"), [
    (1, 10.0, 15.0),   # KubeVirt's own test: 1 → 10–15 s
    (2, 40.0, 60.0),   # 2 → 40–60 s
    (3, 90.0, 135.0),
    (4, 160.0, 240.0),
    (5, 250.0, 300.0),
    (6, 300.0, 300.0),
    (50, 300.0, 300.0),
])
def test_crash_loop_delay_table_with_defaults(failures: int, low: float, high: float) -> None:
    settings = CrashLoopSettings()
    assert crash_loop_delay(failures, settings, no_jitter) == low
    assert crash_loop_delay(failures, settings, full_jitter) == high


def test_the_cap_only_caps() -> None:
    settings = CrashLoopSettings(cap=600.0)  # S×n², whatever the cap, until the cap
    assert crash_loop_delay(1, settings, no_jitter) == 10.0
    assert crash_loop_delay(2, settings, no_jitter) == 40.0
    assert crash_loop_delay(10, settings, no_jitter) == 600.0


def test_restart_backoff_zero_means_no_delay() -> None:
    """`--restart-backoff 0`: a crashed domain is started again at once, every time."""
    settings = CrashLoopSettings(min_interval=0.0)
    assert [crash_loop_delay(n, settings, full_jitter) for n in (1, 5, 50)] == [0.0] * 3


def test_crash_loop_jitter_is_drawn_from_zero_to_half_the_delay() -> None:
    draws: list[tuple[float, float]] = []

    def recording(lo: float, hi: float) -> float:
        draws.append((lo, hi))
        return 1.5

    assert crash_loop_delay(2, CrashLoopSettings(), recording) == 41.5
    assert draws == [(0.0, 20.0)]


def test_crash_loop_sequence_on_the_clock() -> None:
    clock = ManualClock(1000.0)
    loops = CrashLoopBackoff(CrashLoopSettings(), clock.now, no_jitter)
    assert loops.retry_at("a") is None and loops.remaining("a") == 0.0
    assert loops.failed("a") == 10.0
    assert loops.retry_at("a") == 1010.0
    clock.advance(4)
    assert loops.remaining("a") == 6.0
    assert [loops.failed("a") for _ in range(3)] == [40.0, 90.0, 160.0]
    assert loops.failures("a") == 4
    assert loops.retry_at("a") == 1164.0
    clock.advance(1000)
    assert loops.remaining("a") == 0.0


def test_crash_loop_resets_after_stable_running_only() -> None:
    clock = ManualClock()
    loops = CrashLoopBackoff(CrashLoopSettings(min_interval=0.1, cap=3.0, stable_after=6.0),
                             clock.now, no_jitter)
    loops.failed("a")
    loops.failed("a")
    loops.running("a")  # stability counted from the first observation
    clock.advance(5.9)
    loops.running("a")
    assert loops.failures("a") == 2
    loops.failed("a")  # crashed before becoming stable: the count goes on
    assert loops.failures("a") == 3
    loops.running("a")
    clock.advance(6.0)
    loops.running("a")
    assert loops.failures("a") == 0
    assert loops.retry_at("a") is None
    assert loops.failed("a") == 0.1  # small numbers for fast integration runs


def test_crash_loop_forget_and_running_of_unknown_name() -> None:
    clock = ManualClock()
    loops = CrashLoopBackoff(CrashLoopSettings(), clock.now, full_jitter)
    loops.running("never-failed")
    assert loops.failures("never-failed") == 0
    assert loops.failed("a") == 15.0
    loops.forget("a")
    assert loops.failures("a") == 0
    assert loops.failed("a") == 15.0


def test_a_restored_count_backs_off_longer_and_still_resets_when_stable() -> None:
    clock = ManualClock()
    settings = CrashLoopSettings(min_interval=10, cap=300, stable_after=60)
    backoff = CrashLoopBackoff(settings, clock.now, uniform=lambda lo, hi: lo)
    backoff.restore("vm", 2)
    assert backoff.remaining("vm") == 0.0  # no wait imposed by the restore itself
    assert backoff.failed("vm") == 90.0  # the third failure: 10 × 3²
    backoff.running("vm")
    clock.advance(60)
    backoff.running("vm")
    assert backoff.failures("vm") == 0
