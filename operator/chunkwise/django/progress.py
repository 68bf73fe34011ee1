"""Progress for people: a one-line bar on a terminal, a log line every few seconds elsewhere."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from chunkwise.contract import WorkerState
from chunkwise.engine import (
    BatchReport,
    CheckpointState,
    ErrorKind,
    Outcome,
    Throttle,
    format_duration,
    progress_of,
)

__all__ = ["ProgressBar"]


class ProgressBar:
    """Implements the engine's Reporter for a human watching a terminal or a log."""

    WIDTH = 24

    def __init__(self, title: str, stream: TextIO | None = None,
                 log_every: float = 5.0, lock_waits: bool = True) -> None:
        """``lock_waits``: whether the database has row locks to wait for; without them
        (SQLite) the line says nothing of lock waits rather than a figure of nothing."""
        self._title = title
        self._lock_waits = lock_waits
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._log_every = log_every
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._rows_at_start = 0
        self._retries = 0
        self._throttle_reason = ""
        self._throttled_since: float | None = None

    def started(self, state: CheckpointState) -> None:
        self._started = time.monotonic()
        self._rows_at_start = state.tally.rows_processed
        if state.last_key is not None and not state.done:
            self._write(f"{self._title}: resuming after key {state.last_key} "
                        f"({state.tally.rows_processed:,} rows already done)\n")

    def line(self, state: CheckpointState) -> str:
        state = state.run_totals or state  # with shards: all of them
        p = progress_of(state, self._rows_at_start, time.monotonic() - self._started)
        filled = int(p.fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        failed = f"  failed {state.tally.failed_rows:,}" if state.tally.failed_rows else ""
        waited = f"  lock wait {state.lock_wait_seconds:.2f}s" if self._lock_waits else ""
        return (f"{self._title} [{bar}] {p.fraction:6.1%}  {p.done:,}/{p.total:,} rows  "
                f"{p.rows_per_second:,.0f} rows/s  ETA {format_duration(p.eta_seconds)}"
                f"{waited}{failed}")

    def batch_committed(self, report: BatchReport) -> None:
        now = time.monotonic()
        if self._tty and now - self._last_draw >= 0.1:
            self._write("\r" + self.line(report.state) + "\x1b[K")
            self._last_draw = now
        elif not self._tty and now - self._last_draw >= self._log_every:
            self._write(self.line(report.state) + "\n")
            self._last_draw = now

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None:
        self._retries += 1
        prefix = "\n" if self._tty else ""
        self._write(f"{prefix}{self._title}: {kind.value}, retry {attempt} in {delay:.1f}s\n")

    def throttled(self, reason: str, seconds: float) -> None:
        pass  # pauses are the user's own setting; the rows/s figure already shows them

    def throttle_changed(self, throttle: Throttle | None) -> None:
        """Said when the reason changes and when it ends, not at every fresh reading."""
        prefix = "\n" if self._tty else ""
        if throttle is None:
            since = self._throttled_since or time.monotonic()
            self._write(f"{prefix}{self._title}: no longer throttled, after "
                        f"{format_duration(time.monotonic() - since)}\n")
            self._throttle_reason, self._throttled_since = "", None
        elif throttle.reason != self._throttle_reason:
            self._write(f"{prefix}{self._title}: throttled: {throttle.message}; waiting\n")
            self._throttle_reason = throttle.reason
            self._throttled_since = self._throttled_since or time.monotonic()

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        what = ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changes.items())
        prefix = "\n" if self._tty else ""
        self._write(f"{prefix}{self._title}: retuned (spec generation {generation}): "
                    f"{what or 'no tunable changed'}\n")

    def notice(self, message: str) -> None:
        self._write(f"{self._title}: note: {message}\n")

    def finished(self, outcome: Outcome) -> None:
        if outcome.state is not None and outcome.reason != "AlreadyDone":
            self._write(("\r" if self._tty else "") + self.line(outcome.state)
                        + ("\x1b[K" if self._tty else "") + "\n")
        state = WorkerState.of(outcome.exit_code)  # a halt needs a person: said loudly
        verdict = {WorkerState.HALTED: "HALTED", WorkerState.FAILED: "stopped"}.get(state, state)
        self._write(f"{self._title}: {verdict} ({outcome.reason}): {outcome.message}\n")
        if outcome.verification is not None:
            self._write(f"{self._title}: verified: {outcome.verification.describe()}\n")

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
