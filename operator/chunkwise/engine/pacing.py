"""Pace: batch size auto-tuning, the rows-per-second cap, retry backoff and the worker's
CPU priority.

The tuner follows pt-online-schema-change's chunk-time rule: keep an
exponentially weighted moving average of rows per second (weight 0.5 on the
newest batch, so it reacts within a few batches yet one slow batch does not
swing it), and size the next batch so it should take ``target_duration``.
Growth per step is capped at 2x, so a burst of fast batches cannot jump
straight to ``max_size`` and hold many row locks at once.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Final

from .health import HEALTH_REASONS
from .settings import BatchSettings, Caller, RetrySettings, tunable_named

__all__ = ["PACE", "THROTTLE_REASONS", "BatchSizer", "CpuPriority", "RateLimiter",
           "backoff_seconds"]

#: why a run waited instead of pushing on (``Reporter.throttled``'s reason): the pause
#: between batches and the rows-per-second cap, or the database's health
PACE: Final = "pace"
THROTTLE_REASONS: Final = (PACE, *HEALTH_REASONS)

_WEIGHT_NEWEST = 0.5
_MAX_GROWTH = 2.0


class BatchSizer:
    def __init__(self, settings: BatchSettings) -> None:
        self._settings = settings
        self._rows_per_second: float | None = None
        self._max = settings.max_size
        self.size = settings.size

    def plan(self, rows_to_do: int, caller: Caller = Caller.POD) -> str | None:
        """Cap batches at ``max_locked_fraction`` of the rows to do (never below min_size).

        Returns what a user should be told when that cap lowers the batch size they asked
        for, the settings named as ``caller``'s user sets them; nothing when it does not
        (the tuner's room to grow is its own business)."""
        settings = self._settings
        fraction = settings.max_locked_fraction
        if not (fraction > 0 and rows_to_do > 0):
            return None
        asked = self.size
        self._max = max(settings.min_size, min(settings.max_size, int(rows_to_do * fraction)))
        self.size = self._clamp(self.size)
        if self.size >= asked:
            return None
        size, max_size, locked = (caller.knob(tunable_named(spec)) for spec in (
            "batch.size", "batch.maxSize", "batch.maxLockedFraction"))
        return (f"batches capped at {self._max:,} rows, below {max_size} "
                f"{settings.max_size:,}: {locked} {fraction:g} of {rows_to_do:,} rows to do "
                f"({size} {asked:,} -> {self.size:,}; set {locked} to 0 to lift the cap)")

    def observe(self, rows: int, seconds: float) -> None:
        """Feed back one committed batch; sets ``size`` for the next one."""
        if rows <= 0 or seconds <= 0:
            return
        rate = rows / seconds
        if self._rows_per_second is None:
            self._rows_per_second = rate
        else:
            self._rows_per_second = (
                _WEIGHT_NEWEST * rate + (1 - _WEIGHT_NEWEST) * self._rows_per_second
            )
        wanted = self._rows_per_second * self._settings.target_duration
        wanted = min(wanted, self.size * _MAX_GROWTH)
        self.size = self._clamp(int(wanted))

    def retune(self, settings: BatchSettings, rows_to_do: int) -> None:
        """New bounds while running: a new ``size`` is where it goes on from; otherwise
        the tuned size stays, clamped to the new bounds."""
        restart = settings.size != self._settings.size
        self._settings = settings
        self._max = settings.max_size
        if restart:
            self.size = settings.size
            self._rows_per_second = None
        self.plan(rows_to_do)
        self.size = self._clamp(self.size)

    def halve(self) -> None:
        """After repeated timeouts: smaller batches hold fewer locks for less time."""
        self.size = self._clamp(self.size // 2)
        self._rows_per_second = None

    def _clamp(self, size: int) -> int:
        return max(self._settings.min_size, min(self._max, size))


class RateLimiter:
    """Sleeps so that rows/s over the run stays at or under the cap, plus a fixed pause."""

    def __init__(
        self,
        settings: BatchSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._started = clock()
        self._rows = 0

    def delay_after(self, rows: int) -> float:
        """Seconds to wait before the next batch, given ``rows`` just committed."""
        self._rows += rows
        wait = self._settings.pause
        cap = self._settings.max_rows_per_second
        if cap > 0:
            earliest = self._started + self._rows / cap
            wait = max(wait, earliest - self._clock())
        return max(0.0, wait)


def backoff_seconds(
    attempt: int, settings: RetrySettings, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's variant)."""
    ceiling = min(settings.max_backoff, settings.backoff * 2.0 ** (attempt - 1))
    return ceiling * rng()


class CpuPriority:
    """The calling thread's CPU scheduling policy while a run yields the CPU
    (``batch.yieldCpu``): Linux's SCHED_IDLE, under which any other runnable thread on
    a core goes first. Per thread, so each shard's thread sets its own.

    Where the runner shares cores with the database and the application, the Python
    between a batch's statements otherwise competes with them: on 2 shared cores it
    took application writers' p99 from about 1 ms to 2-3 ms (bench/run.py)."""

    def __init__(self) -> None:
        self._previous: tuple[int, int] | None = None  # (policy, priority) to go back to

    def apply(self, yield_cpu: bool) -> str | None:
        """Yield the CPU or stop yielding it; returns why it could not, if it could not."""
        if yield_cpu == (self._previous is not None):
            return None
        if not yield_cpu:
            return self.restore()
        if not hasattr(os, "SCHED_IDLE"):
            return "batch.yieldCpu: this platform has no SCHED_IDLE; running at normal priority"
        previous = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as exc:
            return f"batch.yieldCpu: could not lower the CPU priority ({exc.strerror})"
        self._previous = previous
        return None

    def restore(self) -> str | None:
        """The policy from before :meth:`apply`; an unprivileged thread may not be allowed
        back (RLIMIT_NICE), which is said, not raised: the run itself is done."""
        if self._previous is None:
            return None
        policy, priority = self._previous
        self._previous = None
        try:
            os.sched_setscheduler(0, policy, os.sched_param(priority))
        except OSError as exc:
            return (f"batch.yieldCpu: could not restore the CPU priority ({exc.strerror}); "
                    "this thread stays at idle priority")
        return None
