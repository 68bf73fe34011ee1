"""Mirror a run's progress into its DataMigration's status, at most every 2 s and at the end.

A failed patch never fails the migration: the checkpoint in the database is the
truth; the status is a view of it.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from chunkwise.engine import (
    BatchReport,
    CheckpointState,
    ErrorKind,
    ExitCode,
    Outcome,
    Reporter,
    format_duration,
    progress_of,
)

from .kubeapi import StatusClient

__all__ = ["StatusReporter", "Tee"]

_OUTCOME_STATE = {ExitCode.DONE: "done", ExitCode.HALTED: "halted",
                  ExitCode.INTERRUPTED: "interrupted"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusReporter:
    def __init__(self, client: StatusClient, interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._interval = interval
        self._clock = clock
        self._last_patch = float("-inf")
        self._started = clock()
        self._rows_at_start = 0
        self._warned = False

    def _progress(self, state: CheckpointState, checkpoint_at: str | None) -> dict[str, Any]:
        p = progress_of(state, self._rows_at_start, self._clock() - self._started)
        percent = int(100 * p.fraction)
        progress: dict[str, Any] = {
            "rowsProcessed": p.done, "rowsEstimated": p.total, "percent": percent,
            "percentText": f"{percent}%", "rowsPerSecond": int(p.rows_per_second),
            "etaSeconds": None if p.eta_seconds is None else int(p.eta_seconds),
            "eta": format_duration(p.eta_seconds, clock=False),
            "batches": state.batches, "failedRows": state.tally.failed_rows,
            "lockWaitSeconds": round(state.lock_wait_seconds, 3),
        }
        if checkpoint_at:
            progress["lastCheckpointAt"] = checkpoint_at
        return progress

    def _patch(self, status: dict[str, Any]) -> None:
        try:
            self._client.patch_status(status)
            self._last_patch = self._clock()
        except Exception as exc:  # noqa: BLE001 - a view; the checkpoint is the truth
            if not self._warned:
                sys.stderr.write(f"chunkwise: cannot update DataMigration {self._client.resource}"
                                 f" status ({exc}); progress is still checkpointed\n")
                self._warned = True

    def _shards(self, state: CheckpointState) -> list[dict[str, Any]]:
        return [{"index": 0, "lastKey": None if state.last_key is None else str(state.last_key),
                 "rowsProcessed": state.tally.rows_processed, "done": state.done}]

    def started(self, state: CheckpointState) -> None:
        self._started = self._clock()
        self._rows_at_start = state.tally.rows_processed
        self._patch({"progress": self._progress(state, _now()), "shards": self._shards(state),
                     "worker": {"state": "running", "pod": os.environ.get("HOSTNAME", ""),
                                "reason": "", "message": ""}})

    def batch_committed(self, report: BatchReport) -> None:
        if self._clock() - self._last_patch >= self._interval:
            self._patch({"progress": self._progress(report.state, _now()),
                         "shards": self._shards(report.state)})

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None:
        pass

    def throttled(self, reason: str, seconds: float) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        status: dict[str, Any] = {"worker": {
            "state": _OUTCOME_STATE.get(outcome.exit_code, "failed"), "reason": outcome.reason,
            "message": outcome.message, "exitCode": int(outcome.exit_code)}}
        if outcome.state is not None:
            status["progress"] = self._progress(outcome.state, _now())
            status["shards"] = self._shards(outcome.state)
        self._patch(status)


class Tee:
    """Hands every report to several reporters (the progress bar and the status)."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self._reporters = list(reporters)

    def started(self, state: CheckpointState) -> None:
        for reporter in self._reporters:
            reporter.started(state)

    def batch_committed(self, report: BatchReport) -> None:
        for reporter in self._reporters:
            reporter.batch_committed(report)

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None:
        for reporter in self._reporters:
            reporter.retrying(kind, attempt, delay)

    def throttled(self, reason: str, seconds: float) -> None:
        for reporter in self._reporters:
            reporter.throttled(reason, seconds)

    def finished(self, outcome: Outcome) -> None:
        for reporter in self._reporters:
            reporter.finished(outcome)
