"""Run settings, grouped by concern.

Every field carries its unit in its name or comment, its default, and the
reason for that default. Validation happens on construction and names the
field and what was expected, so bad input from flags, env or a DataMigration
spec fails before any row is touched.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from chunkwise.contract import Env

__all__ = [
    "TUNABLES",
    "BatchSettings",
    "Caller",
    "HaltThresholds",
    "RetrySettings",
    "RunSettings",
    "SettingsError",
    "ThrottleSettings",
    "Timeouts",
    "Tunable",
    "parse_duration",
]


class SettingsError(ValueError):
    """A setting has a value outside what it accepts. The message names the field; ``field``
    is its spec path (``batch.size``) when it starts with that, so that a caller can name it
    as its user sets it instead."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def named(self, name: str) -> SettingsError:
        """The same error, its field called ``name``."""
        if self.field is None:
            return self
        return SettingsError(name + str(self)[len(self.field):], self.field)


_DURATION = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float | int, *, field_name: str) -> float:
    """Parse "500ms", "2s", "1.5m", "1h" or a plain number of seconds into seconds."""
    if isinstance(value, bool):
        raise SettingsError(
            f"{field_name}: expected a duration like '500ms' or '2s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise SettingsError(
                f"{field_name}: expected a duration like '500ms', '2s' or '1m', got {value!r}"
            )
        seconds = float(match["num"]) * _UNIT_SECONDS[match["unit"]]
    if seconds < 0:
        raise SettingsError(f"{field_name}: expected a duration >= 0, got {value!r}")
    return seconds


def _require(condition: bool, field_name: str, expected: str, got: object) -> None:
    if not condition:
        raise SettingsError(f"{field_name}: expected {expected}, got {got!r}", field_name)


def _check_bounds(settings: object, group: str) -> None:
    """Every field of ``group`` against its bounds in :data:`TUNABLES` (the one place
    that states them; the CRD is tested against the same table)."""
    for tunable in TUNABLES:
        if tunable.group == group:
            tunable.check(getattr(settings, tunable.field))


@dataclass(frozen=True)
class BatchSettings:
    """How many rows a batch takes and how fast batches follow each other."""

    #: rows in the first batch; the tuner moves it toward ``target_duration``.
    size: int = 1000
    #: rows; the tuner never goes below this (tiny batches are all overhead).
    min_size: int = 100
    #: rows; caps row locks held at once and the size of one transaction.
    max_size: int = 50_000
    #: seconds one batch should take; pt-online-schema-change's 0.5 s chunk-time rule:
    #: short enough that row locks are held briefly, long enough to amortise a commit.
    target_duration: float = 0.5
    #: seconds to sleep between batches; gives replicas and vacuum room. 0 = none.
    pause: float = 0.0
    #: rows per second cap over the whole run. 0 = no cap.
    max_rows_per_second: float = 0.0
    #: largest share of the rows to do that one batch may lock (0.005 = 0.5%). Application
    #: writes to random rows then hit a locked row less than 1 time in 100, so their p99
    #: does not see the migration. 0 = no such cap (only max_size).
    max_locked_fraction: float = 0.005
    #: run the worker's thread at the lowest CPU priority (Linux SCHED_IDLE) so that the
    #: application and the database on the same machine get a core first. Off by default:
    #: on a saturated machine an idle-priority worker crawls, and keeps its batch's row
    #: locks for as long; a Kubernetes pod's CPU share is set by its requests instead.
    yield_cpu: bool = False

    def __post_init__(self) -> None:
        _check_bounds(self, "batch")
        _require(
            self.min_size <= self.size <= self.max_size,
            "batch.size",
            f"minSize ({self.min_size}) <= size <= maxSize ({self.max_size})",
            self.size,
        )


@dataclass(frozen=True)
class Timeouts:
    """Per-statement limits, set with ``SET LOCAL`` inside every batch transaction."""

    #: seconds to wait for a row lock before giving up and retrying the batch; keeps the
    #: migration from queueing behind (and in front of) application transactions.
    lock: float = 2.0
    #: seconds any one statement may run; a runaway batch is cut and halved, not left running.
    statement: float = 30.0

    def __post_init__(self) -> None:
        _check_bounds(self, "timeouts")


