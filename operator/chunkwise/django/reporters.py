"""Reporters that other packages add to ``chunkwise_run``, found by entry point.

A run reports to the terminal's progress bar. Packages may wrap that reporter with
their own by declaring an entry point in the ``chunkwise.reporters`` group whose value
is a factory ``(Reporter) -> Reporter``. chunkwise's worker uses this to mirror
progress into the DataMigration status when it runs in a Job, so this layer never
imports the worker (the import-linter contracts keep it so).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from chunkwise.engine import (
    BatchReport,
    CheckpointState,
    ErrorKind,
    Outcome,
    Reporter,
    Throttle,
)

__all__ = ["ENTRY_POINT_GROUP", "TUNING_GROUP", "NullReporter", "TuningSource",
           "tuning_sources", "with_plugins"]

ENTRY_POINT_GROUP = "chunkwise.reporters"
ReporterFactory = Callable[[Reporter], Reporter]
#: entry points whose value is a factory ``() -> TuningSource | None``: where a running
#: worker takes new tunables from (chunkwise's worker: its DataMigration's spec)
TUNING_GROUP = "chunkwise.tuning"
#: (spec generation, CHUNKWISE_* tunables) when they changed since the last call, else None
TuningSource = Callable[[], "tuple[int, Mapping[str, str]] | None"]


def with_plugins(reporter: Reporter, group: str = ENTRY_POINT_GROUP) -> Reporter:
    """``reporter`` wrapped by every installed factory, in entry point name order."""
    for entry_point in sorted(entry_points(group=group), key=lambda e: e.name):
        factory: ReporterFactory = entry_point.load()
        reporter = factory(reporter)
    return reporter


def tuning_sources(group: str = TUNING_GROUP) -> list[TuningSource]:
    """Every installed tuning source that has something to follow in this process."""
    sources = []
    for entry_point in sorted(entry_points(group=group), key=lambda e: e.name):
        source = entry_point.load()()
        if source is not None:
            sources.append(source)
    return sources


class NullReporter:
    """Says nothing: the base when only the plugins should hear (a usage error that the
    command itself prints)."""

    def started(self, state: CheckpointState) -> None: ...

    def batch_committed(self, report: BatchReport) -> None: ...

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None: ...

    def throttled(self, reason: str, seconds: float) -> None: ...

    def throttle_changed(self, throttle: Throttle | None) -> None: ...

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None: ...

    def notice(self, message: str) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...
