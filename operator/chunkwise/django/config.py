"""Run settings from three places, in order: the operation's arguments, then
``CHUNKWISE_*`` environment variables (how the operator's Job passes the
DataMigration spec to the pod, and how ``migrate`` can be tuned), then
command-line flags. One table defines every tunable once for all three.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from chunkwise.engine import RunSettings, SettingsError, parse_duration

__all__ = ["TUNABLES", "Tunable", "add_arguments", "resolve_settings"]


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {value!r}") from None


def _float(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise SettingsError(f"{name}: expected a number, got {value!r}") from None


def _duration(value: str, name: str) -> float:
    return parse_duration(value, field_name=name)


@dataclass(frozen=True)
class Tunable:
    option: str  # the flag without dashes, and (upper-cased, CHUNKWISE_ prefix) the env var
    group: str  # field of RunSettings
    field: str  # field of that group
    spec: str  # the DataMigration spec path, for error messages
    parse: Callable[[str, str], Any]
    help: str

    @property
    def env(self) -> str:
        return "CHUNKWISE_" + self.option.upper().replace("-", "_")


TUNABLES: tuple[Tunable, ...] = (
    Tunable("batch-size", "batch", "size", "batch.size", _int, "rows in the first batch"),
    Tunable("min-batch-size", "batch", "min_size", "batch.minSize", _int, "smallest batch"),
    Tunable("max-batch-size", "batch", "max_size", "batch.maxSize", _int, "largest batch"),
    Tunable("target-duration", "batch", "target_duration", "batch.targetDuration", _duration,
            "batch duration the size tunes toward, e.g. 500ms"),
    Tunable("pause", "batch", "pause", "batch.pause", _duration, "sleep between batches"),
    Tunable("max-rows-per-second", "batch", "max_rows_per_second", "batch.maxRowsPerSecond",
            _float, "rows/s cap, 0 = none"),
    Tunable("max-locked-fraction", "batch", "max_locked_fraction", "batch.maxLockedFraction",
            _float, "largest share of the rows one batch may lock, 0 = no cap"),
    Tunable("lock-timeout", "timeouts", "lock", "timeouts.lock", _duration,
            "wait for row locks at most this long per try (PostgreSQL)"),
    Tunable("statement-timeout", "timeouts", "statement", "timeouts.statement", _duration,
            "cut any one statement after this long (PostgreSQL)"),
    Tunable("max-attempts", "retries", "max_attempts", "retries.maxAttempts", _int,
            "tries per batch for retryable errors"),
    Tunable("backoff", "retries", "backoff", "retries.backoff", _duration,
            "first retry delay; doubles, with jitter"),
    Tunable("halt-failed-rows", "halt_on", "failed_rows", "haltOn.failedRows", _int,
            "halt when more rows than this have failed"),
    Tunable("halt-failure-rate", "halt_on", "failure_rate", "haltOn.failureRate", _float,
            "halt when failed/attempted passes this fraction"),
    Tunable("halt-min-sample", "halt_on", "min_sample", "haltOn.minSample", _int,
            "rows attempted before the failure rate counts"),
    Tunable("halt-consecutive-failed-batches", "halt_on", "consecutive_failed_batches",
            "haltOn.consecutiveFailedBatches", _int,
            "halt after this many failing batches in a row"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("tuning (each also read from its CHUNKWISE_* env var)")
    for tunable in TUNABLES:
        group.add_argument(f"--{tunable.option}", dest=tunable.option.replace("-", "_"),
                           metavar="VALUE", help=f"{tunable.help} [env {tunable.env}]")


def resolve_settings(
    base: RunSettings,
    env: Mapping[str, str],
    flags: Mapping[str, Any] | None = None,
) -> RunSettings:
    """``base`` overridden by env, then by flags; errors name the flag/env and spec field."""
    changes: dict[str, dict[str, Any]] = {}
    for tunable in TUNABLES:
        raw = None
        source = ""
        if flags and flags.get(tunable.option.replace("-", "_")) is not None:
            raw, source = str(flags[tunable.option.replace("-", "_")]), f"--{tunable.option}"
        elif env.get(tunable.env, "") != "":
            raw, source = env[tunable.env], tunable.env
        if raw is None:
            continue
        name = f"{tunable.spec} ({source})"
        changes.setdefault(tunable.group, {})[tunable.field] = tunable.parse(raw, name)
    groups = {
        group: dataclasses.replace(getattr(base, group), **fields)
        for group, fields in changes.items()
    }
    return dataclasses.replace(base, **groups)
