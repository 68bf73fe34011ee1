"""Retry the rows a run recorded as failed, once the code (or the data) is fixed:
``manage.py chunkwise_run APP MIGRATION --retry-failed``, and ``spec.retryFailed`` in a
DataMigration; a run marked for retry in the admin is retried by the next plain
``chunkwise_run`` of it by hand (:mod:`.retry_marks`), and any retry that goes through
every record removes the mark.

The retry runs the operation's own code again, through the engine's batch loop, on the
rows recorded as failed for the operation in one direction (every shard): the set-based
code on a queryset of exactly those rows, or the per-row transform with the same
write-back. Each batch is one transaction that does the work and deletes the records of
the rows it did, and moves their checkpoint's counts (``failed_rows`` down,
``rows_processed`` up), so that a retry killed at any moment neither repeats a row nor
loses one: the next retry finds exactly the records still to do. A row whose code fails
again is isolated as in a run and stays recorded, with the new error and time. A record
whose row no longer matches ``todo`` (or is gone) is dropped without running the code.

Only a run that is done is retried: a DataMigration would otherwise end ``Succeeded``
with rows of the run still to do, and the error budget of a halted run counts its failed
rows, which the retry changes under it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TextIO

from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps
from django.db.models import Count, F, Field, Max, Q, QuerySet, Sum
from django.utils import timezone

from chunkwise.contract import RETRIED_FAILED_ROWS, Direction, ExitCode, ShardState
from chunkwise.engine import (
    AnotherRunnerActive,
    BatchReport,
    BatchRunner,
    Caller,
    CheckpointState,
    ErrorKind,
    Outcome,
    Reporter,
    RetriesExhausted,
    RunSettings,
    Tally,
    Throttle,
    Timeouts,
    Verification,
)

from .backends import backend_for
from .checkpoints import DjangoCheckpointStore, runner_lock_name
from .execute import BatchedWork, _live_retune, rows_to_do, stop_on_signals, target_for
from .keys import Key, KeyCodec
from .models import Checkpoint, FailedRow
from .operation_ref import OperationRef
from .progress import ProgressBar
from .retry_marks import clear_mark
from .target import DjangoBatchTarget

__all__ = ["RETRY_MAX_BATCH", "FailedRowRetry", "RetryCounts", "RetryRefused", "retold",
           "retry_failed", "switch"]

#: the largest retry batch: its keys are bound one parameter each (``key IN (...)``), well
#: under SQLite's 32,766 bound variables and PostgreSQL's 65,535
RETRY_MAX_BATCH = 10_000


class RetryRefused(Exception):
    """The retry cannot start (nothing recorded, the run not done): a usage error, said
    in one line before anything runs."""


@dataclasses.dataclass(frozen=True)
class RetryCounts:
    succeeded: int = 0  #: the code ran and committed: no longer recorded
    failed_again: int = 0  #: the code failed again: still recorded, with the new error
    dropped: int = 0  #: no longer matched todo (or gone): no longer recorded, code not run

    @property
    def retried(self) -> int:
        return self.succeeded + self.failed_again

    def describe(self) -> str:
        return (f"retried {self.retried:,}, succeeded {self.succeeded:,}, failed again "
                f"{self.failed_again:,}, dropped {self.dropped:,} (no longer matched todo)")


@dataclasses.dataclass(frozen=True)
class _Pass:
    """Where the retry pass has got to: the engine's checkpoint of it, kept in memory."""

    cursor: int | None = None  #: every record up to this id is done (or failed again)
    tally: Tally = dataclasses.field(default_factory=Tally)
    batches: int = 0
    lock_wait: float = 0.0
    counts: RetryCounts = RetryCounts()


