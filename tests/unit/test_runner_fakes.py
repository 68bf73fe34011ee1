"""The batch loop against an in-memory table: fast checks of the loop's logic.
The same behaviours are tested on a real PostgreSQL in tests/django/."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from chunkwise.engine import (
    BatchReport,
    BatchRunner,
    BatchSettings,
    CheckpointState,
    ErrorKind,
    ExitCode,
    HaltThresholds,
    Outcome,
    RetrySettings,
    RunSettings,
    Tally,
    Throttle,
    Timeouts,
    Verification,
)


class LockTimeout(Exception):
    sqlstate = "55P03"


class Conflict(Exception):
    sqlstate = "40001"


class Rollback(Exception):
    pass


@dataclass
class Memory:
    """A table of key -> counter and a checkpoint, with transactions by copy."""

    rows: dict[int, int]
    bad: set[int] = field(default_factory=set)
    #: the message every bad row raises; None: one of its own ("bad row 5")
    same_error: str | None = None
    timeouts_left: int = 0
    conflicts_left: int = 0
    locks_first: bool = True
    checkpoint: dict[str, Any] = field(default_factory=lambda: {
        "last_key": None, "tally": Tally(), "batches": 0, "state": "running"})
    failures: list[int] = field(default_factory=list)
    lock_limits: list[int] = field(default_factory=list)
    verification: Verification | None = None
    heartbeats: int = 0
    #: how many transactions set the batch's timeouts (store.lock with settings), and that
    #: count at each lock step: every lock step must follow its transaction's setting
    timeouts_set: int = 0
    rows_locked_under_timeouts: list[int] = field(default_factory=list)


class FakeTarget:
    def __init__(self, memory: Memory) -> None:
        self.m = memory
        self._locked: list[int] = []
        self._work: dict[int, int] | None = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        rows, checkpoint = dict(self.m.rows), dict(self.m.checkpoint)
        checkpoint["tally"] = Tally(**vars(self.m.checkpoint["tally"]))
        failures = list(self.m.failures)
        try:
            yield
        except BaseException:
            self.m.rows, self.m.checkpoint, self.m.failures = rows, checkpoint, failures
            raise

    def batch_settings(self, timeouts: Timeouts) -> dict[str, str]:
        return {}

    @property
    def locks_first(self) -> bool:
        return self.m.locks_first

    def lock_rows(self, after: Any, upto: Any, limit: int) -> tuple[int, Any]:
        self.m.lock_limits.append(limit)
        self.m.rows_locked_under_timeouts.append(self.m.timeouts_set)
        if self.m.timeouts_left:
            self.m.timeouts_left -= 1
            raise LockTimeout("canceling statement due to lock timeout")
        self._locked = self._between(after, upto)[:limit]
        return len(self._locked), (self._locked[-1] if self._locked else None)

    def keys_in(self, after: Any, upto: Any) -> Sequence[Any]:
        return self._between(after, upto)

    def _between(self, after: Any, upto: Any) -> list[Any]:
        return sorted(k for k in self.m.rows if (after is None or k > after) and k <= upto)

    def apply(self, after: Any, upto: Any) -> None:
        if self.m.conflicts_left:
            self.m.conflicts_left -= 1
            raise Conflict("could not serialize access due to concurrent update")
        for key in self._locked:
            if key in self.m.bad:
                raise ValueError(self.m.same_error or f"bad row {key}")
            self.m.rows[key] += 1

    def reconnect(self) -> None:
        pass

    def lock_holders(self) -> str:
        return "pid 42 (application_name 'billing') has held locks on items for 90s"


class FakeStore:
    def __init__(self, memory: Memory) -> None:
        self.m = memory

    def _state(self) -> CheckpointState:
        c = self.m.checkpoint
        return CheckpointState(c["last_key"], max(self.m.rows, default=None), len(self.m.rows),
                               Tally(**vars(c["tally"])), c["batches"], 0.0,
                               c["state"] == "done")

    def start(self) -> CheckpointState:
        return self._state()

    def lock(self, settings: Mapping[str, str] | None = None) -> CheckpointState:
        self.m.timeouts_set += 1 if settings is not None else 0
        return self._state()

    def advance(self, last_key: Any, rows: int, lock_wait: float, tally: Tally) -> None:
        self.m.checkpoint.update(last_key=last_key, tally=tally,
                                 batches=self.m.checkpoint["batches"] + 1)

    def record_failure(self, key: Any, error: BaseException, tally: Tally) -> None:
        self.m.failures.append(key)
        self.m.checkpoint.update(last_key=key, tally=tally)

    def finish(self, state: str, message: str = "") -> None:
        self.m.checkpoint["state"] = state

    def reconnected(self) -> None:
        pass

    def heartbeat(self) -> None:
        self.m.heartbeats += 1

    def stop(self) -> None:
        pass

    def verify(self) -> Verification | None:
        return self.m.verification


class Recorder:
    def __init__(self, stop_after: int | None = None, stop: threading.Event | None = None):
        self.batches: list[BatchReport] = []
        self.retries: list[ErrorKind] = []
        self.delays: list[float] = []
        self.notices: list[str] = []
        self.retunes: list[tuple[int, dict[str, tuple[Any, Any]]]] = []
        self._stop_after, self._stop = stop_after, stop

    def started(self, state: CheckpointState) -> None: ...

    def batch_committed(self, report: BatchReport) -> None:
        self.batches.append(report)
        if self._stop and self._stop_after == len(self.batches):
            self._stop.set()

    def retrying(self, kind: ErrorKind, attempt: int, delay: float) -> None:
        self.retries.append(kind)
        self.delays.append(delay)

    def throttled(self, reason: str, seconds: float) -> None: ...

    def throttle_changed(self, throttle: Throttle | None) -> None: ...


    def retuned(self, generation: int, changes: Mapping[str, tuple[Any, Any]]) -> None:
        self.retunes.append((generation, dict(changes)))

    def notice(self, message: str) -> None:
        self.notices.append(message)

    def finished(self, outcome: Outcome) -> None: ...


def settings(**halt: Any) -> RunSettings:
    return RunSettings(
        batch=BatchSettings(size=8, min_size=1, max_size=8, max_locked_fraction=0),
        retries=RetrySettings(max_attempts=6, backoff=0, max_backoff=0, halve_after_timeouts=2),
        halt_on=HaltThresholds(**{"failed_rows": 100, "failure_rate": 1.0, **halt}),
    )


def run(memory: Memory, recorder: Recorder | None = None, stop: threading.Event | None = None,
        **halt: Any) -> Outcome:
    return BatchRunner(FakeTarget(memory), FakeStore(memory), settings(**halt),
                       recorder or Recorder(), stop).run()


def test_every_row_once_and_done() -> None:
    memory = Memory({k: 0 for k in range(3, 300, 7)})
    outcome = run(memory)
    assert outcome.exit_code is ExitCode.DONE and outcome.reason == "Completed"
    assert set(memory.rows.values()) == {1}


def test_bad_rows_are_isolated_and_the_rest_commits() -> None:
    memory = Memory({k: 0 for k in range(1, 101)}, bad={5, 6, 50, 100})
    outcome = run(memory)
    assert outcome.exit_code is ExitCode.DONE
    assert memory.failures == [5, 6, 50, 100]
    assert [k for k, v in memory.rows.items() if v != 1] == [5, 6, 50, 100]
    assert memory.checkpoint["tally"].failed_rows == 4


def test_repeated_lock_timeouts_halve_the_batch_then_succeed() -> None:
    memory = Memory({k: 0 for k in range(1, 41)}, timeouts_left=4)
    recorder = Recorder()
    outcome = run(memory, recorder)
    assert outcome.exit_code is ExitCode.DONE
    assert recorder.retries == [ErrorKind.LOCK_TIMEOUT] * 4
    assert memory.lock_limits[:5] == [8, 8, 4, 4, 2]  # halved after every 2 timeouts
    assert set(memory.rows.values()) == {1}


def test_a_lost_race_is_retried_at_once_and_a_lock_timeout_after_a_backoff() -> None:
    patient = replace(settings(), retries=RetrySettings(
        max_attempts=6, backoff=0.001, max_backoff=0.001, halve_after_timeouts=2))
    for conflicts, kind in ((1, ErrorKind.SERIALIZATION), (0, ErrorKind.LOCK_TIMEOUT)):
        memory = Memory({k: 0 for k in range(1, 21)}, conflicts_left=conflicts,
                        timeouts_left=1 - conflicts)
        recorder = Recorder()
        outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), patient, recorder).run()
        assert outcome.exit_code == 0
        assert memory.rows == {k: 1 for k in range(1, 21)}
        assert recorder.retries == [kind]
        if kind is ErrorKind.SERIALIZATION:
            assert recorder.delays == [0.0]
        else:
            assert 0 < recorder.delays[0] <= 0.001


def test_only_a_lock_step_that_locks_counts_as_lock_wait() -> None:
    for locks_first in (True, False):
        memory = Memory({k: 0 for k in range(1, 9)}, locks_first=locks_first)
        recorder = Recorder()
        BatchRunner(FakeTarget(memory), FakeStore(memory), settings(), recorder,
                    clock=itertools.count(0.0).__next__).run()  # each call 1 s later
        waits = [report.lock_wait_seconds for report in recorder.batches]
        assert waits == ([1.0] if locks_first else [0.0]), locks_first  # one tick per step


def test_lock_waits_that_use_up_the_retries_name_the_holder_not_a_bare_retry_count() -> None:
    from chunkwise.engine import ExitCode, LockWaitsExhausted

    memory = Memory({1: 0}, timeouts_left=100)
    try:
        run(memory)
    except LockWaitsExhausted as exc:
        assert exc.exit_code is ExitCode.ERROR  # retryable: the Job runs it again later
        assert str(exc).startswith("lock waits: all 6 attempts of a batch timed out")
        assert "holding them now: pid 42 (application_name 'billing')" in str(exc)
    else:
        raise AssertionError("expected LockWaitsExhausted")
    assert memory.rows == {1: 0}


def test_consecutive_failed_batches_halt_with_the_checkpoint_kept() -> None:
    memory = Memory({k: 0 for k in range(1, 81)}, bad={1, 9, 17, 25})  # one per batch of 8
    outcome = run(memory, consecutive_failed_batches=3)
    assert outcome.exit_code is ExitCode.HALTED
    assert outcome.reason == "ConsecutiveFailedBatchesExceeded"
    assert memory.checkpoint["last_key"] == 24 and memory.checkpoint["state"] == "halted"
    assert sum(memory.rows.values()) == 21


def test_failed_rows_threshold_stops_inside_the_isolation() -> None:
    memory = Memory({k: 0 for k in range(1, 65)}, bad=set(range(1, 65)))
    outcome = run(memory, failed_rows=2)
    assert outcome.exit_code is ExitCode.HALTED and outcome.reason == "FailedRowsExceeded"
    assert memory.failures == [1, 2, 3]  # stopped at the third, not after the whole batch


def test_code_that_fails_every_row_the_same_way_halts_with_nothing_recorded() -> None:
    """A reverse=RunPython.noop raised the same TypeError for each of 101 rows, recorded as
    101 failed rows: an error in the code is one failure, named, within the first batch."""
    memory = Memory({k: 0 for k in range(1, 65)}, bad=set(range(1, 65)),
                    same_error="noop() takes 2 positional arguments but 3 were given")
    outcome = run(memory)
    assert outcome.exit_code is ExitCode.HALTED and outcome.reason == "CodeFailsEveryRow"
    assert outcome.message.startswith(
        "the code raised ValueError: noop() takes 2 positional arguments but 3 were given "
        "for every row tried alone (8 of the first failing batch's 8): an error in the code, "
        "not in the data, so no row was recorded as failed; fix the code, ")
    assert memory.failures == [] and set(memory.rows.values()) == {0}
    assert memory.checkpoint["last_key"] is None


def test_the_probe_of_failing_code_runs_under_the_batchs_timeouts() -> None:
    """Each row tried alone sets the batch's lock and statement timeouts first, as every
    batch does: a probed row another session holds must not hold the run (review)."""
    memory = Memory({k: 0 for k in range(1, 9)}, bad=set(range(1, 9)), same_error="same")
    run(memory)
    assert memory.rows_locked_under_timeouts == list(range(1, len(
        memory.rows_locked_under_timeouts) + 1))


def test_rows_failing_alike_beside_rows_that_pass_are_the_datas_and_recorded() -> None:
    """One row of the first batch passes: the others' shared error is in the data."""
    memory = Memory({k: 0 for k in range(1, 17)}, bad=set(range(1, 17)) - {8},
                    same_error="KeyError: 'price'")
    outcome = run(memory)
    assert outcome.exit_code is ExitCode.DONE
    assert memory.failures == sorted(set(range(1, 17)) - {8}) and memory.rows[8] == 1


