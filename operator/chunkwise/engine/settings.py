"""Run settings, grouped by concern.

Every field carries its unit in its name or comment, its default, and the
reason for that default. Validation happens on construction and names the
field and what was expected, so bad input from flags, env or a DataMigration
spec fails before any row is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "BatchSettings",
    "HaltThresholds",
    "RetrySettings",
    "RunSettings",
    "SettingsError",
    "Timeouts",
    "parse_duration",
]


class SettingsError(ValueError):
    """A setting has a value outside what it accepts. The message names the field."""


_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float | int, *, field_name: str) -> float:
    """Parse "500ms", "2s", "1.5m", "1h" or a plain number of seconds into seconds."""
    if isinstance(value, bool):
        raise SettingsError(
            f"{field_name}: expected a duration like '500ms' or '2s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise SettingsError(
                f"{field_name}: expected a duration like '500ms', '2s' or '1m', got {value!r}"
            )
        seconds = float(match["num"]) * _UNIT_SECONDS[match["unit"]]
    if seconds < 0:
        raise SettingsError(f"{field_name}: expected a duration >= 0, got {value!r}")
    return seconds


def _require(condition: bool, field_name: str, expected: str, got: object) -> None:
    if not condition:
        raise SettingsError(f"{field_name}: expected {expected}, got {got!r}")


@dataclass(frozen=True)
class BatchSettings:
    """How many rows a batch takes and how fast batches follow each other."""

    #: rows in the first batch; the tuner moves it toward ``target_duration``.
    size: int = 1000
    #: rows; the tuner never goes below this (tiny batches are all overhead).
    min_size: int = 100
    #: rows; caps row locks held at once and the size of one transaction.
    max_size: int = 50_000
    #: seconds one batch should take; pt-online-schema-change's 0.5 s chunk-time rule:
    #: short enough that row locks are held briefly, long enough to amortise a commit.
    target_duration: float = 0.5
    #: seconds to sleep between batches; gives replicas and vacuum room. 0 = none.
    pause: float = 0.0
    #: rows per second cap over the whole run. 0 = no cap.
    max_rows_per_second: float = 0.0
    #: largest share of the rows to do that one batch may lock (0.005 = 0.5%). Application
    #: writes to random rows then hit a locked row less than 1 time in 100, so their p99
    #: does not see the migration. 0 = no such cap (only max_size).
    max_locked_fraction: float = 0.005

    def __post_init__(self) -> None:
        _require(self.min_size >= 1, "batch.minSize", "an integer >= 1", self.min_size)
        _require(
            self.min_size <= self.size <= self.max_size,
            "batch.size",
            f"minSize ({self.min_size}) <= size <= maxSize ({self.max_size})",
            self.size,
        )
        _require(self.target_duration > 0, "batch.targetDuration", "a duration > 0",
                 self.target_duration)
        _require(self.pause >= 0, "batch.pause", "a duration >= 0", self.pause)
        _require(self.max_rows_per_second >= 0, "batch.maxRowsPerSecond",
                 "a number >= 0 (0 = no cap)", self.max_rows_per_second)
        _require(0 <= self.max_locked_fraction <= 1, "batch.maxLockedFraction",
                 "a fraction between 0 and 1 (0 = no cap)", self.max_locked_fraction)


@dataclass(frozen=True)
class Timeouts:
    """Per-statement limits, set with ``SET LOCAL`` inside every batch transaction."""

    #: seconds to wait for a row lock before giving up and retrying the batch; keeps the
    #: migration from queueing behind (and in front of) application transactions.
    lock: float = 2.0
    #: seconds any one statement may run; a runaway batch is cut and halved, not left running.
    statement: float = 30.0

    def __post_init__(self) -> None:
        _require(self.lock > 0, "timeouts.lock", "a duration > 0", self.lock)
        _require(self.statement > 0, "timeouts.statement", "a duration > 0", self.statement)


@dataclass(frozen=True)
class RetrySettings:
    """Retries of a batch that failed for a reason that retrying can fix."""

    #: attempts per batch, the first included; past this the run stops (exit 1, resumable).
    max_attempts: int = 5
    #: seconds before the first retry; doubles each attempt, with full jitter.
    backoff: float = 1.0
    #: seconds; cap of one backoff sleep.
    max_backoff: float = 30.0
    #: consecutive lock/statement timeouts after which the batch size is halved.
    halve_after_timeouts: int = 2

    def __post_init__(self) -> None:
        _require(self.max_attempts >= 1, "retries.maxAttempts", "an integer >= 1",
                 self.max_attempts)
        _require(self.backoff >= 0, "retries.backoff", "a duration >= 0", self.backoff)
        _require(self.max_backoff >= self.backoff, "retries.maxBackoff",
                 f"a duration >= backoff ({self.backoff})", self.max_backoff)
        _require(self.halve_after_timeouts >= 1, "retries.halveAfterTimeouts",
                 "an integer >= 1", self.halve_after_timeouts)


@dataclass(frozen=True)
class HaltThresholds:
    """The error budget: crossing any one stops the run in an orderly way."""

    #: failed (skipped and recorded) rows in total. 0 = halt at the first failed row.
    failed_rows: int = 100
    #: failed rows / rows attempted, checked once ``min_sample`` rows were attempted.
    failure_rate: float = 0.01
    #: rows attempted before ``failure_rate`` is checked; avoids halting on 1 bad row of 3.
    min_sample: int = 1000
    #: batches in a row with at least one failed row.
    consecutive_failed_batches: int = 5

    def __post_init__(self) -> None:
        _require(self.failed_rows >= 0, "haltOn.failedRows", "an integer >= 0",
                 self.failed_rows)
        _require(0 <= self.failure_rate <= 1, "haltOn.failureRate",
                 "a fraction between 0 and 1", self.failure_rate)
        _require(self.min_sample >= 0, "haltOn.minSample", "an integer >= 0", self.min_sample)
        _require(self.consecutive_failed_batches >= 1, "haltOn.consecutiveFailedBatches",
                 "an integer >= 1", self.consecutive_failed_batches)


@dataclass(frozen=True)
class RunSettings:
    """Everything a run of one operation is tuned by."""

    batch: BatchSettings = field(default_factory=BatchSettings)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: RetrySettings = field(default_factory=RetrySettings)
    halt_on: HaltThresholds = field(default_factory=HaltThresholds)