class FailedRowRetry:
    """One pass over the failed rows recorded for an operation in one direction, over
    every shard: the engine's BatchTarget and its CheckpointStore at once.

    The keys it pages by are the FailedRow records' ids, in order. The checkpoint of the
    pass is kept in memory: the FailedRow table is the durable part, since a batch's
    transaction deletes the records of the rows it did together with their changes. A
    pass that dies is taken up by the next from the records that are left, and a row
    that failed again is tried once more there (its record stays; no change of it ever
    committed). What the pass did becomes its state only once the transaction commits
    (``on_commit``), so a batch that rolls back and is retried counts once."""

    def __init__(self, ref: OperationRef, alias: str, checkpoints: Sequence[Checkpoint],
                 data: DjangoBatchTarget, todo: QuerySet[Any], key_field: Field[Any, Any],
                 has_todo: bool, done: Q | None = None) -> None:
        self._ref = ref
        self._alias = alias
        self._checkpoints = list(checkpoints)
        self._ids = [checkpoint.pk for checkpoint in checkpoints]
        self._data = data
        self._todo = todo
        self._key = key_field
        self._codec = KeyCodec(key_field)
        self._has_todo = has_todo
        self._done = done  # the operation's done=: rows verification leaves out
        self._backend = backend_for(alias)
        self._locks: list[str] = []
        self._committed = _Pass()
        self._staged: _Pass | None = None
        self._high_water: int | None = None
        self._estimated = 0
        #: what the open transaction's lock step took: (record id, checkpoint id, key)
        #: of each record, and the keys of those whose rows still match todo
        self._records: list[tuple[int, int, Key | None]] = []
        self._matched: list[Key] = []

    @property
    def counts(self) -> RetryCounts:
        """What the committed batches did."""
        return self._committed.counts

    def _shard_refs(self) -> list[OperationRef]:
        return [OperationRef(self._ref.app_label, self._ref.migration, self._ref.operation,
                             self._ref.direction, shard=checkpoint.shard,
                             shard_count=checkpoint.shard_count)
                for checkpoint in self._checkpoints]

    def _records_of_run(self) -> QuerySet[FailedRow]:
        return FailedRow.objects.using(self._alias).filter(checkpoint_id__in=self._ids)

    # -- CheckpointStore ---------------------------------------------------------------

    def start(self) -> CheckpointState:
        """Take every shard's runner lock, then fix the pass's range: the records there
        are now (a run cannot add any: it is done, and its runner lock is ours)."""
        self._take_runner_locks()
        found = self._records_of_run().aggregate(count=Count("pk"), top=Max("pk"))
        self._estimated, self._high_water = int(found["count"]), found["top"]
        return self._state(self._run_totals())

    def _take_runner_locks(self) -> None:
        """The session lock of every shard's runner, so no runner and no other retry works
        on the operation meanwhile (SQLite has none: there its single writer makes the
        batches of two processes take turns, and each batch reads the records that are
        left after it has the write lock)."""
        for shard in self._shard_refs():
            key = runner_lock_name(shard)
            acquired = self._backend.try_lock(key)
            if acquired is None:
                return
            if not acquired:
                self.stop()
                raise AnotherRunnerActive(
                    f"{shard} is being run, or its failed rows retried, by another "
                    "process now (it holds the runner lock); not retrying meanwhile. "
                    "Wait for it to finish, or stop it.")
            self._locks.append(key)

    def reconnected(self) -> None:
        self._locks = []  # they went with the lost session
        self._take_runner_locks()

    def stop(self) -> None:
        try:
            self._backend.reset_settings()
        except Exception:  # a lost session had them, and took them with it
            pass
        try:
            for key in self._locks:
                self._backend.unlock(key)
        except Exception:  # the locks end with the session anyway
            pass
        self._locks = []

    def lock(self, settings: Mapping[str, str] | None = None) -> CheckpointState:
        """Inside the batch's transaction: its timeouts, then every shard's checkpoint row
        locked (on SQLite: the database's write lock, taken first as a run's batch does),
        so the records read next are the ones left by whoever wrote last."""
        table = connections[self._alias].ops.quote_name(Checkpoint._meta.db_table)
        self._backend.lock_checkpoints(table, self._ids, settings or {})
        self._records, self._matched, self._staged = [], [], None
        return self._state(self._run_totals())

    def advance(self, last_key: Key, rows: int, lock_wait: float, tally: Tally) -> None:
        """Inside the batch's transaction, after the work: the records of the rows it did
        (and of those that left todo) are deleted, and their checkpoints' counts moved."""
        matched = set(self._matched)
        per_checkpoint: dict[int, list[int]] = {}  # checkpoint -> [records, succeeded]
        succeeded = 0
        for _, checkpoint, key in self._records:
            done = per_checkpoint.setdefault(checkpoint, [0, 0])
            done[0] += 1
            if key is not None and key in matched:
                done[1] += 1
                succeeded += 1
        if self._records:
            self._records_of_run().filter(pk__in=[pk for pk, _, _ in self._records]).delete()
        for checkpoint, (records, rows_done) in per_checkpoint.items():
            Checkpoint.objects.using(self._alias).filter(pk=checkpoint).update(
                failed_rows=F("failed_rows") - records,
                rows_processed=F("rows_processed") + rows_done)
        before = self._committed
        counts = dataclasses.replace(before.counts,
                                     succeeded=before.counts.succeeded + succeeded,
                                     dropped=before.counts.dropped + len(self._records)
                                     - succeeded)
        self._stage(dataclasses.replace(
            before, cursor=last_key, tally=dataclasses.replace(tally),
            batches=before.batches + 1, lock_wait=before.lock_wait + lock_wait,
            counts=counts))

    def record_failure(self, key: Key, error: BaseException, tally: Tally) -> None:
        """Inside a transaction of its own: the row of record ``key`` failed again; its
        record says so, with the new error and time, and stays."""
        self._records_of_run().filter(pk=key).update(
            error_class=type(error).__name__[:200], message=str(error)[:4000],
            created_at=timezone.now())  # not Now(): see checkpoints.py finish()
        before = self._committed
        self._stage(dataclasses.replace(
            before, cursor=key, tally=dataclasses.replace(tally),
            counts=dataclasses.replace(before.counts,
                                       failed_again=before.counts.failed_again + 1)))

    def _stage(self, after: _Pass) -> None:
        """``after`` is the pass's state once the open transaction commits."""
        if self._staged is None:
            transaction.on_commit(self._commit, using=self._alias)
        self._staged = after

    def _commit(self) -> None:
        if self._staged is not None:
            self._committed, self._staged = self._staged, None

    def finish(self, state: ShardState, message: str = "") -> None:
        """Nothing to write: the run's checkpoints keep their state (done), and a pass
        that stopped early leaves its records to the next. The batches' timeouts are
        theirs, not the verification's."""
        self._backend.reset_settings()

    def heartbeat(self) -> None:
        """Nothing to beat: the retry holds no checkpoint of its own."""

    def verify(self) -> Verification | None:
        """After the pass: each shard's check (rows up to its high-water mark still
        matching todo) made again and kept on its checkpoint, summed."""
        if not self._has_todo:
            return None
        found = [self._shard_store(shard, checkpoint).verify()
                 for shard, checkpoint in zip(self._shard_refs(), self._checkpoints,
                                              strict=True)]
        checks = [check for check in found if check is not None]
        if not checks:
            return None
        return Verification(sum(c.rows_remaining for c in checks),
                            sum(c.failed_remaining for c in checks), checks[-1].up_to_key)

    def _shard_store(self, shard: OperationRef, checkpoint: Checkpoint) -> DjangoCheckpointStore:
        store = DjangoCheckpointStore(shard, self._alias, self._todo, self._key, has_todo=True,
                                      done=self._done)
        store.attach(checkpoint.pk)
        return store

    def _state(self, totals: CheckpointState) -> CheckpointState:
        """The pass's checkpoint as committed, each time a copy (the engine changes it in
        the transaction, which may roll back), with the run's totals for the reports."""
        now = self._committed
        return CheckpointState(
            last_key=now.cursor, high_water_key=self._high_water,
            rows_estimated=self._estimated, tally=dataclasses.replace(now.tally),
            batches=now.batches, lock_wait_seconds=now.lock_wait, done=False,
            run_totals=totals)

    def _run_totals(self) -> CheckpointState:
        """The operation's checkpoints summed, as the run's reports show them: what the
        progress bar and the DataMigration status show during and after the retry (its
        failed rows going down, its rows processed up)."""
        rows = Checkpoint.objects.using(self._alias).filter(pk__in=self._ids)
        totals = rows.aggregate(
            rows=Sum("rows_processed"), estimated=Sum("rows_estimated"),
            failed=Sum("failed_rows"), batches=Sum("batches"), wait=Sum("lock_wait_seconds"),
            left=Count("pk", filter=~Q(state=ShardState.DONE)))
        last_key = high_water = None
        if len(self._ids) == 1:  # one shard: its own keys; a sum of shards has none
            last_key, high_water = (self._codec.load(text) for text in
                                    rows.values_list("last_key", "high_water_key").get())
        return CheckpointState(
            last_key, high_water, int(totals["estimated"] or 0),
            Tally(int(totals["rows"] or 0), int(totals["failed"] or 0)),
            int(totals["batches"] or 0), float(totals["wait"] or 0.0), done=not totals["left"])

    # -- BatchTarget ---------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        return transaction.atomic(using=self._alias)

    def batch_settings(self, timeouts: Timeouts) -> Mapping[str, str]:
        return self._data.batch_settings(timeouts)

    @property
    def locks_first(self) -> bool:
        return self._backend.row_locks

    def lock_rows(self, after: Key | None, upto: Key, limit: int) -> tuple[int, Key | None]:
        """The next ``limit`` records after ``after`` up to ``upto``, and their rows
        that still match todo, locked (and read, for a transform)."""
        records = self._records_of_run().filter(pk__lte=upto).order_by("pk")
        if after is not None:
            records = records.filter(pk__gt=after)
        self._records = [(pk, checkpoint, self._load(text)) for pk, checkpoint, text
                         in records.values_list("pk", "checkpoint_id", "key")[:limit]]
        if not self._records:
            self._matched = []
            return 0, None
        keys = [key for _, _, key in self._records if key is not None]
        self._matched = self._data.lock_keys(keys) if keys else []
        return len(self._records), self._records[-1][0]

    def _load(self, text: str) -> Key | None:
        """A recorded key, typed; None for one that no row of the key's type can have."""
        try:
            return self._codec.load(text)
        except (ValidationError, ValueError, TypeError):
            return None

    def keys_in(self, after: Key | None, upto: Key) -> Sequence[Key]:
        records = self._records_of_run().filter(pk__lte=upto).order_by("pk")
        if after is not None:
            records = records.filter(pk__gt=after)
        return list(records.values_list("pk", flat=True))

    def apply(self, after: Key | None, upto: Key) -> None:
        if self._matched:
            self._data.apply_keys(self._matched)

    def reconnect(self) -> None:
        self._data.reconnect()

    def lock_holders(self) -> str:
        return self._data.lock_holders()