def test_after_a_committed_row_a_batch_failing_alike_is_recorded_not_halted() -> None:
    memory = Memory({k: 0 for k in range(1, 25)}, bad=set(range(9, 17)),
                    same_error="KeyError: 'price'")
    outcome = run(memory)
    assert outcome.exit_code is ExitCode.DONE and memory.failures == list(range(9, 17))


def test_stop_event_finishes_the_batch_then_interrupts() -> None:
    memory = Memory({k: 0 for k in range(1, 101)})
    stop = threading.Event()
    outcome = run(memory, Recorder(stop_after=3, stop=stop), stop)
    assert outcome.exit_code is ExitCode.INTERRUPTED
    assert sum(memory.rows.values()) == 24 and memory.checkpoint["last_key"] == 24
    resumed = run(memory)
    assert resumed.exit_code is ExitCode.DONE and set(memory.rows.values()) == {1}


def test_rows_that_vanish_before_isolation_are_not_an_error() -> None:
    memory = Memory({k: 0 for k in range(1, 21)}, bad={3})

    class Vanishing(FakeTarget):
        def keys_in(self, after: Any, upto: Any) -> Sequence[Any]:
            # the isolation's re-read finds the failed batch's rows deleted meanwhile
            for key in super().keys_in(after, upto):
                del self.m.rows[key]
            self.m.bad.clear()
            return []

    outcome = BatchRunner(Vanishing(memory), FakeStore(memory), settings(), Recorder()).run()
    assert outcome.exit_code is ExitCode.DONE
    assert memory.failures == [] and set(memory.rows.values()) == {1}
    assert 3 not in memory.rows and len(memory.rows) == 12  # batch 1-8 vanished, 9-20 done


