"""A plan before the run (``chunkwise_plan``, ``spec.dryRun``): how many rows, how fast,
how long the locks are waited for, which batch size the tuner would pick, and an ETA,
measured with a few real batches inside one transaction that is rolled back.

It writes nothing: no row of the table, no checkpoint, no runner lock.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps
from django.db.models import QuerySet

from chunkwise.engine import BatchSizer, RunSettings, format_duration

from .backends import EXACT_COUNT_LIMIT, backend_for
from .execute import BatchedWork, rows_to_do, target_for
from .keys import Key
from .operation_ref import OperationRef
from .shards import split

__all__ = ["EXACT_COUNT_LIMIT", "Plan", "plan_run", "plan_shards", "shards_summary"]


@dataclass(frozen=True)
class Plan:
    rows: int
    rows_counted: bool  # exact count(*), or the planner's estimate
    sample_batches: int
    sample_rows: int
    rows_per_second: float
    #: seconds, median of the samples; None where the database has no row locks (SQLite)
    lock_wait_per_batch: float | None
    batch_size: int  # what the tuner would use after the samples
    eta_seconds: float | None
    sample_errors: tuple[str, ...] = ()  # batches whose rows failed (a run isolates them)

    def lines(self, title: str) -> list[str]:
        how = "counted" if self.rows_counted else "estimated by the planner"
        eta = format_duration(self.eta_seconds) if self.eta_seconds is not None else "unknown"
        return [
            f"{title}: plan (nothing was written)",
            f"  rows to do         {self.rows:,} ({how})",
            f"  sample batches     {self.sample_batches} ({self.sample_rows:,} rows, rolled "
            "back)",
            f"  rows/s             {self.rows_per_second:,.0f}",
        ] + ([f"  lock wait          {self.lock_wait_per_batch * 1000:.1f} ms per batch "
              "(median)"] if self.lock_wait_per_batch is not None else []) + [
            f"  tuned batch size   {self.batch_size:,}",
            f"  ETA                {eta}",
        ] + ([f"  sample errors      {len(self.sample_errors)} batch(es) failed; the first: "
              f"{self.sample_errors[0]} (a run isolates and records such rows)"]
             if self.sample_errors else [])

    def as_status(self) -> dict[str, Any]:
        return {"rowsToDo": self.rows, "rowsCounted": self.rows_counted,
                "sampleBatches": self.sample_batches, "sampleRows": self.sample_rows,
                "rowsPerSecond": int(self.rows_per_second),
                "lockWaitSecondsPerBatch": None if self.lock_wait_per_batch is None
                else round(self.lock_wait_per_batch, 4),
                "batchSize": self.batch_size,
                "etaSeconds": None if self.eta_seconds is None else int(self.eta_seconds),
                "eta": format_duration(self.eta_seconds, clock=False),
                "sampleErrors": list(self.sample_errors)}


#: the plan of a shard without rows (fewer rows to do than shards)
_NO_ROWS = Plan(rows=0, rows_counted=True, sample_batches=0, sample_rows=0,
                rows_per_second=0.0, lock_wait_per_batch=None, batch_size=0, eta_seconds=0.0)


class _Rollback(Exception):
    """Ends the sample transaction: everything the samples did is undone."""


def plan_shards(operation: BatchedWork, ref: OperationRef, apps: StateApps,
                schema_editor: BaseDatabaseSchemaEditor, settings: RunSettings,
                samples: int = 3, only: int | None = None) -> list[tuple[OperationRef, Plan]]:
    """The plan of each of ``ref``'s shards (``only``: of that one), each over its own key
    range, split as a run started now would split it; one shard's plan is the whole run's."""
    if ref.shard_count == 1:
        return [(ref, plan_run(operation, ref, apps, schema_editor, settings, samples))]
    todo, key_field = rows_to_do(operation, ref, apps, schema_editor.connection.alias)
    _, ranges = split(todo, key_field, ref.shard_count)
    plans = []
    for shard in range(ref.shard_count) if only is None else [only]:
        within = ranges[shard]
        plans.append((dataclasses.replace(ref, shard=shard), _NO_ROWS if within is None else
                      plan_run(operation, ref, apps, schema_editor, settings, samples, within)))
    return plans


def shards_summary(ref: OperationRef, plans: list[Plan], at_once: bool) -> str:
    """One line over every shard's plan: the rows, and the ETA of shards that run at once
    (the slowest one's) or one after another (the sum)."""
    etas = [plan.eta_seconds for plan in plans]
    known = [eta for eta in etas if eta is not None]
    eta = None if len(known) < len(etas) else max(known) if at_once else sum(known)
    how = "they run at once, the slowest decides" if at_once else \
        "they run one after another"
    return (f"{ref.operation_name} {ref.direction} ({ref.shard_count} shards): "
            f"{sum(plan.rows for plan in plans):,} rows to do, ETA "
            f"{format_duration(eta) if eta is not None else 'unknown'} ({how})")


def plan_run(operation: BatchedWork, ref: OperationRef, apps: StateApps,
             schema_editor: BaseDatabaseSchemaEditor, settings: RunSettings,
             samples: int = 3, within: tuple[Key | None, Key] | None = None) -> Plan:
    """The plan of the rows ``ref`` still has to do; ``within``: of those in that key range
    only, (exclusive lower bound or None, inclusive upper bound), a shard's."""
    alias = schema_editor.connection.alias
    todo, key_field = rows_to_do(operation, ref, apps, alias)
    if within is not None:
        lower, upper = within
        todo = todo.filter(**{f"{key_field.name}__lte": upper})
        if lower is not None:
            todo = todo.filter(**{f"{key_field.name}__gt": lower})
    rows, counted = _rows(todo, alias)
    sizer = BatchSizer(settings.batch)
    sizer.plan(rows)
    target = target_for(operation, ref, apps, schema_editor, todo, key_field, lock_first=True)
    top = todo.order_by(f"-{key_field.name}").values_list(key_field.name, flat=True).first()
    timings: list[tuple[int, float, float]] = []  # rows, seconds, lock wait
    errors: list[str] = []
    try:
        with transaction.atomic(using=alias):
            after = None
            for _ in range(samples if top is not None else 0):
                started = time.perf_counter()
                last = None
                try:
                    with transaction.atomic(using=alias):  # a savepoint per sample
                        # its settings in its own savepoint, as a batch's in its own
                        # transaction: one rolled back takes only its own with it (on
                        # PostgreSQL; MySQL's are the session's, put back at the end)
                        target.set_batch_settings(settings.timeouts)
                        count, last = target.lock_rows(after, top, sizer.size)
                        locked = time.perf_counter()
                        if not count:
                            break
                        target.apply(after, last)
                except Exception as exc:  # a row error, a lock timeout: say it, go on
                    errors.append(f"{type(exc).__name__}: {str(exc).strip()[:300]}")
                    if last is None:
                        break
                    after = last
                    continue
                seconds = time.perf_counter() - started
                timings.append((count, seconds, locked - started))
                sizer.observe(count, seconds)
                after = last
            raise _Rollback
    except _Rollback:
        pass
    finally:  # the samples' timeouts, where they are the session's (MySQL), end with them
        backend_for(alias).reset_settings()
    sample_rows = sum(t[0] for t in timings)
    rate = sample_rows / sum(t[1] for t in timings) if timings else 0.0
    return Plan(rows=rows, rows_counted=counted, sample_batches=len(timings),
                sample_rows=sample_rows, rows_per_second=rate,
                lock_wait_per_batch=None if not target.locks_first else
                statistics.median(t[2] for t in timings) if timings else 0.0,
                batch_size=sizer.size,
                eta_seconds=rows / rate if rate > 0 else (0.0 if not rows else None),
                sample_errors=tuple(errors))


def _rows(todo: QuerySet[Any], alias: str) -> tuple[int, bool]:
    """(rows to do, whether counted exactly)."""
    return backend_for(alias).estimate_rows(todo)