class _RetryReports:
    """Hands the engine's reports on, in the run's terms: the state is the operation's
    totals (the pass's own checkpoint pages by record ids, which mean nothing to a
    reader), and the outcome says what the retry did."""

    def __init__(self, reporter: Reporter, retry: FailedRowRetry, caller: Caller) -> None:
        self._reporter = reporter
        self._retry = retry
        self._caller = caller

    @staticmethod
    def _run(state: CheckpointState | None) -> CheckpointState | None:
        return None if state is None else (state.run_totals or state)

    def started(self, state: CheckpointState) -> None:
        totals = self._run(state)
        assert totals is not None
        # not "resuming after key ...": the run is done, the retry starts over its records
        self._reporter.started(dataclasses.replace(totals, last_key=None))

    def batch_committed(self, report: BatchReport) -> None:
        totals = self._run(report.state)
        assert totals is not None
        self._reporter.batch_committed(dataclasses.replace(report, state=totals))

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None:
        self._reporter.retrying(kind, attempt, delay)

    def throttled(self, reason: str, seconds: float) -> None:
        self._reporter.throttled(reason, seconds)

    def throttle_changed(self, throttle: Throttle | None) -> None:
        self._reporter.throttle_changed(throttle)

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        self._reporter.retuned(generation, changes)

    def notice(self, message: str) -> None:
        self._reporter.notice(message)

    def finished(self, outcome: Outcome) -> None:
        self._reporter.finished(retold(outcome, self._retry.counts, self._caller))