def test_a_cap_below_what_the_user_asked_is_said_once_with_the_numbers() -> None:
    memory = Memory({k: 0 for k in range(1, 1001)})
    recorder = Recorder()
    capped = RunSettings(batch=BatchSettings(size=500, min_size=1, max_size=800,
                                             max_locked_fraction=0.01))
    outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), capped, recorder).run()
    assert outcome.exit_code is ExitCode.DONE
    assert recorder.notices == [
        "batches capped at 10 rows, below spec.batch.maxSize 800: spec.batch.maxLockedFraction "
        "0.01 of 1,000 rows to do (spec.batch.size 500 -> 10; set spec.batch.maxLockedFraction "
        "to 0 to lift the cap)"]
    assert max(b.rows for b in recorder.batches) <= 10


def test_no_notice_when_the_cap_lowers_nothing() -> None:
    recorder = Recorder()
    run(Memory({k: 0 for k in range(1, 50)}), recorder)
    assert recorder.notices == []


def test_a_completed_run_carries_the_stores_verification_and_survives_its_failure() -> None:
    memory = Memory({key: 0 for key in range(1, 11)}, verification=Verification(0, 0, 10))
    outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), RunSettings(),
                          Recorder()).run()
    assert outcome.reason == "Completed" and outcome.verification == Verification(0, 0, 10)
    assert outcome.verification.describe() == "no row up to key 10 still matches todo"

    class Broken(FakeStore):
        def verify(self) -> Verification | None:
            raise OSError("connection lost after the last commit")

    memory = Memory({key: 0 for key in range(1, 11)})
    recorder = Recorder()
    outcome = BatchRunner(FakeTarget(memory), Broken(memory), RunSettings(), recorder).run()
    assert outcome.exit_code is ExitCode.DONE and outcome.verification is None
    assert any("could not verify the run: OSError" in n for n in recorder.notices)


