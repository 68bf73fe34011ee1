"""The engine's checkpoint store, implemented with Django: one row per operation,
direction and shard in the ``chunkwise_checkpoint`` table of the migrated database, so
a batch and its checkpoint commit in one transaction. Also the runner lock."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from django.db import connections, transaction
from django.db.models import Count, Field, Q, QuerySet, Sum
from django.utils import timezone

from chunkwise.contract import ShardState
from chunkwise.engine import (
    AnotherRunnerActive,
    CheckpointState,
    SettingsError,
    Tally,
    Verification,
)

from .backends import backend_for
from .keys import Key, KeyCodec
from .models import Checkpoint, FailedRow
from .operation_ref import OperationRef, default_owner, owner_process_alive
from .shards import split

__all__ = ["STALE_AFTER", "DjangoCheckpointStore", "holder_alive", "runner_alive",
           "runner_lock_name"]

#: where there is no runner lock to ask (SQLite) and the runner is not a process of this
#: host: seconds without a heartbeat after which a "running" checkpoint is taken for one
#: whose runner was killed (SIGKILL, OOM, lost node) without the chance to say so. Longer
#: than a statement timeout plus the longest retry backoff at their defaults (30 s + 30 s);
#: a waiting runner beats every 30 s.
STALE_AFTER = 120.0


def runner_lock_name(ref: OperationRef, purpose: str = "") -> str:
    """The name of the session lock of ``ref``'s runner (or of its ``purpose``)."""
    return f"chunkwise:{ref}" if not purpose else \
        f"chunkwise-{purpose}:{ref.operation_name} {ref.direction}"


def holder_alive(owner: str, heartbeat_at: datetime.datetime | None) -> bool:
    """Without a runner lock to ask: whether the runner that holds a "running" checkpoint
    still runs. A process of this host is asked by its pid; elsewhere the heartbeat's age
    is all there is."""
    alive = owner_process_alive(owner)
    if alive is not None:
        return alive
    return heartbeat_at is not None and \
        (timezone.now() - heartbeat_at).total_seconds() <= STALE_AFTER


def runner_alive(alias: str, ref: OperationRef) -> bool | None:
    """Whether a live session holds ``ref``'s runner lock, which a runner holds from start
    to finish and a dead one's session lets go of at once; a heartbeat's age only guesses
    that. None where there is no such lock (SQLite)."""
    return backend_for(alias).lock_taken(runner_lock_name(ref))