def switch(caller: Caller) -> str:
    """The name ``caller``'s user asks for a retry by."""
    return "spec.retryFailed" if caller is Caller.POD else "--retry-failed"


def retold(outcome: Outcome, counts: RetryCounts, caller: Caller) -> Outcome:
    """The engine's outcome of a retry pass, as the retry's: done is
    ``FailedRowsRetried`` with the summary; a halt or a stop keeps its reason and adds
    what was done until then, and how to go on: a retry again, where the engine's words
    say a run again (the run is done). The state is the operation's totals."""
    totals = (outcome.state.run_totals or outcome.state) if outcome.state else None
    if outcome.exit_code == ExitCode.BUSY:  # nothing was done: the words are the runner's
        return dataclasses.replace(outcome, state=totals)
    left = "" if totals is None else (f"; {totals.tally.failed_rows:,} row"
                                      f"{'' if totals.tally.failed_rows == 1 else 's'} "
                                      "still recorded as failed")
    if outcome.exit_code == ExitCode.DONE:
        return dataclasses.replace(outcome, reason=RETRIED_FAILED_ROWS,
                                   message=counts.describe() + left, state=totals)
    go_on = caller.go_on()
    again = ("a changed spec starts a new retry while spec.retryFailed is true"
             if caller is Caller.POD else "then retry again (--retry-failed)")
    why = outcome.message.replace(go_on, again).replace(go_on.removeprefix("then "),
                                                        again.removeprefix("then "))
    if outcome.exit_code != ExitCode.HALTED and caller is not Caller.POD:
        why = f"{why}; {again}"  # in a pod, the Job runs a stopped retry's pod again
    return dataclasses.replace(outcome, state=totals,
                               message=f"in this retry, {why}; so far {counts.describe()}{left}")


