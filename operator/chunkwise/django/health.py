"""The engine's health probe on PostgreSQL: its own statistics views, read between batches.

One statement reads what has a threshold, and only that: active client backends and the oldest
transaction (``pg_stat_activity``), the worst replica's replay lag
(``pg_stat_replication`` on the primary), autovacuum working on the migrated table
(``pg_stat_progress_vacuum``). Other sessions' rows in those views are visible in full
only to roles with ``pg_monitor`` (or ``pg_read_all_stats``); without it they read as
nothing to wait for, which docs/how-to/throttling.md says. The user's throttle query runs
after it, in a read-only transaction under ``timeouts.statement``, so it can neither write
nor hang a run.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from django.db import connections, transaction

from chunkwise.engine import HealthReading, RunSettings, SettingsError, wanted_figures

from .prefetch import helper_name

__all__ = ["PostgresHealthProbe", "query_value"]

N = TypeVar("N", int, float)

#: other clients' sessions: neither the run's own nor this process's read-ahead's, by
#: its name (prefetch.py), the parameter
_SESSIONS = ("backend_type = 'client backend' AND pid <> pg_backend_pid() "
             "AND application_name IS DISTINCT FROM %s")
#: one scalar subquery per figure; a reading asks only for those with a threshold (planning
#: all four views each time cost about 1 ms, several times their execution)
_FIGURES = {
    "active_backends": "SELECT count(*) FROM pg_stat_activity "
                       f"WHERE state = 'active' AND {_SESSIONS}",
    "replication_lag": "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) "
                       "FROM pg_stat_replication",
    "transaction_age": "SELECT coalesce(extract(epoch FROM max(now() - xact_start)), 0) "
                       f"FROM pg_stat_activity WHERE xact_start IS NOT NULL AND {_SESSIONS}",
    "autovacuum": "SELECT extract(epoch FROM now() - a.xact_start)::int || 's (' || v.phase "
                  "|| ')' FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a "
                  "ON a.pid = v.pid WHERE v.relid = %s::regclass "
                  "AND a.backend_type = 'autovacuum worker' LIMIT 1",
}


class PostgresHealthProbe:
    """Reads the health of the database ``alias`` points at, for the table ``table``."""

    def __init__(self, alias: str, table: str) -> None:
        self._alias = alias
        self._table = table

    def read(self, settings: RunSettings) -> HealthReading:
        figures: dict[str, Any] = {}
        wanted = wanted_figures(settings)
        if wanted:
            connection = connections[self._alias]
            # each figure's parameters, in the order of its placeholders
            own = {"autovacuum": [connection.ops.quote_name(self._table)],
                   "active_backends": [helper_name()], "transaction_age": [helper_name()]}
            params = [param for name in wanted for param in own.get(name, [])]
            with connection.cursor() as cursor:
                cursor.execute("SELECT " + ", ".join(f"({_FIGURES[name]})" for name in wanted),
                               params)
                figures = dict(zip(wanted, cursor.fetchone(), strict=True))
        vacuum = figures.get("autovacuum")
        query = settings.throttle.query.strip()
        return HealthReading(
            active_backends=_number(figures.get("active_backends"), int),
            replication_lag=_number(figures.get("replication_lag"), float),
            transaction_age=_number(figures.get("transaction_age"), float),
            autovacuum=f"autovacuum on {self._table} for {vacuum}" if vacuum else None,
            query_value=self._query(query, settings.timeouts.statement) if query else None)

    def _query(self, sql: str, statement_timeout: float) -> float:
        with transaction.atomic(using=self._alias), \
                connections[self._alias].cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            cursor.execute("SELECT set_config('statement_timeout', %s, true)",
                           [f"{int(statement_timeout * 1000)}ms"])
            cursor.execute(sql)
            row = cursor.fetchone() if cursor.description else None
        return query_value(row)


def query_value(row: Any) -> float:
    """The throttle query's first value (of the row it returned) as a number."""
    value = None if row is None else row[0]
    if value is None:
        return 0.0
    if isinstance(value, bool | int | float | Decimal):
        return float(value)
    raise SettingsError(f"throttle.query: expected its first value to be a number or a "
                        f"boolean (above 0 or true waits), got {value!r}")


def _number(value: Any, kind: Callable[[Any], N]) -> N | None:
    return None if value is None else kind(value)