def test_new_settings_take_effect_between_batches() -> None:
    """Live retuning: a source offers new settings after the second batch; the next
    batches use the new size and the new halt thresholds, and the reporter is told."""
    import dataclasses

    memory = Memory({key: 0 for key in range(1, 201)})
    start = RunSettings(batch=BatchSettings(size=10, min_size=10, max_size=10,
                                            max_locked_fraction=0))
    faster = dataclasses.replace(start, batch=dataclasses.replace(
        start.batch, size=40, max_size=40), halt_on=HaltThresholds(failed_rows=7))
    asked: list[int] = []

    def source() -> tuple[int, RunSettings] | None:
        asked.append(len(memory.lock_limits))
        return (5, faster) if len(asked) == 3 else None

    recorder = Recorder()
    runner = BatchRunner(FakeTarget(memory), FakeStore(memory), start, recorder,
                         retune=source)
    outcome = runner.run()
    assert outcome.exit_code is ExitCode.DONE and set(memory.rows.values()) == {1}
    assert memory.lock_limits[:2] == [10, 10] and memory.lock_limits[2:6] == [40] * 4
    assert recorder.retunes == [(5, {"batch.size": (10, 40), "batch.maxSize": (10, 40),
                                     "haltOn.failedRows": (100, 7)})]


