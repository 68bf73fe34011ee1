"""Property-based tests of the batch loop (hypothesis) over the in-memory fakes: for any
keys (gaps, text with collation-sensitive characters, UUIDs), any bad rows and any
sequence of injected faults (lock timeouts, lost connections, kills between any two
steps of a batch), every good row is processed exactly once, every bad row is recorded
exactly once and left alone, no key is skipped, and the tally matches."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chunkwise.engine import (
    BatchRunner,
    BatchSettings,
    ExitCode,
    HaltThresholds,
    RetriesExhausted,
    RetrySettings,
    RunSettings,
    Tally,
)
from tests.unit.test_runner_fakes import FakeStore, FakeTarget, LockTimeout, Memory, Recorder


class LostConnection(Exception):
    sqlstate = "08006"


class Killed(BaseException):
    """SIGKILL: nothing catches it; the open transaction rolls back."""


FAULTS: dict[str, Callable[[], BaseException]] = {
    "lock_timeout": lambda: LockTimeout("canceling statement due to lock timeout"),
    "connection": lambda: LostConnection("server closed the connection unexpectedly"),
    "kill": lambda: Killed(),
}


class Faults:
    """Raises the planned fault at the n-th step (any lock, work, checkpoint or failure
    record), counting steps over every run."""

    def __init__(self, plan: dict[int, str]) -> None:
        self.plan, self.step = plan, 0

    def maybe(self) -> None:
        self.step += 1
        fault = self.plan.get(self.step)
        if fault is not None:
            raise FAULTS[fault]()


class FaultyTarget(FakeTarget):
    def __init__(self, memory: Memory, faults: Faults) -> None:
        super().__init__(memory)
        self.faults = faults

    def lock_rows(self, after: Any, upto: Any, limit: int) -> tuple[int, Any]:
        self.faults.maybe()
        return super().lock_rows(after, upto, limit)

    def apply(self, after: Any, upto: Any) -> None:
        self.faults.maybe()
        super().apply(after, upto)


class FaultyStore(FakeStore):
    def __init__(self, memory: Memory, faults: Faults) -> None:
        super().__init__(memory)
        self.faults = faults

    def advance(self, last_key: Any, rows: int, lock_wait: float, tally: Tally) -> None:
        super().advance(last_key, rows, lock_wait, tally)
        self.faults.maybe()  # after the checkpoint moved, before the commit

    def record_failure(self, key: Any, error: BaseException, tally: Tally) -> None:
        self.faults.maybe()
        super().record_failure(key, error, tally)


RUN_SETTINGS = RunSettings(
    batch=BatchSettings(size=5, min_size=1, max_size=16, max_locked_fraction=0),
    retries=RetrySettings(max_attempts=4, backoff=0, max_backoff=0, halve_after_timeouts=2),
    halt_on=HaltThresholds(failed_rows=10**6, failure_rate=1.0, min_sample=1,
                           consecutive_failed_batches=10**6),
)

integer_keys = st.lists(st.integers(-10**6, 10**6), min_size=0, max_size=120, unique=True)
# text that sorts differently under different collations: case, accents, digits, spaces
text_keys = st.lists(st.text(st.sampled_from("aAbB09 _-éÉßſ\u0130z"), min_size=1, max_size=6),
                     min_size=0, max_size=80, unique=True)
uuid_keys = st.lists(st.uuids(), min_size=0, max_size=80, unique=True).map(
    lambda keys: [uuid.UUID(int=k.int) for k in keys])
any_keys = st.one_of(integer_keys, text_keys, uuid_keys)
fault_plans = st.dictionaries(st.integers(1, 400), st.sampled_from(sorted(FAULTS)),
                              max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=any_keys, data=st.data(), plan=fault_plans)
def test_no_key_skipped_or_done_twice_whatever_fails(keys: list[Any], data: st.DataObject,
                                                      plan: dict[int, str]) -> None:
    bad = set(data.draw(st.lists(st.sampled_from(keys), unique=True)) if keys else [])
    memory = Memory({key: 0 for key in keys}, bad=bad)
    faults = Faults(plan)
    seen_checkpoints: list[Any] = []
    for _ in range(len(plan) + 5):  # every fault costs at most one restart
        runner = BatchRunner(FaultyTarget(memory, faults), FaultyStore(memory, faults),
                             RUN_SETTINGS, Recorder())
        try:
            outcome = runner.run()
        except (Killed, RetriesExhausted):
            last = memory.checkpoint["last_key"]
            if seen_checkpoints and last is not None and seen_checkpoints[-1] is not None:
                assert last >= seen_checkpoints[-1], "the checkpoint moved backwards"
            seen_checkpoints.append(last)
            continue
        assert outcome.exit_code is ExitCode.DONE, outcome
        break
    else:
        raise AssertionError("the run never completed")
    good = [key for key in keys if key not in bad]
    assert all(memory.rows[key] == 1 for key in good), "a good row was skipped or done twice"
    assert all(memory.rows[key] == 0 for key in bad), "a bad row was changed"
    assert sorted(memory.failures) == sorted(bad), "bad rows not recorded exactly once"
    tally: Tally = memory.checkpoint["tally"]
    assert (tally.rows_processed, tally.failed_rows) == (len(good), len(bad))


class Application:
    """The application writing while the migration runs: at planned steps it inserts rows
    and changes rows so that they no longer match the todo filter. Its writes are its own
    committed transactions: the migration's rollbacks do not undo them."""

    def __init__(self, memory: Memory, writes: dict[int, tuple[str, int]]) -> None:
        self.memory, self.writes = memory, writes
        self.hidden: set[Any] = set()
        self.inserted: set[Any] = set()

    def act(self, step: int) -> None:
        kind, key = self.writes.get(step, ("", 0))
        if kind == "insert" and key not in self.memory.rows:
            self.memory.rows[key] = 0
            self.inserted.add(key)
        elif kind == "leave" and self.memory.rows:
            self.hidden.add(sorted(self.memory.rows)[key % len(self.memory.rows)])

    def survive_rollback(self) -> None:
        for key in self.inserted:
            self.memory.rows.setdefault(key, 0)