@dataclass(frozen=True)
class RetrySettings:
    """Retries of a batch that failed for a reason that retrying can fix."""

    #: attempts per batch, the first included; past this the run stops (exit 1, resumable).
    max_attempts: int = 5
    #: seconds before the first retry; doubles each attempt, with full jitter.
    backoff: float = 1.0
    #: seconds; cap of one backoff sleep, so a long outage is polled, not waited out blind.
    max_backoff: float = 30.0
    #: consecutive lock/statement timeouts after which the batch size is halved: one can be
    #: bad luck, two in a row say the batch holds its locks too long.
    halve_after_timeouts: int = 2

    def __post_init__(self) -> None:
        _check_bounds(self, "retries")
        _require(self.max_backoff >= self.backoff, "retries.maxBackoff",
                 f"a duration >= retries.backoff ({self.backoff})", self.max_backoff)


@dataclass(frozen=True)
class HaltThresholds:
    """The error budget: crossing any one stops the run in an orderly way."""

    #: failed (skipped and recorded) rows in total. 0 = halt at the first failed row.
    failed_rows: int = 100
    #: failed rows / rows attempted, checked once ``min_sample`` rows were attempted.
    failure_rate: float = 0.01
    #: rows attempted before ``failure_rate`` is checked; avoids halting on 1 bad row of 3.
    min_sample: int = 1000
    #: batches in a row with at least one failed row.
    consecutive_failed_batches: int = 5
    #: critical load, like gh-ost's --critical-load: above these the run halts instead of
    #: waiting (the throttle thresholds are in ThrottleSettings). 0 = off each: what is
    #: critical depends on the database's size, so no default could be right.
    #: active client backends (pg_stat_activity state 'active', this one excluded)
    active_backends: int = 0
    #: seconds of replay lag on the worst replica (pg_stat_replication.replay_lag)
    replication_lag: float = 0.0
    #: seconds the oldest open transaction of another session has been running
    transaction_age: float = 0.0
    #: undo log entries InnoDB has yet to purge (MariaDB/MySQL)
    history_list_length: int = 0

    def __post_init__(self) -> None:
        _check_bounds(self, "halt_on")


@dataclass(frozen=True)
class ThrottleSettings:
    """Database health, read before a batch (at most every ``check_interval``): above a
    threshold the worker waits instead of running the next batch. 0 (false, "") = off,
    the default for each: the right level depends on the database, and reading other
    sessions' figures needs the pg_monitor role, which a run must not require."""

    #: active client backends (pg_stat_activity state 'active', this one excluded); a
    #: busy database gets the migration's connection back for its own work.
    active_backends: int = 0
    #: seconds of replay lag on the worst replica (pg_stat_replication.replay_lag, read
    #: on the primary); batches write WAL faster than a busy replica may replay it.
    replication_lag: float = 0.0
    #: seconds the oldest open transaction of another session has been running; while it
    #: runs, vacuum cannot remove the dead rows every batch leaves behind.
    transaction_age: float = 0.0
    #: undo log entries InnoDB has yet to purge (MariaDB/MySQL's history list length):
    #: every batch adds its rows' old versions, and while purge lags, reads and writes
    #: walk longer version chains (Percona's tools throttle on it too).
    history_list_length: int = 0
    #: wait while autovacuum works on the migrated table: GitLab's batched migrations do,
    #: so vacuum catches up with the dead rows instead of racing them.
    autovacuum: bool = False
    #: SQL whose first column of its first row, when a number above 0 (or true), says
    #: "slow down" (gh-ost's --throttle-query); run read-only under timeouts.statement.
    query: str = ""
    #: seconds between two health reads, and between two looks while throttled: a read
    #: of pg_stat_activity per batch would cost more than it tells.
    check_interval: float = 1.0

    def __post_init__(self) -> None:
        _check_bounds(self, "throttle")