class DjangoCheckpointStore:
    """Checkpoint rows in the ``chunkwise`` tables of the migrated database."""

    def __init__(
        self,
        ref: OperationRef,
        alias: str,
        todo: QuerySet[Any],
        key_field: Field[Any, Any],
        owner: str | None = None,
        has_todo: bool = False,
        done: Q | None = None,
    ) -> None:
        self._ref = ref
        self._has_todo = has_todo
        #: rows that may keep matching todo once the code handled them (the operation's
        #: done=): verification leaves them out
        self._done = done
        self._alias = alias
        self._todo = todo
        self._key = key_field
        self._codec = KeyCodec(key_field)
        self._owner = owner or default_owner()
        self._id: int | None = None
        self._lock_held = False
        self._backend = backend_for(alias)

    @property
    def checkpoint_id(self) -> int:
        assert self._id is not None, "start() first"
        return self._id

    def attach(self, checkpoint_id: int) -> None:
        """Work on the existing checkpoint row ``checkpoint_id`` without starting a run:
        a retry of the run's failed rows verifies it again (verify())."""
        self._id = checkpoint_id

    def _rows(self) -> QuerySet[Checkpoint]:
        return Checkpoint.objects.using(self._alias)

    # -- runner lock ------------------------------------------------------------------

    def _take_runner_lock(self) -> None:
        """A session lock keeps a second runner off this shard (PostgreSQL's advisory
        lock, MySQL's GET_LOCK).

        SQLite has no such lock: a checkpoint that a live runner holds as running (see
        holder_alive) keeps a second one off instead, which would only take turns with it
        for SQLite's one writer and stop on "database is locked". Its single writer and the
        checkpoint re-read in every batch keep batches from repeating all the same."""
        acquired = self._backend.try_lock(runner_lock_name(self._ref))
        if acquired is None:
            held = (self._rows().filter(pk=self.checkpoint_id)
                    .values_list("state", "owner", "heartbeat_at").first())
            if held and held[0] == ShardState.RUNNING and held[1] != self._owner[:255] \
                    and holder_alive(held[1], held[2]):
                raise self._another_runner(held[1], held[2])
            return
        if not acquired:
            holder = (self._rows().filter(pk=self.checkpoint_id)
                      .values_list("owner", "heartbeat_at").first())
            raise self._another_runner(*(holder or ("another runner", None)))
        self._lock_held = True

    def _another_runner(self, who: str, beat: datetime.datetime | None) -> AnotherRunnerActive:
        """What stops a second runner, said after the operation's name; the caller adds
        how to go on (its words differ under migrate)."""
        age = ""
        if beat:
            age = f", last checkpoint {(timezone.now() - beat).total_seconds():.0f}s ago"
        return AnotherRunnerActive(f"already being run by {who}{age}; not starting a second "
                                   "runner (it would wait for the same rows)")

    def reconnected(self) -> None:
        self._lock_held = False
        self._take_runner_lock()

    def stop(self) -> None:
        try:
            self._backend.reset_settings()
        except Exception:  # a lost session had them, and took them with it
            pass
        if self._lock_held:
            try:
                self._backend.unlock(runner_lock_name(self._ref))
            except Exception:  # the lock ends with the session anyway
                pass
            self._lock_held = False

    # -- the store ----------------------------------------------------------------------

    def start(self) -> CheckpointState:
        ref = self._ref
        if self._split() == ShardState.DONE:  # done, split another way: nothing to run
            return CheckpointState(None, None, 0, Tally(), 0, 0.0, done=True)
        with transaction.atomic(using=self._alias):
            row, _ = self._rows().get_or_create(
                app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
                direction=ref.direction, shard=ref.shard,
                defaults={
                    "shard_count": ref.shard_count,
                    "model": self._todo.model._meta.label,
                    "key_field": self._key.name,
                },
            )
        self._id = row.pk
        self._take_runner_lock()
        with transaction.atomic(using=self._alias):
            row = self._rows().select_for_update().get(pk=self.checkpoint_id)
            if not row.planned:
                self._plan(row)
            if row.state != ShardState.DONE:
                row.state = ShardState.RUNNING
                row.message = ""
            row.owner = self._owner[:255]
            row.heartbeat_at = timezone.now()
            row.save()
        return self._with_totals(self._state_of(row))

    # -- shards ---------------------------------------------------------------------------

    def _operation_rows(self) -> QuerySet[Checkpoint]:
        ref = self._ref
        return self._rows().filter(app_label=ref.app_label, migration=ref.migration,
                                   operation=ref.operation, direction=ref.direction)

    def _split(self) -> ShardState | None:
        """Make every shard's checkpoint row, balanced by row count, exactly once: the
        first shard to start does it, under a transaction-scoped advisory lock, and the
        others find the rows. A split is fixed until the operation is done: a run with
        another shard count is refused, or, once every shard is done, told so."""
        ref = self._ref
        with transaction.atomic(using=self._alias), \
                self._backend.serialized(runner_lock_name(self._ref, "split")):
            existing = list(self._operation_rows().select_for_update())
            todo = self._todo
            if ref.shard_count > 1 and len(existing) == 1 and existing[0].batches == 0 \
                    and existing[0].state == ShardState.DEFERRED:
                # planned by a deferring migrate, never run: split it now, within the
                # high-water mark that migrate fixed
                planned_top = existing[0].high_water_key
                existing[0].delete()
                existing = []
                if planned_top is None:
                    todo = todo.none()
                else:
                    todo = todo.filter(**{f"{self._key.name}__lte":
                                          self._codec.load(planned_top)})
            counts = {row.shard_count for row in existing}
            if existing and counts != {ref.shard_count}:
                if all(row.state == ShardState.DONE for row in existing):
                    return ShardState.DONE
                planned = max(counts)
                raise SettingsError(
                    f"parallelism: {ref.operation_name} {ref.direction} was split into "
                    f"{planned} shard(s) when its run was planned and is not done; run it "
                    f"with {planned} (spec.parallelism, --shards), not {ref.shard_count}: a "
                    "split cannot change mid-run")
            if existing or ref.shard_count == 1:
                return None
            sizes, ranges = split(todo, self._key, ref.shard_count)
            for index, bounds in enumerate(ranges):
                lower = None if bounds is None else self._codec.dump(bounds[0])
                Checkpoint.objects.using(self._alias).create(
                    app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
                    direction=ref.direction, shard=index, shard_count=ref.shard_count,
                    model=self._todo.model._meta.label, key_field=self._key.name,
                    lower_key=lower, last_key=lower,
                    high_water_key=None if bounds is None else self._codec.dump(bounds[1]),
                    rows_estimated=sizes[index], planned=True,
                    state=ShardState.DONE if bounds is None else ShardState.RUNNING)
        return None

    def _with_totals(self, state: CheckpointState) -> CheckpointState:
        """``state`` with every shard's checkpoint summed, when the run is sharded."""
        if self._ref.shard_count == 1:
            return state
        totals = self._operation_rows().aggregate(
            rows=Sum("rows_processed"), estimated=Sum("rows_estimated"),
            failed=Sum("failed_rows"), batches=Sum("batches"), wait=Sum("lock_wait_seconds"),
            left=Count("pk", filter=~Q(state=ShardState.DONE)))
        state.run_totals = CheckpointState(
            None, None, int(totals["estimated"] or 0),
            Tally(int(totals["rows"] or 0), int(totals["failed"] or 0)),
            int(totals["batches"] or 0), float(totals["wait"] or 0.0),
            done=not totals["left"])
        return state

    def plan_deferred(self) -> CheckpointState:
        """What a ``migrate`` that defers the operation does: create and plan the
        checkpoint (the row estimate and the high-water mark, fixed now), run no batch.
        A checkpoint a runner has already worked on is only read."""
        ref = self._ref
        with transaction.atomic(using=self._alias):
            row, created = self._rows().select_for_update().get_or_create(
                app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
                direction=ref.direction, shard=ref.shard,
                defaults={"shard_count": ref.shard_count, "model": self._todo.model._meta.label,
                          "key_field": self._key.name, "state": ShardState.DEFERRED})
            if not row.planned:
                self._plan(row)
                row.save()
        self._id = row.pk
        return self._state_of(row)

    def _plan(self, row: Checkpoint) -> None:
        """Fix the key range once: rows inserted later above it are left to the app."""
        todo = self._todo
        if row.lower_key is not None:
            todo = todo.filter(**{f"{self._key.name}__gt": self._codec.load(row.lower_key)})
        if row.high_water_key is None:  # a shard has its upper bound set by whoever split it
            # ORDER BY key DESC LIMIT 1, not MAX(): PostgreSQL has no max(uuid)
            # never NULL: PostgreSQL sorts NULL above every key (the rows whose key is NULL
            # cannot be reached by a range; verify() counts them)
            top = (todo.filter(**{f"{self._key.name}__isnull": False})
                   .order_by(f"-{self._key.name}").values_list(self._key.name, flat=True).first())
            row.high_water_key = self._codec.dump(top)
        else:
            todo = todo.filter(**{f"{self._key.name}__lte": self._codec.load(row.high_water_key)})
        row.rows_estimated = todo.count()
        row.last_key = row.lower_key
        row.planned = True
        if row.high_water_key is None:
            row.state = ShardState.DONE

    # lock() and advance() run once per batch: plain SQL, no queryset compilation
    _STATE_COLUMNS = ("last_key", "high_water_key", "rows_estimated", "rows_processed",
                      "failed_rows", "consecutive_failed_batches", "batches",
                      "lock_wait_seconds", "state")

    def lock(self, settings: Mapping[str, str] | None = None) -> CheckpointState:
        table = connections[self._alias].ops.quote_name(Checkpoint._meta.db_table)
        found = self._backend.lock_checkpoint(table, self._STATE_COLUMNS, self.checkpoint_id,
                                              settings or {})
        values = dict(zip(self._STATE_COLUMNS, found, strict=True))
        return self._with_totals(self._state_of(Checkpoint(**values)))

    def advance(self, last_key: Key, rows: int, lock_wait: float, tally: Tally) -> None:
        connection = connections[self._alias]
        table = connection.ops.quote_name(Checkpoint._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET last_key = %s, rows_processed = %s, failed_rows = %s, "
                "consecutive_failed_batches = %s, batches = batches + 1, "
                "lock_wait_seconds = lock_wait_seconds + %s, heartbeat_at = %s WHERE id = %s",
                [self._codec.dump(last_key), tally.rows_processed, tally.failed_rows,
                 tally.consecutive_failed_batches, lock_wait, self._now(), self.checkpoint_id],
            )

    def heartbeat(self) -> None:
        connection = connections[self._alias]
        table = connection.ops.quote_name(Checkpoint._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET heartbeat_at = %s WHERE id = %s",
                           [self._now(), self.checkpoint_id])

    def _now(self) -> Any:
        return connections[self._alias].ops.adapt_datetimefield_value(timezone.now())

    def record_failure(self, key: Key, error: BaseException, tally: Tally) -> None:
        FailedRow.objects.using(self._alias).create(
            checkpoint_id=self.checkpoint_id,
            key=self._codec.dump(key) or "",
            error_class=type(error).__name__[:200],
            message=str(error)[:4000],
        )
        self._rows().filter(pk=self.checkpoint_id).update(
            last_key=self._codec.dump(key),
            failed_rows=tally.failed_rows,
            consecutive_failed_batches=tally.consecutive_failed_batches,
            heartbeat_at=timezone.now(),  # not Now(): see finish()
        )

    def finish(self, state: ShardState, message: str = "") -> None:
        # the batches' timeouts are the batches': not for the verification's count
        self._backend.reset_settings()
        with transaction.atomic(using=self._alias):
            # the runner's clock in UTC, as the start (auto_now_add) and the heartbeats of
            # the batches take it: Django's Now() is CURRENT_TIMESTAMP on MySQL and
            # MariaDB, the server's local time, where Django keeps times in UTC
            now = timezone.now()
            self._rows().filter(pk=self.checkpoint_id).update(
                state=state, message=message[:4000], heartbeat_at=now,
                completed_at=now if state == ShardState.DONE else None,
            )

    def verify(self) -> Verification | None:
        """Rows of this shard's range (up to the high-water mark) that still match the
        todo filter, and which of them were recorded as failed; kept on the checkpoint."""
        if not self._has_todo:
            return None
        row = self._rows().get(pk=self.checkpoint_id)
        name = self._key.name
        todo = self._todo if self._done is None else self._todo.exclude(self._done)
        # rows whose key is NULL match no range, so no batch reached them: counted by the
        # first shard (whose range has no lower bound), so that a run is never reported
        # verified while rows still match todo
        null_keys = (todo.filter(**{f"{name}__isnull": True}).count()
                     if row.lower_key is None else 0)
        if row.high_water_key is None:
            result = Verification(null_keys, 0, None, null_keys)
            self._rows().filter(pk=row.pk).update(rows_remaining=null_keys,
                                                  rows_missed=null_keys, verified_at=timezone.now())
            return result
        remaining = todo.filter(**{f"{name}__lte": self._codec.load(row.high_water_key)})
        if row.lower_key is not None:
            remaining = remaining.filter(**{f"{name}__gt": self._codec.load(row.lower_key)})
        count = remaining.count() + null_keys
        failed = 0
        if count:
            keys = [self._codec.load(key) for key in FailedRow.objects.using(self._alias)
                    .filter(checkpoint_id=row.pk).values_list("key", flat=True)]
            for start in range(0, len(keys), 1000):  # bounded IN lists
                failed += remaining.filter(**{f"{name}__in": keys[start:start + 1000]}).count()
        result = Verification(count, failed, self._codec.load(row.high_water_key), null_keys)
        self._rows().filter(pk=row.pk).update(rows_remaining=count, rows_missed=result.missed,
                                              verified_at=timezone.now())
        return result

    def _state_of(self, row: Checkpoint) -> CheckpointState:
        return CheckpointState(
            last_key=self._codec.load(row.last_key),
            high_water_key=self._codec.load(row.high_water_key),
            rows_estimated=row.rows_estimated,
            tally=Tally(row.rows_processed, row.failed_rows, row.consecutive_failed_batches),
            batches=row.batches,
            lock_wait_seconds=row.lock_wait_seconds,
            done=row.state == ShardState.DONE,
        )
