"""Property-based tests of the batch loop (hypothesis) over the in-memory fakes: for any
keys (gaps, text with collation-sensitive characters, UUIDs), any bad rows and any
sequence of injected faults (lock timeouts, lost connections, kills between any two
steps of a batch), every good row is processed exactly once, every bad row is recorded
exactly once and left alone, no key is skipped, and the tally matches."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
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
