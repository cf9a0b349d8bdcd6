"""Per-domain retry delays: exponential backoff on errors, and KubeVirt's crash-loop backoff.

The reconciler's worker asks these for a delay and hands it to `WorkQueue.add_after`; status
shows `failures(name)` as the attempt count and `retry_at(name)` as `backoffUntil`. Nothing
here sleeps, enqueues or touches a domain: it is bookkeeping over an injected clock.

- `ErrorBackoff` (client-go's ItemExponentialFailureRateLimiter): a reconcile pass that raised a
  TransientError is retried after base × 2^(failures so far), capped. `forget` on success.
- `CrashLoopBackoff` (KubeVirt's calculateStartBackoffTime): a domain that keeps stopping or
  failing to start is restarted after interval × n² plus up to half of that again at random,
  capped, where interval = max(min_interval, cap / 30) and n counts consecutive failures. The
  count resets once the domain has been running for `stable_after` seconds. With the defaults:
  1 → 10–15 s, 2 → 40–60 s, 3 → 90–135 s, 4 → 160–240 s, 5+ → 300 s.

Public surface:
    BackoffSettings, CrashLoopSettings: controller/settings.py
    ErrorBackoff(settings).when(name) / failures(name) / forget(name)
    CrashLoopBackoff(settings, clock, uniform).failed(name) -> delay; running(name);
        restore(name, failures); failures(name); retry_at(name); remaining(name); forget(name)
    crash_loop_delay(n, settings, uniform) -> float
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from controller.settings import BackoffSettings, CrashLoopSettings

Uniform = Callable[[float, float], float]  # random.uniform's signature: a value in [lo, hi]


class ErrorBackoff:
    def __init__(self, settings: BackoffSettings = BackoffSettings()) -> None:
        self._settings = settings
        self._failures: dict[str, int] = {}

    def when(self, name: str) -> float:
        """Count one more failure of `name`; the delay in seconds before retrying it."""
        exponent = self._failures.get(name, 0)
        self._failures[name] = exponent + 1
        if exponent >= 64:  # 2**64 × base is past any cap; avoid float overflow on huge counts
            return self._settings.cap
        return min(self._settings.base * 2.0 ** exponent, self._settings.cap)

    def failures(self, name: str) -> int:
        return self._failures.get(name, 0)

    def forget(self, name: str) -> None:
        self._failures.pop(name, None)


def crash_loop_delay(failures: int, settings: CrashLoopSettings, uniform: Uniform) -> float:
    """Seconds to wait before restarting after the `failures`-th consecutive failure (≥ 1):
    min_interval × failures², plus up to half again, capped; min_interval 0 means no delay
    (`--restart-backoff 0`), as the README documents."""
    delay = settings.min_interval * failures ** 2
    delay += uniform(0.0, delay / 2)
    return min(delay, settings.cap)


@dataclass
class _Loop:
    failures: int = 0
    retry_at: float | None = None  # clock time before which no restart should be tried
    running_since: float | None = None


class CrashLoopBackoff:
    """Consecutive start failures per domain; `clock` is monotonic seconds (Clock.now)."""

    def __init__(self, settings: CrashLoopSettings, clock: Callable[[], float],
                 uniform: Uniform = random.SystemRandom().uniform) -> None:
        self._settings = settings
        self._clock = clock
        self._uniform = uniform
        self._loops: dict[str, _Loop] = {}

    def failed(self, name: str) -> float:
        """The domain stopped unasked or failed to start: count it; the delay before restarting.

        Call it for every stop the controller is going to undo by starting the domain again.
        """
        loop = self._loops.setdefault(name, _Loop())
        loop.failures += 1
        loop.running_since = None
        delay = crash_loop_delay(loop.failures, self._settings, self._uniform)
        loop.retry_at = self._clock() + delay
        return delay

    def running(self, name: str) -> None:
        """The domain was observed running; after `stable_after` seconds of it, reset the count."""
        loop = self._loops.get(name)
        if loop is None:
            return
        now = self._clock()
        if loop.running_since is None:
            loop.running_since = now
        elif now - loop.running_since >= self._settings.stable_after:
            del self._loops[name]

    def failures(self, name: str) -> int:
        loop = self._loops.get(name)
        return loop.failures if loop else 0

    def retry_at(self, name: str) -> float | None:
        """Clock time of the next allowed restart, or None when not backing off."""
        loop = self._loops.get(name)
        return loop.retry_at if loop else None

    def remaining(self, name: str) -> float:
        """Seconds until a restart is allowed; 0 when it is allowed now."""
        retry_at = self.retry_at(name)
        return 0.0 if retry_at is None else max(0.0, retry_at - self._clock())

    def restore(self, name: str, failures: int) -> None:
        """Resume counting after a controller restart: the next failure backs off longer, and
        `stable_after` seconds of running still reset the count."""
        if failures > 0:
            self._loops[name] = _Loop(failures=failures)

    def forget(self, name: str) -> None:
        """Drop all tracking: the manifest changed, the domain is to be shut off, or removed."""
        self._loops.pop(name, None)
