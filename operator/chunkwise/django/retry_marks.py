"""A run's failed rows marked for retry: the admin's one action, and how the retry of
:mod:`.retry` takes the mark up.

Marking runs nothing: a web request is no place for a pass over thousands of rows, and
the code is fixed by a deploy, which the person in the admin may not make. The mark is a
row of its own (RetryRequest) that says who asked and when, and:

- a plain ``manage.py chunkwise_run APP MIGRATION`` by hand (every shard in one process)
  of a marked run retries its failed rows, where it would otherwise say the run is done
  and do nothing; ``--retry-failed`` retries them whether marked or not;
- a retry that goes through every record (each row succeeded, failed again or left todo)
  removes the mark; one that stops (a halt, a signal) leaves it for the next;
- in a cluster the retry is the DataMigration's ``spec.retryFailed``: a pod does only what
  its spec says (and each of an Indexed Job's pods would otherwise take the same mark up),
  so a pod ignores marks, and its retry removes them as any retry does.

A mark applies while its run is done and has failed rows recorded, and only to the run it
was made on: a run that completed again after it (a backward run, then forward again) has
new failed rows nobody looked at, and the older mark is not theirs.

Nothing here writes a checkpoint: the mark never moves a run's position or counts.
``migrate`` never reads marks either (the runner under ``migrate`` uses only the tables of
chunkwise's migrations up to :data:`.layout_checks.RUNNER_MIGRATION`, and this table is
0004's), so a project that has not applied 0004 yet migrates as before.
"""

from __future__ import annotations

import dataclasses
import datetime

from django.db import connections, transaction
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.utils import timezone

from chunkwise.contract import ShardState

from .models import Checkpoint, RetryRequest
from .operation_ref import OperationRef

__all__ = ["MarkRefused", "clear_mark", "describe", "mark_for_retry", "mark_of",
           "marks_available"]


class MarkRefused(Exception):
    """The run cannot be marked (not done, nothing recorded): said in the admin's words."""


@dataclasses.dataclass(frozen=True)
class _RunNow:
    """What a mark needs to know of a run: over every shard."""

    shards: int
    done: bool
    failed_rows: int
    completed_at: datetime.datetime | None
    states: str  #: the states of its unfinished shards, for a refusal


def _run_now(ref: OperationRef, alias: str) -> _RunNow:
    totals = _shards_of(ref, alias).aggregate(
        shards=Count("pk"), left=Count("pk", filter=~Q(state=ShardState.DONE)),
        failed=Sum("failed_rows"), completed=Max("completed_at"))
    states = ", ".join(sorted(set(_shards_of(ref, alias).exclude(
        state=ShardState.DONE).values_list("state", flat=True)))) if totals["left"] else ""
    return _RunNow(int(totals["shards"]), not totals["left"], int(totals["failed"] or 0),
                   totals["completed"], states)


def _shards_of(ref: OperationRef, alias: str) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.using(alias).filter(
        app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
        direction=ref.direction)


def _marks_of(ref: OperationRef, alias: str) -> QuerySet[RetryRequest]:
    return RetryRequest.objects.using(alias).filter(
        app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
        direction=ref.direction)


def marks_available(alias: str) -> bool:
    """Whether the marks' table exists: chunkwise_run may run against a database whose
    chunkwise migrations stop at the runner's (0003), where there can be no mark."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        return RetryRequest._meta.db_table in connection.introspection.table_names(cursor)


def mark_for_retry(ref: OperationRef, alias: str, requested_by: str) -> int:
    """Mark ``ref``'s run (every shard, in ``ref``'s direction) for a retry of its failed
    rows, as ``requested_by``; marking it again renews the mark. Returns how many failed
    rows are recorded. Raises MarkRefused when the retry would refuse it: a run that is
    not done (a retry waits for every row of the run to have been through it), or one
    with no failed rows."""
    with transaction.atomic(using=alias):
        run = _run_now(ref, alias)
        if not run.shards:
            raise MarkRefused(f"{ref} has no checkpoint: nothing has run")
        if not run.done:
            raise MarkRefused(
                f"{ref} is not done ({run.states}): its failed rows are retried once every "
                "row of the run has been through it; finish the run, then mark it")
        if not run.failed_rows:
            raise MarkRefused(f"{ref} has no failed rows recorded: nothing to retry")
        _marks_of(ref, alias).delete()
        RetryRequest.objects.using(alias).create(
            app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
            direction=ref.direction, requested_by=requested_by, requested_at=timezone.now())
    return run.failed_rows


def mark_of(ref: OperationRef, alias: str) -> RetryRequest | None:
    """The mark on ``ref``'s run that a retry should act on, if any: one made since the
    run (as it stands) completed, while it is done with failed rows recorded."""
    if not marks_available(alias):
        return None
    mark = _marks_of(ref, alias).first()
    if mark is None:
        return None
    run = _run_now(ref, alias)
    if not (run.done and run.failed_rows):
        return None
    if run.completed_at is not None and mark.requested_at < run.completed_at:
        return None  # made on an earlier run of this operation, not on these failed rows
    return mark


def clear_mark(ref: OperationRef, alias: str) -> None:
    """The retry of ``ref``'s run went through every record: no mark is left on it."""
    if marks_available(alias):
        _marks_of(ref, alias).delete()


def describe(mark: RetryRequest) -> str:
    """Who marked the run and when, in one clause."""
    return (f"its failed rows were marked for retry by {mark.requested_by} at "
            f"{mark.requested_at:%Y-%m-%d %H:%M:%S %Z}")
