import pytest

from chunkwise.engine import (
    BatchSettings,
    BatchSizer,
    Caller,
    ErrorKind,
    Halted,
    HaltThresholds,
    RateLimiter,
    RetrySettings,
    Tally,
    backoff_seconds,
    check_budget,
    classify,
)


def test_sizer_moves_toward_the_target_duration_within_bounds() -> None:
    sizer = BatchSizer(BatchSettings(size=1000, min_size=100, max_size=8000,
                                     target_duration=0.5))
    sizer.observe(1000, 0.1)  # 10k rows/s: 5000 rows would take 0.5 s, but growth caps at 2x
    assert sizer.size == 2000
    for _ in range(10):
        sizer.observe(sizer.size, sizer.size / 10_000)
    assert sizer.size == 5000
    for _ in range(10):
        sizer.observe(sizer.size, sizer.size / 100)  # suddenly 100 rows/s
    assert sizer.size == 100  # min_size
    sizer.observe(100, 0.0001)
    sizer.observe(200, 0.0001)
    sizer.observe(400, 0.0001)
    sizer.observe(800, 0.0001)
    sizer.observe(1600, 0.0001)
    sizer.observe(3200, 0.0001)
    assert sizer.size == 6400
    sizer.observe(6400, 0.0001)
    assert sizer.size == 8000  # max_size


def test_halving_respects_min_size() -> None:
    sizer = BatchSizer(BatchSettings(size=300, min_size=100))
    sizer.halve()
    assert sizer.size == 150
    sizer.halve()
    assert sizer.size == 100


def test_rate_limiter_caps_rows_per_second_and_adds_pause() -> None:
    now = [0.0]
    limiter = RateLimiter(BatchSettings(max_rows_per_second=1000, pause=0.05),
                          clock=lambda: now[0])
    assert limiter.delay_after(500) == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.delay_after(100) == pytest.approx(0.1)
    now[0] = 5.0  # far behind the cap: only the pause remains
    assert limiter.delay_after(100) == pytest.approx(0.05)


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    settings = RetrySettings(backoff=1.0, max_backoff=10.0)
    assert backoff_seconds(1, settings, rng=lambda: 1.0) == 1.0
    assert backoff_seconds(3, settings, rng=lambda: 1.0) == 4.0
    assert backoff_seconds(9, settings, rng=lambda: 1.0) == 10.0
    assert backoff_seconds(3, settings, rng=lambda: 0.5) == 2.0


@pytest.mark.parametrize(("tally", "reason"), [
    (Tally(100, 6, 0), "FailedRowsExceeded"),
    (Tally(900, 5, 0), None),  # 5 <= 5 rows, rate 0.0055 < 0.01
    (Tally(300, 5, 0), "FailureRateExceeded"),  # 5/305 after the 200-row sample
    (Tally(100, 5, 0), None),  # below the sample size
    (Tally(10_000, 1, 3), "ConsecutiveFailedBatchesExceeded"),
])
def test_budget(tally: Tally, reason: str | None) -> None:
    thresholds = HaltThresholds(failed_rows=5, failure_rate=0.01, min_sample=200,
                                consecutive_failed_batches=3)
    if reason is None:
        check_budget(tally, thresholds)
    else:
        with pytest.raises(Halted) as raised:
            check_budget(tally, thresholds)
        assert raised.value.reason == reason


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class OperationalError(Exception):
    pass


@pytest.mark.parametrize(("sqlstate", "kind"), [
    ("55P03", ErrorKind.LOCK_TIMEOUT), ("57014", ErrorKind.STATEMENT_TIMEOUT),
    ("40P01", ErrorKind.DEADLOCK), ("40001", ErrorKind.SERIALIZATION),
    ("57P01", ErrorKind.SHUTDOWN), ("08006", ErrorKind.CONNECTION),
    ("23505", ErrorKind.ROW_ERROR), ("22P02", ErrorKind.ROW_ERROR), ("42703", ErrorKind.ROW_ERROR),
])
def test_classify_by_sqlstate_through_wrappers(sqlstate: str, kind: ErrorKind) -> None:
    wrapped = RuntimeError("django wrapper")
    wrapped.__cause__ = _PgError(sqlstate)
    assert classify(wrapped) is kind


