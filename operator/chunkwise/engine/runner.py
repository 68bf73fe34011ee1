"""The batch loop.

One batch is one transaction:

0. between batches, while the database's health passes a throttle threshold: wait;
1. ``SET LOCAL`` lock and statement timeouts (where the database has them), and
2. lock and re-read the checkpoint row, in one statement: it is the truth about where we are,
   which is what makes a lost connection safe (the commit landed or it did not);
3. the lock step: select the next rows after the checkpoint ``FOR NO KEY UPDATE``,
   timed, which is the lock wait (a target may read them unlocked instead, while
   nothing contends, and let its writes take the locks: then nothing is waited for);
4. the user's work on exactly that key range;
5. advance the checkpoint; commit.

A batch and its checkpoint commit together, so a crash at any moment can
neither skip nor repeat a batch. The loop is database-neutral: the SQL lives
behind :class:`BatchTarget` and :class:`CheckpointStore`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from chunkwise.contract import ShardState

from .budget import Tally, check_budget
from .errors import (
    DatabaseUnreachable,
    ErrorKind,
    ExitCode,
    Halted,
    LockWaitsExhausted,
    RetriesExhausted,
    classify,
)
from .health import HealthProbe, Throttle, judge, watched
from .pacing import PACE, BatchSizer, CpuPriority, RateLimiter, backoff_seconds
from .settings import Caller, RunSettings, Timeouts, changed_tunables

__all__ = [
    "BatchReport",
    "BatchRunner",
    "BatchTarget",
    "CheckpointState",
    "CheckpointStore",
    "Outcome",
    "Reporter",
    "Retune",
    "RowFailure",
    "Verification",
]

Key = Any  # int, str, UUID: whatever the key column holds; compared by the database only
T = TypeVar("T")

#: seconds between heartbeats while the run waits (paced or throttled) instead of
#: committing batches, whose commits beat otherwise: well inside the 120 s after which
#: chunkwise_status, where it has no runner lock to ask, takes a run for dead
HEARTBEAT_EVERY = 30.0


@dataclass
class CheckpointState:
    """The checkpoint row as read inside the current transaction."""

    last_key: Key | None
    high_water_key: Key | None
    rows_estimated: int
    tally: Tally
    batches: int
    lock_wait_seconds: float
    done: bool
    #: with parallel shards: every shard's checkpoint summed (this one's as last read), for
    #: progress; the loop itself only ever uses this shard's own fields
    run_totals: CheckpointState | None = None


class CheckpointStore(Protocol):
    def start(self) -> CheckpointState:
        """Take the runner lock (or raise AnotherRunnerActive) and create or load the
        checkpoint, planning the run (estimate, high-water key) the first time."""

    def lock(self, settings: Mapping[str, str] | None = None) -> CheckpointState:
        """Inside a transaction: lock the checkpoint row and read it. ``settings`` (the
        target's timeouts and the like, see BatchTarget.batch_settings) hold for the rest of the
        transaction, set in the same statement before the row's lock is waited for: a
        round trip less per batch than setting them on their own."""

    def advance(self, last_key: Key, rows: int, lock_wait: float, tally: Tally) -> None:
        """Inside a transaction: move the checkpoint past ``last_key``."""

    def record_failure(self, key: Key, error: BaseException, tally: Tally) -> None:
        """Inside a transaction: record one failed row and move the checkpoint past it."""

    def finish(self, state: ShardState, message: str = "") -> None:
        """Mark the checkpoint done, halted or interrupted (own transaction)."""

    def verify(self) -> Verification | None:
        """After a completed run: what still matches the todo filter up to the high-water
        mark (None when the operation has no filter to check)."""
        ...

    def reconnected(self) -> None:
        """After a lost connection: take the runner lock again on the new session."""

    def heartbeat(self) -> None:
        """Outside a transaction, while the run waits: say that its runner is alive."""

    def stop(self) -> None:
        """Release the runner lock."""


class BatchTarget(Protocol):
    def transaction(self) -> AbstractContextManager[None]: ...

    def batch_settings(self, timeouts: Timeouts) -> Mapping[str, str]:
        """The session settings (``SET LOCAL``) that put ``timeouts`` on the next batch's
        transaction, and any the target's lock step wants (it puts those back itself);
        empty where the database has none. The checkpoint store's lock() sets them,
        first thing in the transaction."""
        ...

    @property
    def locks_first(self) -> bool:
        """Whether the next lock step locks its rows, so that its time is lock wait (a
        target that lets its writes take the locks reads without waiting for any)."""

    def lock_rows(self, after: Key | None, upto: Key, limit: int) -> tuple[int, Key | None]:
        """The lock step: lock the next ``limit`` rows still to do in (after, upto],
        in key order; return how many and the last one's key."""

    def keys_in(self, after: Key | None, upto: Key) -> Sequence[Key]:
        """The keys of the rows still to do in (after, upto], in order (for isolation)."""

    def apply(self, after: Key | None, upto: Key) -> None:
        """The work on the rows just locked, whose keys lie in (after, upto]."""

    def reconnect(self) -> None: ...

    def lock_holders(self) -> str:
        """Who holds locks on the rows now, for the message when lock waits use up the
        retries ("" when the database cannot tell)."""


@dataclass(frozen=True)
class BatchReport:
    rows: int
    failed_rows: int
    seconds: float
    lock_wait_seconds: float
    batch_size: int
    state: CheckpointState


class Reporter(Protocol):
    def started(self, state: CheckpointState) -> None: ...

    def batch_committed(self, report: BatchReport) -> None: ...

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None: ...

    def throttled(self, reason: str, seconds: float) -> None: ...

    def throttle_changed(self, throttle: Throttle | None) -> None:
        """The database's health holds the run back (again, with a fresh reading), or no
        longer (None)."""
        ...

    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        """New settings took effect between two batches (spec ``generation``; the
        tunables that changed, by spec name, as (old, new))."""
        ...

    def notice(self, message: str) -> None: ...  # said once: a bound lowered a setting

    def finished(self, outcome: Outcome) -> None: ...


class RowFailure(Exception):
    """A batch failed for a reason retrying cannot fix; ``span`` is the (after, upto] key
    range it had locked, if it got that far."""

    def __init__(self, span: tuple[Key | None, Key] | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.span = span
        self.error = error


@dataclass(frozen=True)
class Outcome:
    exit_code: ExitCode
    reason: str  # CamelCase: Completed, Interrupted, FailedRowsExceeded, ...
    message: str
    state: CheckpointState | None = None
    verification: Verification | None = None
    #: a dry run's figures (rows to do, rows/s, lock wait, batch size, ETA) for the status
    plan: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Verification:
    """The check after a completed run: rows up to the high-water mark that still match
    the todo filter (expected: none), split into those recorded as failed (skipped on
    purpose, with their error) and those missed (nobody recorded why)."""

    rows_remaining: int
    failed_remaining: int
    up_to_key: Key | None
    #: of ``rows_remaining``, rows whose key is NULL: no key range holds them, so no batch
    #: can reach them (a key must be NOT NULL; the database let these in all the same)
    null_keys: int = 0

    @property
    def missed(self) -> int:
        return self.rows_remaining - self.failed_remaining

    def describe(self) -> str:
        if not self.rows_remaining:
            return f"no row up to key {self.up_to_key} still matches todo"
        nulls = (f" ({self.null_keys:,} of them with a NULL key, which no batch can reach)"
                 if self.null_keys else "")
        hint = ("; if the code leaves some rows matching todo on purpose, name them with "
                "the operation's done= (see the operation reference)"
                if self.missed > self.null_keys else "")
        return (f"{self.rows_remaining:,} rows up to key {self.up_to_key} still match todo: "
                f"{self.failed_remaining:,} recorded as failed, {self.missed:,} missed{nulls}"
                f"{hint}")


def _all_processed(tally: Tally) -> str:
    """A completed run's word: a row that failed was skipped, not changed, so say it."""
    if not tally.failed_rows:
        return "all rows processed"
    return (f"all rows processed, but {tally.failed_rows:,} of them failed: recorded with "
            "their error, not changed")


#: rows of a run's first failing batch tried alone before it is isolated, to tell an error
#: in the code (every one fails the same way) from errors in the data
PROBE_ROWS = 20


class _RolledBack(Exception):
    """Raised inside a probe's transaction so that it rolls back."""


@dataclass
class _Batch:
    """What one transaction did; filled in as it goes so a failure still has its range."""

    rows: int = 0
    after: Key | None = None
    last_key: Key | None = None
    lock_wait: float = 0.0
    exhausted: bool = False


#: where new settings come from while a run goes on: (spec generation, settings) when
#: there are new ones, else None; asked between batches
Retune = Callable[[], "tuple[int, RunSettings] | None"]


class BatchRunner:
    """Runs one operation's batches until done, halted or asked to stop."""

    def __init__(
        self,
        target: BatchTarget,
        store: CheckpointStore,
        settings: RunSettings,
        reporter: Reporter,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        retune: Retune | None = None,
        health: HealthProbe | None = None,
        caller: Caller = Caller.POD,
    ) -> None:
        """``caller``: who runs it, which decides how messages name a tunable and how to go
        on after a halt."""
        self._target = target
        self._caller = caller
        self._health = health
        self._throttle: Throttle | None = None
        self._next_health_read = float("-inf")
        self._store = store
        self._settings = settings
        self._retune = retune
        self._reporter = reporter
        self._stop = stop or threading.Event()
        self._clock = clock
        self._sizer = BatchSizer(settings.batch)
        self._cpu = CpuPriority()
        self._state: CheckpointState | None = None
        self._batch_had_failure = False
        #: a batch of this run committed a row, or a probe saw the code pass: failures are
        #: the data's from then on (see _refuse_failing_code)
        self._code_proven = False
        self._unreported_lock_wait = 0.0  # seconds waited in lock steps that then failed
        self._last_beat = time.monotonic()  # the waits are real time, whatever the clock

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> Outcome:
        state = self._store.start()
        try:
            return self._run(state)
        finally:
            self._store.stop()
            self._say(self._cpu.restore())

    def _run(self, state: CheckpointState) -> Outcome:
        self._state = state
        self._reporter.started(state)
        if state.done:
            return self._finish(Outcome(ExitCode.DONE, "AlreadyDone", "nothing left to do", state))
        self._say(self._cpu.apply(self._settings.batch.yield_cpu))
        limiter = RateLimiter(self._settings.batch, self._clock)
        capped = self._sizer.plan(state.rows_estimated, self._caller)
        if capped:
            self._reporter.notice(capped)
        try:
            check_budget(state.tally, self._settings.halt_on, self._caller)
            while not self._stop.is_set():
                if self._retune is not None and self._retuned():
                    limiter = RateLimiter(self._settings.batch, self._clock)
                self._wait_while_unhealthy()
                if self._stop.is_set():
                    break
                rows = self._top_level_batch()
                if rows is None:
                    self._store.finish(ShardState.DONE)
                    assert self._state is not None
                    self._state.done = True
                    return self._finish(Outcome(ExitCode.DONE, "Completed",
                                                _all_processed(self._state.tally),
                                                self._state, self._verify()))
                self._last_beat = time.monotonic()  # the batch's commit beat
                delay = limiter.delay_after(rows)
                if delay > 0:
                    self._reporter.throttled(PACE, delay)
                    self._pause(delay)
        except Halted as halt:
            self._store.finish(ShardState.HALTED, f"{halt.reason}: {halt.message}")
            return self._finish(Outcome(ExitCode.HALTED, halt.reason, halt.message, self._state))
        self._store.finish(ShardState.INTERRUPTED, "stopped by signal after a committed batch")
        return self._finish(Outcome(ExitCode.INTERRUPTED, "Interrupted",
                                    "stopped after the current batch committed", self._state))

    def _retuned(self) -> bool:
        """Between batches: take new settings if the source has some (live retuning)."""
        assert self._retune is not None and self._state is not None
        update = self._retune()
        if update is None:
            return False
        generation, settings = update
        changes = changed_tunables(self._settings, settings)
        self._settings = settings
        self._sizer.retune(settings.batch, self._state.rows_estimated)
        self._say(self._cpu.apply(settings.batch.yield_cpu))
        self._reporter.retuned(generation, changes)
        return True

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` between batches (less when stopped), with a heartbeat every
        HEARTBEAT_EVERY s: a paced or throttled run commits nothing for as long as it
        waits, and is alive all the same. Retry backoffs do not beat: their connection
        may be the thing that is lost, and they are short."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            if now - self._last_beat >= HEARTBEAT_EVERY:
                self._beat()
            self._stop.wait(min(deadline, self._last_beat + HEARTBEAT_EVERY) - now)

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        try:
            self._store.heartbeat()
        except Exception as exc:  # the next batch meets a sick database, and retries
            self._reporter.notice(f"could not write the heartbeat: {type(exc).__name__}: "
                                  f"{str(exc).strip()}")

    def _say(self, notice: str | None) -> None:
        if notice:
            self._reporter.notice(notice)

    def _verify(self) -> Verification | None:
        """Best effort: the run is done whatever a read-only count says or fails to say."""
        try:
            return self._store.verify()
        except Exception as exc:
            self._reporter.notice(f"could not verify the run: {type(exc).__name__}: {exc}")
            return None

    def _wait_while_unhealthy(self) -> None:
        """Before a batch: read the database's health (at most every checkInterval) and
        wait while it passes a throttle threshold; past a critical one, halt."""
        while self._health is not None and not self._stop.is_set():
            settings = self._settings
            now = self._clock()
            if not watched(settings) or (self._throttle is None
                                         and now < self._next_health_read):
                self._set_throttle(None)
                return
            self._next_health_read = now + settings.throttle.check_interval
            throttle = self._read_health(settings)
            self._set_throttle(throttle)
            if throttle is None:
                return
            if throttle.critical:
                raise Halted(throttle.condition_reason,
                             f"critical load: {throttle.message}; batches stopped, the "
                             "checkpoint is intact; once the load is down, or with that "
                             f"threshold raised, {self._caller.go_on().removeprefix('then ')}")
            self._pause(settings.throttle.check_interval)
            self._reporter.throttled(throttle.reason, self._clock() - now)
            if self._retune is not None:
                self._retuned()  # a raised threshold frees a throttled run at once

    def _read_health(self, settings: RunSettings) -> Throttle | None:
        assert self._health is not None
        try:
            return judge(self._health.read(settings), settings, self._caller)
        except Halted:
            raise
        except Exception as exc:
            if classify(exc).retryable:  # the next batch meets it too, and retries
                return None
            raise Halted("HealthCheckFailed",
                         f"reading the database's health failed: {type(exc).__name__}: "
                         f"{str(exc).strip()}") from exc

    def _set_throttle(self, throttle: Throttle | None) -> None:
        if throttle is None and self._throttle is None:
            return
        self._throttle = throttle
        self._reporter.throttle_changed(throttle)

    def _finish(self, outcome: Outcome) -> Outcome:
        self._set_throttle(None)
        self._reporter.finished(outcome)
        return outcome

    def _top_level_batch(self) -> int | None:
        """One batch of the current size; isolates bad rows if it has any.

        Returns rows attempted, or None when nothing is left to do."""
        assert self._state is not None
        started = self._clock()
        failed_before = self._state.tally.failed_rows
        self._batch_had_failure = False
        try:
            batch = self._with_retries(lambda: self._commit_batch(None, self._sizer.size,
                                                                  clean=True),
                                       halvable=True)
        except RowFailure as failure:
            if failure.span is None:
                raise RetriesExhausted(
                    f"the batch failed before its rows were locked, so they cannot be "
                    f"isolated: {type(failure.error).__name__}: {failure.error}"
                ) from failure.error
            after, upto = failure.span
            keys = self._with_retries(lambda: self._keys_in(after, upto))
            if not self._code_proven:
                self._refuse_failing_code(after, keys, failure.error)
            self._isolate(keys, failure.error)
            batch = _Batch(rows=len(keys))
        if batch.exhausted:
            return None
        failed = self._state.tally.failed_rows - failed_before
        self._code_proven = self._code_proven or batch.rows > failed
        seconds = self._clock() - started
        if not failed:
            self._sizer.observe(batch.rows, seconds)
        self._reporter.batch_committed(BatchReport(
            rows=batch.rows - failed, failed_rows=failed, seconds=seconds,
            lock_wait_seconds=batch.lock_wait, batch_size=self._sizer.size, state=self._state,
        ))
        check_budget(self._state.tally, self._settings.halt_on, self._caller)
        return batch.rows

    # -- one transaction ----------------------------------------------------------------

    def _commit_batch(self, upto: Key | None, limit: int, *, clean: bool) -> _Batch:
        """Lock, work and advance the checkpoint in one transaction.

        ``upto`` bounds the key range during isolation; ``clean`` says a commit here
        ends a run of failed batches."""
        batch = _Batch()
        try:
            with self._target.transaction():
                state = self._store.lock(self._target.batch_settings(
                    self._settings.timeouts))
                self._state = state
                bound = state.high_water_key if upto is None else upto
                if bound is None:
                    batch.exhausted = True
                    return batch
                timed = self._target.locks_first
                lock_started = self._clock()
                try:
                    batch.after = state.last_key
                    batch.rows, batch.last_key = self._target.lock_rows(state.last_key, bound,
                                                                        limit)
                finally:  # a timed-out lock step is lock wait too: carried to the next commit
                    waited = self._clock() - lock_started if timed else 0.0
                    batch.lock_wait = waited + self._unreported_lock_wait
                if not batch.rows and upto is None:
                    batch.exhausted = True
                    return batch
                if batch.rows:
                    work_started = self._clock()
                    try:
                        self._target.apply(state.last_key, batch.last_key)
                    except Exception as exc:
                        if classify(exc) is ErrorKind.LOCK_TIMEOUT:
                            # the work itself waited for locks until lock_timeout (a target
                            # that lets its work take the row locks): lock wait too
                            batch.lock_wait += self._clock() - work_started
                        raise
                if clean:
                    state.tally.consecutive_failed_batches = 0
                state.tally.rows_processed += batch.rows
                new_last = batch.last_key if batch.rows else upto
                self._store.advance(new_last, batch.rows, batch.lock_wait, state.tally)
                state.last_key = new_last
                state.batches += 1
                state.lock_wait_seconds += batch.lock_wait
            self._unreported_lock_wait = 0.0
        except Exception as exc:
            self._unreported_lock_wait = batch.lock_wait
            if classify(exc) is ErrorKind.ROW_ERROR:
                span = (batch.after, batch.last_key) if batch.rows else None
                raise RowFailure(span, exc) from exc
            raise
        return batch

    def _record_failure(self, key: Key, error: BaseException) -> None:
        with self._target.transaction():
            state = self._store.lock()
            self._state = state
            state.tally.failed_rows += 1
            if not self._batch_had_failure:
                state.tally.consecutive_failed_batches += 1
            self._store.record_failure(key, error, state.tally)
            state.last_key = key
        self._batch_had_failure = True

    def _isolate(self, keys: Sequence[Key], error: BaseException) -> None:
        """Split the failed batch ``keys`` until the failing rows are found; commit the rest."""
        if not keys:
            return  # the failing rows were deleted meanwhile: nothing left to isolate
        if len(keys) == 1:
            self._with_retries(lambda: self._record_failure(keys[0], error))
            assert self._state is not None
            rows_only = Tally(self._state.tally.rows_processed, self._state.tally.failed_rows)
            # stop now, not after the batch
            check_budget(rows_only, self._settings.halt_on, self._caller)
            return
        middle = len(keys) // 2
        for part in (keys[:middle], keys[middle:]):
            if self._stop.is_set():
                return
            try:
                self._with_retries(self._sub_batch(part))
            except RowFailure as failure:
                self._isolate(part, failure.error)

    def _refuse_failing_code(self, after: Key | None, keys: Sequence[Key],
                             error: BaseException) -> None:
        """Before the first batch of a run that committed a row is isolated: if each of
        up to PROBE_ROWS of its rows, spread over the batch and tried alone in a
        transaction that is rolled back, fails the same way (same exception and message),
        the code is wrong, not the data: halt, naming the exception, with nothing recorded,
        rather than record every row of the table as failed. Stops at the first row that
        passes or fails otherwise, so rows that fail for their data cost one probe."""
        if len(keys) < 2:
            return
        step = max(1, len(keys) // PROBE_ROWS)
        probes = list(range(0, len(keys), step))[:PROBE_ROWS]
        if probes[-1] != len(keys) - 1:
            probes[-1] = len(keys) - 1
        same = (type(error), str(error))
        for position in probes:
            found = self._with_retries(functools.partial(
                self._probe, after if position == 0 else keys[position - 1], keys[position]))
            if found is None or (type(found), str(found)) != same:
                self._code_proven = True
                return
        raise Halted("CodeFailsEveryRow", (
            f"the code raised {type(error).__name__}: {str(error).strip()} for every row "
            f"tried alone ({len(probes)} of the first failing batch's {len(keys):,}): an "
            f"error in the code, not in the data, so no row was recorded as failed; fix "
            f"the code, {self._caller.go_on().removeprefix('then ')}"))

    def _probe(self, after: Key | None, key: Key) -> BaseException | None:
        """The work on the one row (after, key], rolled back: the row error it raises."""
        try:
            with self._target.transaction():
                # the batch's timeouts, as every batch sets them: a probed row another
                # session holds must not hold the run
                self._store.lock(self._target.batch_settings(self._settings.timeouts))
                rows, _ = self._target.lock_rows(after, key, 1)
                if rows:
                    self._target.apply(after, key)
                raise _RolledBack
        except _RolledBack:
            return None
        except Exception as exc:
            if classify(exc) is ErrorKind.ROW_ERROR:
                return exc
            raise

    def _keys_in(self, after: Key | None, upto: Key) -> Sequence[Key]:
        with self._target.transaction():
            return list(self._target.keys_in(after, upto))

    def _sub_batch(self, keys: Sequence[Key]) -> Callable[[], _Batch]:
        return lambda: self._commit_batch(keys[-1], len(keys), clean=False)

    # -- retries --------------------------------------------------------------------------

    def _lock_waits_exhausted(self, attempts: int) -> LockWaitsExhausted:
        try:
            holders = self._target.lock_holders()
        except Exception as exc:  # the message is best effort; the stop is not
            holders = f"(could not ask the database who holds them: {exc})"
        return LockWaitsExhausted(
            f"lock waits: all {attempts} attempts of a batch timed out waiting "
            f"{self._settings.timeouts.lock:g}s (timeouts.lock) for row locks; "
            + (f"holding them now: {holders}" if holders else "no holder is left now")
            + "; run again once they are released (the checkpoint is intact)")

    def _with_retries(self, work: Callable[[], T], halvable: bool = False) -> T:
        retry = self._settings.retries
        timeouts_in_a_row = 0
        lost = False
        for attempt in range(1, retry.max_attempts + 1):
            try:
                if lost:  # inside the attempt: a database still down costs an attempt
                    self._target.reconnect()
                    self._store.reconnected()
                    lost = False
                return work()
            except RowFailure:
                raise
            except Exception as exc:
                kind = classify(exc)
                if not kind.retryable:
                    raise RowFailure(None, exc) from exc
                lost = kind is ErrorKind.CONNECTION or kind is ErrorKind.SHUTDOWN
                timeouts_in_a_row = timeouts_in_a_row + 1 if kind.is_timeout else 0
                if halvable and timeouts_in_a_row >= retry.halve_after_timeouts:
                    self._sizer.halve()
                    timeouts_in_a_row = 0
                if attempt == retry.max_attempts:
                    if kind is ErrorKind.LOCK_TIMEOUT:
                        raise self._lock_waits_exhausted(attempt) from exc
                    if lost:
                        raise DatabaseUnreachable(
                            f"database unreachable: all {attempt} attempts of a batch lost "
                            f"or could not open their connection (retries.maxAttempts); last "
                            f"error ({kind.value}): {str(exc).strip()}") from exc
                    raise RetriesExhausted(
                        f"batch failed {attempt} times; last error ({kind.value}): {exc}"
                    ) from exc
                # a serialization failure is a race lost to another transaction on the
                # batch's rows, not a sick database: the first retry goes at once (a target
                # that meets one locks its rows first next time)
                delay = 0.0 if kind is ErrorKind.SERIALIZATION and attempt == 1 \
                    else backoff_seconds(attempt, retry)
                self._reporter.retrying(kind, attempt, delay)
                self._stop.wait(delay)
        raise AssertionError("unreachable")  # pragma: no cover