def _for_retry(settings: RunSettings) -> RunSettings:
    """The run's settings as a retry uses them: batches of at most RETRY_MAX_BATCH keys,
    and no cap by batch.maxLockedFraction, which is a share of the table's rows to do
    while a retry's batch locks a few rows scattered over it (SQLite has none anyway)."""
    batch = settings.batch
    top = min(batch.max_size, RETRY_MAX_BATCH)
    return dataclasses.replace(settings, batch=dataclasses.replace(
        batch, max_size=top, size=min(batch.size, top), min_size=min(batch.min_size, top),
        max_locked_fraction=0.0))


def retry_failed(
    operation: BatchedWork,
    ref: OperationRef,
    apps: StateApps,
    schema_editor: BaseDatabaseSchemaEditor,
    *,
    settings: RunSettings,
    caller: Caller,
    reporter: Reporter | None = None,
    stream: TextIO,
    flags: Mapping[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> Outcome:
    """Retry the rows recorded as failed for ``ref``'s operation and direction, on every
    shard, with the operation's code as it is now; ``caller`` runs it (chunkwise_run by
    hand, or in a DataMigration's pod). Raises RetryRefused before anything runs when
    nothing is recorded or the run is not done."""
    knob = switch(caller)
    alias = schema_editor.connection.alias
    todo, key_field = rows_to_do(operation, ref, apps, alias)
    checkpoints = list(Checkpoint.objects.using(alias).filter(
        app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
        direction=ref.direction).order_by("shard"))
    recorded = FailedRow.objects.using(alias).filter(checkpoint__in=checkpoints).count()
    if not recorded and caller is Caller.POD and checkpoints and \
            all(checkpoint.state == ShardState.DONE for checkpoint in checkpoints):
        # a retry pod that the Job ran again after its last commit, or a new image while
        # retryFailed stays true: the retry is done, not misconfigured (Succeeded, not Failed)
        done = Outcome(ExitCode.DONE, RETRIED_FAILED_ROWS,
                       "nothing left to retry: no failed row is recorded")
        stream.write(f"{ref} retry: done ({done.reason}): {done.message}\n")
        if reporter is not None:
            reporter.finished(done)  # the DataMigration's status says it too
        clear_mark(ref, alias)
        return done
    if not recorded:
        raise RetryRefused(f"{knob}: {ref} has no failed rows recorded, so there is "
                           "nothing to retry")
    not_done = [checkpoint for checkpoint in checkpoints if checkpoint.state != ShardState.DONE]
    if not_done:
        states = ", ".join(sorted({checkpoint.state for checkpoint in not_done}))
        if caller is Caller.POD:
            finish = ("set spec.retryFailed to false, and the changed spec starts a new run "
                      "from the checkpoint; once it has succeeded, set it to true again")
        else:
            backward = " --direction backward" if ref.direction == Direction.BACKWARD else ""
            finish = (f"run chunkwise_run {ref.app_label} {ref.migration}{backward} to the end "
                      "first (raising the threshold it halted on, if it halted), then retry")
        raise RetryRefused(
            f"{knob}: {ref} is not done ({states}); its {recorded:,} failed rows are retried "
            f"once every row of the run has been through it: {finish}")
    label = todo.model._meta.label
    for checkpoint in checkpoints:
        if (checkpoint.model, checkpoint.key_field) != (label, key_field.name):
            raise RetryRefused(
                f"{knob}: {ref}'s failed rows were recorded by key {checkpoint.model}."
                f"{checkpoint.key_field}, and the operation now pages {label} by "
                f"{key_field.name}: the recorded keys name other rows")
    direction_todo = operation.todo if ref.direction == Direction.FORWARD \
        else operation.reverse_todo
    data = target_for(operation, ref, apps, schema_editor, todo, key_field, lock_first=True)
    retry = FailedRowRetry(ref, alias, checkpoints, data, todo, key_field,
                           has_todo=direction_todo is not None,
                           done=operation.done if ref.direction == Direction.FORWARD else None)
    backend = backend_for(alias)
    title = f"{ref} retry"
    reports = _RetryReports(reporter or ProgressBar(title, stream,
                                                    lock_waits=backend.row_locks),
                            retry, caller)
    live = _live_retune(operation.base_settings(), flags, ref, backend, reports, stream, 1,
                        caller)

    def retune() -> tuple[int, RunSettings] | None:
        update = live() if live is not None else None
        return None if update is None else (update[0], _for_retry(update[1]))

    stream.write(f"{title}: {recorded:,} failed row{'' if recorded == 1 else 's'} recorded "
                 f"over {len(checkpoints)} shard{'' if len(checkpoints) == 1 else 's'}; "
                 "running the operation's code on them again\n")
    stop = stop or threading.Event()
    runner = BatchRunner(retry, retry, _for_retry(settings), reports, stop,
                         retune=retune if live is not None else None, caller=caller)
    with stop_on_signals(stop, stream):
        try:
            outcome = runner.run()
        except (AnotherRunnerActive, RetriesExhausted) as exc:
            outcome = retold(Outcome(exc.exit_code, type(exc).__name__, str(exc)),
                             retry.counts, caller)
            stream.write(f"{title}: {outcome.message}\n")
    if outcome.exit_code == ExitCode.DONE:  # every record went through: the mark is served
        clear_mark(ref, alias)
    return outcome
