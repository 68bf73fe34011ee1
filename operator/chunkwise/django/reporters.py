"""Reporters that other packages add to ``chunkwise_run``, found by entry point.

A run reports to the terminal's progress bar. Packages may wrap that reporter with
their own by declaring an entry point in the ``chunkwise.reporters`` group whose value
is a factory ``(Reporter) -> Reporter``. chunkwise's worker uses this to mirror
progress into the DataMigration status when it runs in a Job, so this layer never
imports the worker (the import-linter contracts keep it so).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from chunkwise.engine import BatchReport, CheckpointState, ErrorKind, Outcome, Reporter

__all__ = ["ENTRY_POINT_GROUP", "NullReporter", "with_plugins"]

ENTRY_POINT_GROUP = "chunkwise.reporters"
ReporterFactory = Callable[[Reporter], Reporter]


def with_plugins(reporter: Reporter, group: str = ENTRY_POINT_GROUP) -> Reporter:
    """``reporter`` wrapped by every installed factory, in entry point name order."""
    for entry_point in sorted(entry_points(group=group), key=lambda e: e.name):
        factory: ReporterFactory = entry_point.load()
        reporter = factory(reporter)
    return reporter


class NullReporter:
    """Says nothing: the base when only the plugins should hear (a usage error that the
    command itself prints)."""

    def started(self, state: CheckpointState) -> None: ...

    def batch_committed(self, report: BatchReport) -> None: ...

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None: ...

    def throttled(self, reason: str, seconds: float) -> None: ...

    def notice(self, message: str) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...