@dataclass(frozen=True)
class RunSettings:
    """Everything a run of one operation is tuned by."""

    batch: BatchSettings = field(default_factory=BatchSettings)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: RetrySettings = field(default_factory=RetrySettings)
    halt_on: HaltThresholds = field(default_factory=HaltThresholds)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)

    def __post_init__(self) -> None:
        for halt, throttle in critical_pairs():
            slow = getattr(self.throttle, throttle.field)
            stop = getattr(self.halt_on, halt.field)
            _require(not (slow and stop) or stop > slow, halt.spec,
                     f"a value above {throttle.spec} ({slow:g}): the run waits at the "
                     f"throttle level before it halts at this one", stop)


# -- the tunables table ------------------------------------------------------------------

Kind = Literal["integer", "duration", "fraction", "boolean", "text"]


def _parse_int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {value!r}") from None


def _parse_fraction(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise SettingsError(f"{name}: expected a fraction such as 0.01, got {value!r}") from None


def _parse_duration(value: str, name: str) -> float:
    return parse_duration(value, field_name=name)


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def parse_boolean(value: str, name: str) -> bool:
    """A yes/no from an env var, flag or setting text: the one parser of every boolean
    chunkwise reads. Anything it does not know is refused naming ``name``: guessing made
    ``CHUNKWISE_DRY_RUN=False`` a dry run once."""
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{name}: expected true or false (1/0, yes/no, on/off), "
                        f"got {value!r}")


def _parse_text(value: str, name: str) -> str:
    return value


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "integer": _parse_int, "duration": _parse_duration, "fraction": _parse_fraction,
    "boolean": parse_boolean, "text": _parse_text,
}


@dataclass(frozen=True)
class Tunable:
    """One setting a user may tune, and every name it goes by.

    The command-line flag is ``--<option>``, the environment variable
    ``CHUNKWISE_<OPTION>``, the DataMigration field ``spec.<spec>``; the operator maps the
    spec field to the variable, and the CRD states the same default and bounds (a test
    compares them). The default is the settings dataclass's own.
    """

    option: str  #: flag without dashes; upper-cased with CHUNKWISE_ it is the env var
    spec: str  #: the DataMigration spec path ("batch.minSize"); also names errors
    group: str  #: field of RunSettings holding the group
    field: str  #: field of that group
    kind: Kind
    help: str
    minimum: float | None = None
    maximum: float | None = None
    #: the minimum itself is not allowed (a duration that must be above zero)
    exclusive_minimum: bool = False

    @property
    def env(self) -> str:
        return Env.PREFIX + self.option.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        """The argparse destination of the flag."""
        return self.option.replace("-", "_")

    @property
    def spec_path(self) -> tuple[str, str]:
        group, key = self.spec.split(".")
        return group, key

    @property
    def default(self) -> Any:
        return getattr(getattr(RunSettings(), self.group), self.field)

    def parse(self, raw: str, name: str) -> Any:
        """A text value (flag, env var) as the settings field's type; errors say ``name``."""
        return _PARSERS[self.kind](raw, name)

    def expected(self) -> str:
        noun = {"integer": "an integer", "duration": "a duration", "fraction": "a fraction",
                "boolean": "true or false", "text": "text"}[self.kind]
        if self.kind == "fraction":
            return f"{noun} between {_num(self.minimum)} and {_num(self.maximum)}"
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '>='} {_num(self.minimum)}")
        if self.maximum is not None:
            parts.append(f"<= {_num(self.maximum)}")
        return f"{noun} {' and '.join(parts)}".strip()

    def check(self, value: Any) -> None:
        if self.kind in ("boolean", "text"):
            wanted = bool if self.kind == "boolean" else str
            _require(isinstance(value, wanted), self.spec, self.expected(), value)
            return
        low, high = self.minimum, self.maximum
        ok = (low is None or (value > low if self.exclusive_minimum else value >= low)) and \
            (high is None or value <= high)
        _require(ok, self.spec, self.expected(), value)