class ConcurrentFaults(Faults):
    def __init__(self, plan: dict[int, str], app: Application) -> None:
        super().__init__(plan)
        self.app = app

    def maybe(self) -> None:
        self.app.act(self.step + 1)
        super().maybe()


class TodoViewTarget(FaultyTarget):
    """The todo filter's view: the table minus the rows the application moved out of it."""

    def __init__(self, memory: Memory, faults: Faults, app: Application) -> None:
        super().__init__(memory, faults)
        self.app = app

    def _between(self, after: Any, upto: Any) -> list[Any]:
        return [key for key in super()._between(after, upto) if key not in self.app.hidden]

    def transaction(self) -> Any:
        inner = super().transaction()
        app = self.app

        class _Committed:
            def __enter__(self) -> None:
                inner.__enter__()

            def __exit__(self, *exc: Any) -> bool | None:
                try:
                    return inner.__exit__(*exc)
                finally:
                    app.survive_rollback()

        return _Committed()


class FixedHighWaterStore(FaultyStore):
    """The high-water mark is taken once, when the run is planned, as the real store does."""

    def __init__(self, memory: Memory, faults: Faults, high_water: Any) -> None:
        super().__init__(memory, faults)
        self.high_water = high_water

    def _state(self) -> Any:
        import dataclasses

        return dataclasses.replace(super()._state(), high_water_key=self.high_water)


# keys reach past the seeded ones (+-10**6) so that some inserts land above the mark
app_writes = st.dictionaries(st.integers(1, 300), st.tuples(st.sampled_from(["insert", "leave"]),
                                                            st.integers(-10**6, 3 * 10**6)),
                             max_size=30)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keys=integer_keys, plan=fault_plans, writes=app_writes)
# a row inserted above the mark, then a kill: the next run must keep the first run's mark
@example(keys=list(range(1, 30)), plan={3: "kill"}, writes={1: ("insert", 99)})
def test_rows_entering_and_leaving_the_todo_view_during_the_run(
        keys: list[int], plan: dict[int, str], writes: dict[int, tuple[str, int]]) -> None:
    """While faults strike, the application inserts rows (below and above the high-water
    mark, before and behind the checkpoint) and moves rows out of the todo filter's view.
    No row is ever processed twice; every row that was to do at the start and stayed in
    the view is processed; the tally counts exactly the rows processed."""
    memory = Memory({key: 0 for key in keys})
    app = Application(memory, writes)
    faults = ConcurrentFaults(plan, app)
    high_water = max(keys, default=None)
    for _ in range(len(plan) + 5):
        runner = BatchRunner(TodoViewTarget(memory, faults, app),
                             FixedHighWaterStore(memory, faults, high_water),
                             RUN_SETTINGS, Recorder())
        try:
            outcome = runner.run()
        except (Killed, RetriesExhausted):
            continue
        assert outcome.exit_code is ExitCode.DONE, outcome
        break
    else:
        raise AssertionError("the run never completed")
    assert all(count <= 1 for count in memory.rows.values()), "a row was processed twice"
    stayed = [key for key in keys if key not in app.hidden]
    assert all(memory.rows[key] == 1 for key in stayed), "a row to do was skipped"
    assert all(memory.rows[key] == 0 for key in app.inserted
               if high_water is None or key > high_water), "a row above the mark was done"
    tally: Tally = memory.checkpoint["tally"]
    assert tally.rows_processed == sum(memory.rows.values())