@pytest.mark.parametrize(("errno", "kind"), [
    (1205, ErrorKind.LOCK_TIMEOUT), (1213, ErrorKind.DEADLOCK),
    (1969, ErrorKind.STATEMENT_TIMEOUT), (3024, ErrorKind.STATEMENT_TIMEOUT),
    (2006, ErrorKind.CONNECTION), (2013, ErrorKind.CONNECTION), (1927, ErrorKind.CONNECTION),
    (1053, ErrorKind.SHUTDOWN), (1062, ErrorKind.ROW_ERROR), (1366, ErrorKind.ROW_ERROR),
    (4025, ErrorKind.ROW_ERROR),  # MariaDB's CHECK constraint failed
])
def test_classify_mariadb_error_numbers_through_djangos_wrapper(errno: int,
                                                                kind: ErrorKind) -> None:
    """mysqlclient's exceptions carry the server's error number as args[0]; Django wraps
    them in its own, with the driver's as the cause."""
    import MySQLdb
    from django.db.utils import OperationalError as DjangoOperationalError

    wrapped = DjangoOperationalError(errno, "as the server said it")
    wrapped.__cause__ = MySQLdb.OperationalError(errno, "as the server said it")
    assert classify(wrapped) is kind


def test_a_closed_connection_under_pymysql_is_a_lost_connection() -> None:
    """PyMySQL says a connection the server closed is closed with InterfaceError(0, ''):
    error 0 is the client's, not a row's."""
    import MySQLdb

    assert classify(MySQLdb.InterfaceError(0, "")) is ErrorKind.CONNECTION
    assert classify(MySQLdb.OperationalError(2000, "Unknown MySQL error")) is \
        ErrorKind.ROW_ERROR  # a client error that says nothing of the connection


def test_classify_sqlite_and_plain_exceptions() -> None:
    assert classify(OperationalError("database is locked")) is ErrorKind.LOCK_TIMEOUT
    assert classify(OperationalError("server closed the connection unexpectedly")) is (
        ErrorKind.CONNECTION)
    assert classify(ValueError("user code")) is ErrorKind.ROW_ERROR
    assert not ErrorKind.ROW_ERROR.retryable and ErrorKind.DEADLOCK.retryable


def test_plan_caps_batches_at_the_locked_fraction_of_the_rows_to_do() -> None:
    sizer = BatchSizer(BatchSettings(size=5000, min_size=100, max_size=50_000,
                                     max_locked_fraction=0.005))
    sizer.plan(400_000)  # 0.5% of 400k = 2000
    assert sizer.size == 2000
    for _ in range(5):
        sizer.observe(sizer.size, 0.001)
    assert sizer.size == 2000
    tiny = BatchSizer(BatchSettings(size=1000, min_size=100, max_locked_fraction=0.005))
    tiny.plan(1000)
    assert tiny.size == 100  # never below min_size
    uncapped = BatchSizer(BatchSettings(size=1000, max_locked_fraction=0))
    uncapped.plan(1000)
    assert uncapped.size == 1000


@pytest.mark.parametrize(("caller", "knob", "go_on"), [
    (Caller.MIGRATE, "CHUNKWISE_HALT_FAILED_ROWS", "then run migrate again"),
    (Caller.COMMAND, "--halt-failed-rows", "then run chunkwise_run again"),
    (Caller.POD, "spec.haltOn.failedRows", "a changed spec starts a new run from the checkpoint"),
])
def test_a_halt_names_the_threshold_as_its_caller_sets_it(caller: Caller, knob: str,
                                                          go_on: str) -> None:
    """A halt halts again at once if run again as it is: its message names the knob the
    caller's user turns and what to change."""
    with pytest.raises(Halted) as raised:
        check_budget(Tally(100, 6, 0), HaltThresholds(failed_rows=5), caller)
    assert raised.value.message == (
        f"6 rows failed, more than {knob}=5; fix the code or the data that make rows fail, "
        f"or raise {knob}; {go_on}" + ("" if caller is Caller.POD else
                                       ": it resumes from the checkpoint"))


def test_a_run_in_a_datamigration_pod_is_told_in_the_specs_terms() -> None:
    assert Caller.of({"CHUNKWISE_RESOURCE": "shop/count-visit"}, command=True) is Caller.POD
    assert Caller.of({}, command=True) is Caller.COMMAND
    assert Caller.of({}, command=False) is Caller.MIGRATE


def test_the_cap_on_locked_rows_is_said_only_when_it_lowers_the_size_asked_for() -> None:
    """`batches capped at 100 rows ... (batch.size 100 -> 100)` was said when the cap
    lowered nothing; when it does lower the size, the settings have the caller's names."""
    asked_100 = BatchSizer(BatchSettings(size=100, min_size=100, max_size=50_000))
    assert asked_100.plan(3000, Caller.COMMAND) is None and asked_100.size == 100
    asked_1000 = BatchSizer(BatchSettings(size=1000, min_size=100, max_size=50_000))
    assert asked_1000.plan(3000, Caller.COMMAND) == (
        "batches capped at 100 rows, below --max-batch-size 50,000: --max-locked-fraction "
        "0.005 of 3,000 rows to do (--batch-size 1,000 -> 100; set --max-locked-fraction to 0 "
        "to lift the cap)")
    assert asked_1000.size == 100