class Caller(enum.Enum):
    """Who runs an operation, and so the names its user knows each tunable by and how a
    stopped run goes on: the one place a message that names a tunable or says how to go on
    takes them from. A message in another caller's words sends people looking for a knob
    they do not have (``haltOn.failedRows`` means nothing to ``migrate``)."""

    #: ``manage.py migrate`` (and ``EnsureBatchedComplete``): the CHUNKWISE_* environment
    MIGRATE = "migrate"
    #: ``manage.py chunkwise_run`` (or ``chunkwise_plan``) by hand: its flags
    COMMAND = "chunkwise_run"
    #: ``chunkwise_run`` in a DataMigration's Job (``CHUNKWISE_RESOURCE`` set): the spec
    POD = "DataMigration"

    @classmethod
    def of(cls, env: Mapping[str, str], command: bool) -> Caller:
        """The caller of a run in a process whose environment is ``env``; ``command``:
        run by a management command rather than by ``migrate``."""
        if env.get(Env.RESOURCE):
            return cls.POD
        return cls.COMMAND if command else cls.MIGRATE

    def knob(self, tunable: Tunable) -> str:
        """The name this caller's user sets ``tunable`` by."""
        if self is Caller.MIGRATE:
            return tunable.env
        if self is Caller.COMMAND:
            return f"--{tunable.option}"
        return f"spec.{tunable.spec}"

    def given(self, tunable: Tunable, source: str) -> str:
        """How an error names a value the user gave: what it is and where it came from
        (``batch.size (--batch-size)``, ``batch.size (CHUNKWISE_BATCH_SIZE)``); in a pod,
        where the operator turned the spec into the environment, the spec field."""
        return f"spec.{tunable.spec}" if self is Caller.POD else f"{tunable.spec} ({source})"

    def go_on(self) -> str:
        """How a stopped run goes on once what stopped it is changed."""
        return {Caller.MIGRATE: "then run migrate again: it resumes from the checkpoint",
                Caller.COMMAND: "then run chunkwise_run again: it resumes from the checkpoint",
                Caller.POD: "a changed spec starts a new run from the checkpoint"}[self]


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and value == int(value) else str(value)


def _t(option: str, spec: str, field_path: str, kind: Kind, help: str, **bounds: Any) -> Tunable:
    group, name = field_path.split(".")
    return Tunable(option, spec, group, name, kind, help, **bounds)


