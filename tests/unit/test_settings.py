import re

import pytest

from chunkwise.django.config import resolve_settings
from chunkwise.engine import (
    TUNABLES,
    BatchSettings,
    Caller,
    HaltThresholds,
    RetrySettings,
    RunSettings,
    SettingsError,
    Timeouts,
    parse_boolean,
    parse_duration,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("2s", 2.0), ("1.5m", 90.0), ("1h", 3600.0), ("3", 3.0), (0.25, 0.25),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text, field_name="x") == seconds


@pytest.mark.parametrize("bad", ["soon", "-1s", "1d", "", True])
def test_parse_duration_rejects_with_the_field_name(bad: object) -> None:
    with pytest.raises(SettingsError, match=r"^timeouts\.lock: expected a duration"):
        parse_duration(bad, field_name="timeouts.lock")  # type: ignore[arg-type]


@pytest.mark.parametrize(("factory", "field"), [
    (lambda: BatchSettings(size=10, min_size=50), "batch.size"),
    (lambda: BatchSettings(size=100, max_size=50), "batch.size"),
    (lambda: BatchSettings(min_size=0), "batch.minSize"),
    (lambda: BatchSettings(target_duration=0), "batch.targetDuration"),
    (lambda: BatchSettings(max_rows_per_second=-1), "batch.maxRowsPerSecond"),
    (lambda: Timeouts(lock=0), "timeouts.lock"),
    (lambda: RetrySettings(max_attempts=0), "retries.maxAttempts"),
    (lambda: HaltThresholds(failure_rate=1.5), "haltOn.failureRate"),
    (lambda: HaltThresholds(failed_rows=-1), "haltOn.failedRows"),
    (lambda: HaltThresholds(consecutive_failed_batches=0), "haltOn.consecutiveFailedBatches"),
])
def test_invalid_settings_name_the_field(factory, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError, match="^" + re.escape(field) + ": expected"):
        factory()


def test_env_then_flags_override_the_base() -> None:
    base = RunSettings()
    settings = resolve_settings(
        base,
        {"CHUNKWISE_BATCH_SIZE": "2000", "CHUNKWISE_LOCK_TIMEOUT": "250ms",
         "CHUNKWISE_HALT_FAILURE_RATE": "0.2"},
        {"batch_size": "3000"},
    )
    assert settings.batch.size == 3000  # the flag wins over the env
    assert settings.timeouts.lock == 0.25
    assert settings.halt_on.failure_rate == 0.2
    assert settings.retries == base.retries


def test_bad_env_value_names_the_spec_field_and_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"batch\.size \(CHUNKWISE_BATCH_SIZE\): expected an "
                                            r"integer, got 'lots'"):
        resolve_settings(RunSettings(), {"CHUNKWISE_BATCH_SIZE": "lots"})


@pytest.mark.parametrize(("caller", "env", "flags", "name"), [
    (Caller.COMMAND, {}, {"batch_size": "0"}, "batch.size (--batch-size)"),
    (Caller.MIGRATE, {"CHUNKWISE_BATCH_SIZE": "0"}, None, "batch.size (CHUNKWISE_BATCH_SIZE)"),
    (Caller.POD, {"CHUNKWISE_BATCH_SIZE": "0"}, None, "spec.batch.size"),
])
def test_a_value_out_of_bounds_is_named_as_the_caller_gave_it(
        caller: Caller, env: dict[str, str], flags: dict[str, str] | None, name: str) -> None:
    """`--batch-size 0` said `batch.size: ...`, a name chunkwise_run does not take."""
    with pytest.raises(SettingsError) as raised:
        resolve_settings(RunSettings(), env, flags, caller)
    assert str(raised.value) == f"{name}: expected an integer >= 1, got 0"


def test_a_bound_between_two_settings_names_the_one_at_fault_as_the_caller_sets_it() -> None:
    with pytest.raises(SettingsError) as raised:
        resolve_settings(RunSettings(), {}, {"max_batch_size": "50"}, Caller.COMMAND)
    assert str(raised.value) == ("--batch-size: expected minSize (100) <= size <= maxSize "
                                 "(50), got 1000")


def test_every_tunable_maps_to_a_real_settings_field() -> None:
    settings = RunSettings()
    for tunable in TUNABLES:
        assert hasattr(getattr(settings, tunable.group), tunable.field), tunable
    assert len({t.env for t in TUNABLES}) == len(TUNABLES)


def test_throttle_settings_come_from_env_and_flags_with_named_errors() -> None:
    env = {"CHUNKWISE_THROTTLE_AUTOVACUUM": "True", "CHUNKWISE_THROTTLE_QUERY": "SELECT 1",
           "CHUNKWISE_THROTTLE_REPLICATION_LAG": "5s"}
    settings = resolve_settings(RunSettings(), env, {"halt_replication_lag": "30s"})
    assert settings.throttle.autovacuum is True and settings.throttle.query == "SELECT 1"
    assert (settings.throttle.replication_lag, settings.halt_on.replication_lag) == (5.0, 30.0)
    with pytest.raises(SettingsError, match=r"^throttle\.autovacuum \(--throttle-autovacuum\): "
                                            r"expected true or false \(1/0, yes/no, on/off\), "
                                            r"got 'maybe'$"):
        resolve_settings(RunSettings(), {}, {"throttle_autovacuum": "maybe"})


@pytest.mark.parametrize("text", ["1", "true", "True", "TRUE", "yes", "on", " On "])
def test_every_boolean_reads_the_usual_spellings_of_true(text: str) -> None:
    assert parse_boolean(text, "CHUNKWISE_X") is True


@pytest.mark.parametrize("text", ["0", "false", "False", "no", "NO", "off", "Off "])
def test_every_boolean_reads_the_usual_spellings_of_false(text: str) -> None:
    assert parse_boolean(text, "CHUNKWISE_X") is False


@pytest.mark.parametrize("text", ["maybe", "", "2", "y", "nope", "truthy"])
def test_a_boolean_it_does_not_know_is_refused_naming_the_variable(text: str) -> None:
    with pytest.raises(SettingsError, match=rf"^CHUNKWISE_X: expected true or false \(1/0, "
                                            rf"yes/no, on/off\), got {re.escape(repr(text))}$"):
        parse_boolean(text, "CHUNKWISE_X")


@pytest.mark.parametrize(("text", "expected"), [("False", False), ("no", False), ("off", False),
                                                ("0", False), ("True", True), ("on", True)])
def test_defer_and_boolean_tunables_read_booleans_alike(text: str, expected: bool) -> None:
    from chunkwise.django.config import defer_by_default

    assert defer_by_default({"CHUNKWISE_DEFER": text}, not expected) is expected
    settings = resolve_settings(RunSettings(), {"CHUNKWISE_YIELD_CPU": text})
    assert settings.batch.yield_cpu is expected
