"""Throttling on database health, without a database: the judge's verdicts and the loop's
waiting, halting and reporting. The PostgreSQL probe itself is tested on a real server
with a real streaming replica in tests/django/test_throttle_pg.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from chunkwise.engine import (
    BatchRunner,
    ExitCode,
    HaltThresholds,
    HealthReading,
    RunSettings,
    SettingsError,
    Throttle,
    ThrottleSettings,
    judge,
)

from .test_runner_fakes import FakeStore, FakeTarget, Memory, Recorder, settings


def with_health(base: RunSettings | None = None, halt: dict[str, Any] | None = None,
                **throttle: object) -> RunSettings:
    base = base or settings()
    return dataclasses.replace(
        base, throttle=ThrottleSettings(**{"check_interval": 0.001, **throttle}),  # type: ignore[arg-type]
        halt_on=dataclasses.replace(base.halt_on, **(halt or {})))


def test_a_passed_threshold_says_the_reading_the_limit_and_the_field() -> None:
    run = with_health(replication_lag=5.0)
    verdict = judge(HealthReading(replication_lag=12.34), run)
    assert verdict == Throttle("replication_lag",
                               "replication lag 12.3s > 5s (throttle.replicationLag)")
    assert verdict.condition_reason == "ReplicationLag"
    assert judge(HealthReading(replication_lag=5.0), run) is None  # at the limit: go on
    just_above = judge(HealthReading(replication_lag=5.004), run)
    assert just_above is not None and just_above.message.startswith("replication lag 5.004s > 5s")
    assert judge(HealthReading(active_backends=500, transaction_age=9e9), run) is None


def test_critical_comes_before_throttle_and_names_its_own_reason() -> None:
    run = with_health(replication_lag=5.0, active_backends=10,
                      halt={"replication_lag": 30.0})
    verdict = judge(HealthReading(active_backends=11, replication_lag=31.0), run)
    assert verdict is not None and verdict.critical
    assert verdict.condition_reason == "CriticalReplicationLag"
    assert verdict.message == "replication lag 31.0s > 30s (haltOn.replicationLag)"
    below = judge(HealthReading(active_backends=11, replication_lag=29.0), run)
    assert below == Throttle("replication_lag",
                             "replication lag 29.0s > 5s (throttle.replicationLag)")


def test_the_history_list_length_is_a_count_with_both_levels() -> None:
    run = with_health(history_list_length=5000, halt={"history_list_length": 50_000})
    assert judge(HealthReading(history_list_length=5000), run) is None
    assert judge(HealthReading(history_list_length=5001), run) == Throttle(
        "history_list_length",
        "InnoDB history list length 5001 > 5000 (throttle.historyListLength)")
    critical = judge(HealthReading(history_list_length=60_000), run)
    assert critical is not None and critical.condition_reason == "CriticalHistoryListLength"
    with pytest.raises(SettingsError, match=r"^haltOn\.historyListLength: expected a value "
                       r"above throttle\.historyListLength"):
        with_health(history_list_length=5000, halt={"history_list_length": 5000})


def test_autovacuum_and_the_throttle_query_wait_only_when_asked_for() -> None:
    reading = HealthReading(autovacuum="autovacuum on shop_customer for 3s (scanning heap)",
                            query_value=2)
    assert judge(reading, with_health()) is None
    assert judge(reading, with_health(autovacuum=True)) == Throttle(
        "autovacuum", "autovacuum on shop_customer for 3s (scanning heap) "
        "(throttle.autovacuum)")
    assert judge(reading, with_health(query="SELECT 2")) == Throttle(
        "throttle_query", "throttle.query returned 2 (> 0 waits)")
    assert judge(HealthReading(query_value=0), with_health(query="SELECT 0")) is None


def test_a_critical_level_at_or_below_the_throttle_level_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"^haltOn\.replicationLag: expected a value "
                       r"above throttle\.replicationLag \(5\)"):
        with_health(replication_lag=5.0, halt={"replication_lag": 5.0})
    with pytest.raises(SettingsError, match=r"^throttle\.checkInterval: expected a duration"):
        ThrottleSettings(check_interval=0)


class Probe:
    """Answers from a list of readings (the last one repeats), counting the reads."""

    def __init__(self, readings: list[HealthReading],
                 on_read: Callable[[int], None] | None = None) -> None:
        self.readings, self.reads, self._on_read = readings, 0, on_read

    def read(self, settings: RunSettings) -> HealthReading:
        self.reads += 1
        if self._on_read:
            self._on_read(self.reads)
        return self.readings[min(self.reads, len(self.readings)) - 1]


class Watching(Recorder):
    def __init__(self, memory: Memory) -> None:
        super().__init__()
        self.memory = memory
        self.log: list[str] = []
        self.seconds: dict[str, float] = {}

    def throttled(self, reason: str, seconds: float) -> None:
        self.seconds[reason] = self.seconds.get(reason, 0.0) + seconds

    def throttle_changed(self, throttle: Throttle | None) -> None:
        done = sum(self.memory.rows.values())
        self.log.append(f"{throttle.message if throttle else 'clear'} @ {done} rows")


def test_the_run_waits_while_throttled_then_goes_on_and_reports_both() -> None:
    memory = Memory({key: 0 for key in range(1, 41)})
    lagging = HealthReading(replication_lag=12.0)
    probe = Probe([HealthReading(), lagging, lagging, lagging, HealthReading()])
    watching = Watching(memory)
    run = with_health(replication_lag=5.0, check_interval=0.0001)
    clock = iter(range(10_000))
    runner = BatchRunner(FakeTarget(memory), FakeStore(memory), run, watching,
                         clock=lambda: float(next(clock)), health=probe)
    outcome = runner.run()
    assert outcome.exit_code is ExitCode.DONE and set(memory.rows.values()) == {1}
    message = "replication lag 12.0s > 5s (throttle.replicationLag)"
    # one batch ran (healthy), then three readings held the next one back: no rows moved
    assert watching.log == [f"{message} @ 8 rows"] * 3 + ["clear @ 8 rows"]
    assert watching.seconds["replication_lag"] > 0 and probe.reads >= 5


def test_past_a_critical_level_the_run_halts_before_its_next_batch() -> None:
    memory = Memory({key: 0 for key in range(1, 41)})
    probe = Probe([HealthReading(), HealthReading(transaction_age=700.0)])
    watching = Watching(memory)
    clock = iter(range(10_000))
    run = with_health(transaction_age=60.0, halt={"transaction_age": 600.0})
    outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), run, watching,
                          clock=lambda: float(next(clock)), health=probe).run()
    assert outcome.exit_code is ExitCode.HALTED
    assert outcome.reason == "CriticalTransactionAge"
    assert outcome.message == ("critical load: oldest transaction 700.0s > 600s "
                               "(spec.haltOn.transactionAge); batches stopped, the checkpoint "
                               "is intact; once the load is down, or with that threshold "
                               "raised, a changed spec starts a new run from the checkpoint")
    assert sum(memory.rows.values()) == 8 and memory.checkpoint["state"] == "halted"


def test_a_failing_throttle_query_halts_with_its_error() -> None:
    class Broken:
        def read(self, settings: RunSettings) -> HealthReading:
            raise SettingsError("throttle.query: expected its first value to be a number")

    memory = Memory({key: 0 for key in range(1, 9)})
    outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), with_health(query="x"),
                          Recorder(), health=Broken()).run()
    assert outcome.exit_code is ExitCode.HALTED and outcome.reason == "HealthCheckFailed"
    assert "throttle.query: expected its first value to be a number" in outcome.message
    assert sum(memory.rows.values()) == 0


def test_health_is_read_at_most_every_check_interval_and_not_at_all_when_unwatched() -> None:
    memory = Memory({key: 0 for key in range(1, 81)})  # 10 batches of 8
    probe = Probe([HealthReading()])
    ticks = iter(range(10_000))
    # each clock call is 1 s later; a batch reads the clock a few times: with a 1 h
    # interval, one read in the whole run
    BatchRunner(FakeTarget(memory), FakeStore(memory),
                with_health(replication_lag=5.0, check_interval=3600.0), Recorder(),
                clock=lambda: float(next(ticks)), health=probe).run()
    assert probe.reads == 1
    memory = Memory({key: 0 for key in range(1, 81)})
    unwatched = Probe([HealthReading(replication_lag=1e9)])
    outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), settings(), Recorder(),
                          health=unwatched).run()
    assert outcome.exit_code is ExitCode.DONE and unwatched.reads == 0


def test_raising_a_threshold_live_frees_a_throttled_run() -> None:
    memory = Memory({key: 0 for key in range(1, 17)})
    run = with_health(active_backends=10, check_interval=0.0001)
    probe = Probe([HealthReading(active_backends=50)])
    offered: list[int] = []

    def source() -> tuple[int, RunSettings] | None:
        offered.append(1)
        if probe.reads == 3:
            return 2, dataclasses.replace(run, throttle=dataclasses.replace(
                run.throttle, active_backends=100))
        return None

    watching = Watching(memory)
    outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), run, watching,
                          retune=source, health=probe).run()
    assert outcome.exit_code is ExitCode.DONE and set(memory.rows.values()) == {1}
    assert watching.log[-1] == "clear @ 0 rows" and len(watching.log) == 4
    assert HaltThresholds().replication_lag == 0  # critical levels are off by default


@pytest.mark.parametrize("waiting", ["throttled", "paced"])
def test_a_waiting_run_writes_its_heartbeat_meanwhile(waiting: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Between batches a run may wait far longer than a batch takes (throttled on the
    database's health, or paced by maxRowsPerSecond), and commits nothing meanwhile: its
    heartbeat goes on, so chunkwise_status does not take it for dead."""
    from chunkwise.engine import runner

    monkeypatch.setattr(runner, "HEARTBEAT_EVERY", 0.02, raising=False)
    memory = Memory({key: 0 for key in range(1, 17)})
    if waiting == "throttled":
        lagging = HealthReading(replication_lag=12.0)
        probe: Probe | None = Probe([lagging] * 30 + [HealthReading()])
        run = with_health(replication_lag=5.0, check_interval=0.005)
    else:  # two batches of 8 rows at 100 rows/s: 0.08 s between them
        probe, run = None, settings()
        run = dataclasses.replace(run, batch=dataclasses.replace(run.batch,
                                                                 max_rows_per_second=100))
    outcome = BatchRunner(FakeTarget(memory), FakeStore(memory), run, Recorder(),
                          health=probe).run()
    assert outcome.exit_code is ExitCode.DONE
    assert memory.heartbeats >= 2