#: Every tunable, once. Order is the order of ``--help`` and of the settings reference (docs/).
TUNABLES: tuple[Tunable, ...] = (
    _t("batch-size", "batch.size", "batch.size", "integer", "rows in the first batch",
       minimum=1),
    _t("min-batch-size", "batch.minSize", "batch.min_size", "integer", "smallest batch",
       minimum=1),
    _t("max-batch-size", "batch.maxSize", "batch.max_size", "integer", "largest batch",
       minimum=1, maximum=1_000_000),
    _t("target-duration", "batch.targetDuration", "batch.target_duration", "duration",
       "batch duration the size tunes toward, e.g. 500ms", minimum=0, exclusive_minimum=True),
    _t("pause", "batch.pause", "batch.pause", "duration", "sleep between batches", minimum=0),
    _t("max-rows-per-second", "batch.maxRowsPerSecond", "batch.max_rows_per_second",
       "integer", "rows/s cap, 0 = none", minimum=0),
    _t("max-locked-fraction", "batch.maxLockedFraction", "batch.max_locked_fraction",
       "fraction", "largest share of the rows one batch may lock, 0 = no cap",
       minimum=0, maximum=1),
    _t("yield-cpu", "batch.yieldCpu", "batch.yield_cpu", "boolean",
       "run at the lowest CPU priority (Linux SCHED_IDLE), true/false"),
    _t("lock-timeout", "timeouts.lock", "timeouts.lock", "duration",
       "wait for row locks at most this long per try (PostgreSQL)",
       minimum=0, exclusive_minimum=True),
    _t("statement-timeout", "timeouts.statement", "timeouts.statement", "duration",
       "cut any one statement after this long (PostgreSQL)", minimum=0, exclusive_minimum=True),
    _t("max-attempts", "retries.maxAttempts", "retries.max_attempts", "integer",
       "tries per batch for retryable errors", minimum=1, maximum=100),
    _t("backoff", "retries.backoff", "retries.backoff", "duration",
       "first retry delay; doubles, with jitter", minimum=0),
    _t("max-backoff", "retries.maxBackoff", "retries.max_backoff", "duration",
       "longest retry delay", minimum=0),
    _t("halve-after-timeouts", "retries.halveAfterTimeouts", "retries.halve_after_timeouts",
       "integer", "halve the batch after this many timeouts in a row", minimum=1),
    _t("halt-failed-rows", "haltOn.failedRows", "halt_on.failed_rows", "integer",
       "halt when more rows than this have failed", minimum=0),
    _t("halt-failure-rate", "haltOn.failureRate", "halt_on.failure_rate", "fraction",
       "halt when failed/attempted passes this fraction", minimum=0, maximum=1),
    _t("halt-min-sample", "haltOn.minSample", "halt_on.min_sample", "integer",
       "rows attempted before the failure rate counts", minimum=0),
    _t("halt-consecutive-failed-batches", "haltOn.consecutiveFailedBatches",
       "halt_on.consecutive_failed_batches", "integer",
       "halt after this many failing batches in a row", minimum=1),
    _t("halt-active-backends", "haltOn.activeBackends", "halt_on.active_backends", "integer",
       "halt (critical load) above this many active backends, 0 = off", minimum=0),
    _t("halt-replication-lag", "haltOn.replicationLag", "halt_on.replication_lag",
       "duration", "halt (critical load) above this replica replay lag, 0 = off", minimum=0),
    _t("halt-transaction-age", "haltOn.transactionAge", "halt_on.transaction_age",
       "duration", "halt (critical load) when another transaction is older, 0 = off",
       minimum=0),
    _t("halt-history-list-length", "haltOn.historyListLength", "halt_on.history_list_length",
       "integer", "halt (critical load) above this InnoDB history list length, 0 = off",
       minimum=0),
    _t("throttle-active-backends", "throttle.activeBackends", "throttle.active_backends",
       "integer", "wait while more backends than this are active, 0 = off", minimum=0),
    _t("throttle-replication-lag", "throttle.replicationLag", "throttle.replication_lag",
       "duration", "wait while a replica lags more than this, 0 = off", minimum=0),
    _t("throttle-transaction-age", "throttle.transactionAge", "throttle.transaction_age",
       "duration", "wait while another transaction is older than this, 0 = off", minimum=0),
    _t("throttle-history-list-length", "throttle.historyListLength",
       "throttle.history_list_length", "integer",
       "wait while InnoDB's history list is longer than this (MariaDB/MySQL), 0 = off",
       minimum=0),
    _t("throttle-autovacuum", "throttle.autovacuum", "throttle.autovacuum", "boolean",
       "wait while autovacuum works on the migrated table (true/false)"),
    _t("throttle-query", "throttle.query", "throttle.query", "text",
       "SQL; wait while its first value is above 0 (read-only)"),
    _t("throttle-check-interval", "throttle.checkInterval", "throttle.check_interval",
       "duration", "how often database health is read", minimum=0, exclusive_minimum=True),
)


def tunable_named(spec: str) -> Tunable:
    """The tunable whose spec path is ``spec`` (``haltOn.failedRows``)."""
    return next(t for t in TUNABLES if t.spec == spec)


def critical_pairs() -> list[tuple[Tunable, Tunable]]:
    """(haltOn tunable, throttle tunable) of every health figure that has both a critical
    and a throttle level (the same field name in both groups)."""
    throttles = {t.field: t for t in TUNABLES if t.group == "throttle"}
    return [(t, throttles[t.field]) for t in TUNABLES
            if t.group == "halt_on" and t.field in throttles]


def spec_env(spec: Mapping[str, Any]) -> dict[str, str]:
    """The tunables a DataMigration spec sets, as the ``CHUNKWISE_*`` variables that carry
    them to the worker (``spec.batch.size`` -> ``CHUNKWISE_BATCH_SIZE``)."""
    env: dict[str, str] = {}
    for tunable in TUNABLES:
        group, key = tunable.spec_path
        value = (spec.get(group) or {}).get(key)
        if value is not None:
            env[tunable.env] = str(value)
    return env


def changed_tunables(old: RunSettings, new: RunSettings) -> dict[str, tuple[Any, Any]]:
    """``spec`` name -> (old, new) of every tunable that differs."""
    return {t.spec: (before, after) for t in TUNABLES
            if (before := getattr(getattr(old, t.group), t.field))
            != (after := getattr(getattr(new, t.group), t.field))}