class PolicyTarget(FakeTarget):
    """Notes the CPU scheduling policy of the thread each batch's work runs on."""

    def __init__(self, memory: Memory) -> None:
        super().__init__(memory)
        self.policies: list[int] = []

    def apply(self, after: Any, upto: Any) -> None:
        self.policies.append(os.sched_getscheduler(0))
        super().apply(after, upto)


def test_yield_cpu_runs_batches_at_idle_priority_and_restores_it_live_and_after() -> None:
    memory = Memory({key: 0 for key in range(1, 61)})
    start = RunSettings(batch=BatchSettings(size=10, min_size=10, max_size=10,
                                            max_locked_fraction=0, yield_cpu=True))
    normal = replace(start, batch=replace(start.batch, yield_cpu=False))
    asked: list[int] = []

    def source() -> tuple[int, RunSettings] | None:
        asked.append(1)
        return (2, normal) if len(asked) == 4 else None

    target = PolicyTarget(memory)
    before = os.sched_getscheduler(0)
    outcome = BatchRunner(target, FakeStore(memory), start, Recorder(), retune=source).run()
    assert outcome.exit_code is ExitCode.DONE and set(memory.rows.values()) == {1}
    assert target.policies == [os.SCHED_IDLE] * 3 + [before] * 3
    assert os.sched_getscheduler(0) == before

    target = PolicyTarget(Memory({key: 0 for key in range(1, 31)}))
    BatchRunner(target, FakeStore(target.m), start, Recorder()).run()
    assert target.policies == [os.SCHED_IDLE] * 3 and os.sched_getscheduler(0) == before


def test_a_cpu_priority_that_cannot_be_lowered_is_said_and_the_run_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    memory = Memory({key: 0 for key in range(1, 21)})
    recorder = Recorder()
    outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), RunSettings(
        batch=BatchSettings(max_locked_fraction=0, yield_cpu=True)), recorder).run()
    assert outcome.exit_code is ExitCode.DONE and set(memory.rows.values()) == {1}
    assert recorder.notices == [
        "batch.yieldCpu: could not lower the CPU priority (Operation not permitted)"]


def test_a_cpu_priority_that_cannot_be_restored_is_said(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An unprivileged thread may lower its priority but not raise it back (RLIMIT_NICE)."""
    real = os.sched_setscheduler

    def only_down(pid: int, policy: int, param: os.sched_param) -> None:
        if policy != os.SCHED_IDLE:
            raise PermissionError(1, "Operation not permitted")
        real(pid, policy, param)

    before = os.sched_getscheduler(0)
    monkeypatch.setattr(os, "sched_setscheduler", only_down)
    memory = Memory({key: 0 for key in range(1, 21)})
    recorder = Recorder()
    try:
        outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), RunSettings(
            batch=BatchSettings(max_locked_fraction=0, yield_cpu=True)), recorder).run()
        assert os.sched_getscheduler(0) == os.SCHED_IDLE
    finally:
        real(0, before, os.sched_param(0))
    assert outcome.exit_code is ExitCode.DONE
    assert recorder.notices == [
        "batch.yieldCpu: could not restore the CPU priority (Operation not permitted); "
        "this thread stays at idle priority"]


def test_a_verification_with_missed_rows_says_how_to_name_rows_kept_on_purpose() -> None:
    described = Verification(57, 0, 1000).describe()
    assert described == (
        "57 rows up to key 1000 still match todo: 0 recorded as failed, 57 missed; if the "
        "code leaves some rows matching todo on purpose, name them with the operation's "
        "done= (see the operation reference)")
    assert "done=" not in Verification(3, 3, 1000).describe()
