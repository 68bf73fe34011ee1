"""One run, several listeners: the progress bar, the status mirror, the metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ErrorKind
from .health import Throttle
from .runner import BatchReport, CheckpointState, Outcome, Reporter

__all__ = ["Tee"]


class Tee:
    """Hands every report to each reporter, in order."""

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

    def throttle_changed(self, throttle: Throttle | None) -> None:
        for reporter in self._reporters:
            reporter.throttle_changed(throttle)

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        for reporter in self._reporters:
            reporter.retuned(generation, changes)

    def notice(self, message: str) -> None:
        for reporter in self._reporters:
            reporter.notice(message)

    def finished(self, outcome: Outcome) -> None:
        for reporter in self._reporters:
            reporter.finished(outcome)
