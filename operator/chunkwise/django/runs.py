"""Runs, as the admin lists them: one operation in one direction, its shards folded in.

A run's row is its shard 0: every run has one, since the first shard to start makes all
of a run's checkpoints at once (:meth:`.checkpoints.DjangoCheckpointStore._split`), and
a run of one shard is that row alone. Its totals over the shards are correlated
subqueries on the checkpoints' identity (the unique index's columns), computed for the
rows of the page shown only, so a page costs the same with 10 runs or 10,000; and a run
of one shard, most of them, needs none: its totals are its own columns (PostgreSQL and
SQLite evaluate a CASE's branches only when taken). Grouping the whole table instead
would aggregate every checkpoint for each page, and a filter on a grouped query would
filter shards, not runs.
"""

from __future__ import annotations

from typing import Any

from django.db.models import (
    Aggregate,
    Case,
    F,
    Field,
    IntegerField,
    Max,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import Combinable

from chunkwise.contract import ShardState

from .models import Checkpoint

__all__ = ["IDENTITY", "STATE_URGENCY", "run_of", "runs"]

#: what makes checkpoints one run: every column of their identity but the shard
IDENTITY = ("app_label", "migration", "operation", "direction")

#: a run's state is its most urgent shard's: one halted shard halts the run (its error
#: budget is the run's), one still running keeps it running, and it is done when all are
STATE_URGENCY = (ShardState.HALTED, ShardState.RUNNING, ShardState.INTERRUPTED,
                 ShardState.DEFERRED, ShardState.DONE)


def _shards_of_outer() -> QuerySet[Checkpoint]:
    """The checkpoints of the run whose row the outer query is on."""
    return Checkpoint.objects.filter(**{name: OuterRef(name) for name in IDENTITY})


def _folded(field: str, aggregate: type[Aggregate]) -> Combinable:
    """``aggregate(field)`` over the run's shards; a run of one shard is its own row."""
    over_shards = Subquery(_shards_of_outer().order_by().values(*IDENTITY)
                           .annotate(total=aggregate(field)).values("total")[:1])
    # the column's own field as the output: SQLite returns a subquery's datetime as text,
    # which Django converts only for an expression that says it is one
    column = Checkpoint._meta.get_field(field)
    assert isinstance(column, Field)
    return Case(When(shard_count=1, then=F(field)), default=over_shards, output_field=column)


def _urgency() -> Case:
    return Case(*(When(state=state, then=Value(rank))
                  for rank, state in enumerate(STATE_URGENCY)),
                default=Value(len(STATE_URGENCY)), output_field=IntegerField())


def _folded_state() -> Combinable:
    most_urgent = Subquery(_shards_of_outer().annotate(urgency=_urgency())
                           .order_by("urgency", "shard").values("state")[:1])
    return Case(When(shard_count=1, then=F("state")), default=most_urgent)


def runs(checkpoints: QuerySet[Any]) -> QuerySet[Any]:
    """One row per run (its shard 0), with the run's totals over its shards as
    ``run_state``, ``run_rows``, ``run_estimated``, ``run_failed``, ``run_lock_wait``,
    ``run_heartbeat`` (the latest), ``run_completed`` (the last shard's end),
    ``run_remaining``, ``run_missed`` and ``run_verified`` (verification after a completed
    run: summed, and its latest time)."""
    folded: QuerySet[Any] = checkpoints.filter(shard=0).annotate(
        run_state=_folded_state(),
        run_rows=_folded("rows_processed", Sum),
        run_estimated=_folded("rows_estimated", Sum),
        run_failed=_folded("failed_rows", Sum),
        run_lock_wait=_folded("lock_wait_seconds", Sum),
        run_heartbeat=_folded("heartbeat_at", Max),
        run_completed=_folded("completed_at", Max),
        run_remaining=_folded("rows_remaining", Sum),
        run_missed=_folded("rows_missed", Sum),
        run_verified=_folded("verified_at", Max),
        run_started=_folded("started_at", Min),
    )
    return folded


def run_of(checkpoint: Checkpoint) -> QuerySet[Checkpoint]:
    """Every shard of ``checkpoint``'s run, in shard order."""
    return Checkpoint.objects.using(checkpoint._state.db).filter(
        **{name: getattr(checkpoint, name) for name in IDENTITY}).order_by("shard")
