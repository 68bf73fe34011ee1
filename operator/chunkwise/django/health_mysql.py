"""The engine's health probe on MariaDB and MySQL: the server's status and InnoDB's
transactions, read between batches.

``Threads_running`` (less this session) is what gh-ost's ``max-load`` watches, the
counterpart of PostgreSQL's active backends; the oldest transaction of another session
comes from ``information_schema.INNODB_TRX`` (every session's only with the ``PROCESS``
privilege, which docs/how-to/mariadb.md says). A primary does not know its replicas' lag:
it is read from each replica named in settings.CHUNKWISE_REPLICAS (``SHOW REPLICA
STATUS``, the worst ``Seconds_Behind_Master``; a replica whose replication is stopped
has no lag to tell, and fails the reading rather than read as none, as gh-ost does). The
user's throttle query runs in a read-only transaction under ``timeouts.statement``, as on
PostgreSQL."""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction

from chunkwise.engine import HealthReading, RunSettings, wanted_figures

from .backends.mysql import replicas
from .config import REPLICAS
from .health import query_value

__all__ = ["MySQLHealthProbe"]

_FIGURES = {
    "active_backends": "SELECT VARIABLE_VALUE - 1 FROM information_schema.GLOBAL_STATUS "
                       "WHERE VARIABLE_NAME = 'THREADS_RUNNING'",
    "transaction_age": "SELECT COALESCE(MAX(TIMESTAMPDIFF(SECOND, trx_started, NOW())), 0) "
                       "FROM information_schema.INNODB_TRX "
                       "WHERE trx_mysql_thread_id <> CONNECTION_ID()",
}


class MySQLHealthProbe:
    """Reads the health of the server ``alias`` points at."""

    def __init__(self, alias: str, table: str) -> None:
        self._alias = alias
        self._table = table

    def read(self, settings: RunSettings) -> HealthReading:
        # autovacuum (and replication lag without replicas): refused before the run
        # (MySQLBackend.unreadable)
        asked = wanted_figures(settings)
        wanted = [name for name in asked if name in _FIGURES]
        figures: dict[str, Any] = {}
        if wanted:
            with connections[self._alias].cursor() as cursor:
                cursor.execute("SELECT " + ", ".join(f"({_FIGURES[name]})" for name in wanted))
                figures = dict(zip(wanted, cursor.fetchone(), strict=True))
        query = settings.throttle.query.strip()
        return HealthReading(
            active_backends=None if "active_backends" not in figures
            else int(figures["active_backends"]),
            transaction_age=None if "transaction_age" not in figures
            else float(figures["transaction_age"]),
            replication_lag=self._lag() if "replication_lag" in asked else None,
            query_value=self._query(query, settings.timeouts.statement) if query else None)

    def _lag(self) -> float:
        worst = 0.0
        for alias in replicas(self._alias):
            with connections[alias].cursor() as cursor:
                cursor.execute("SHOW REPLICA STATUS")
                row = cursor.fetchone()
                names = [column[0] for column in cursor.description or ()]
            status = dict(zip(names, row, strict=True)) if row else {}
            lag = status.get("Seconds_Behind_Master", status.get("Seconds_Behind_Source"))
            if lag is None:
                state = ", ".join(f"{name}={status[name]}" for name in names
                                  if name.endswith(("_IO_Running", "_SQL_Running"))) \
                    or "not a replica"
                raise RuntimeError(f"replica {alias!r} (settings.{REPLICAS}) has no "
                                   f"replication lag to tell: {state}")
            worst = max(worst, float(lag))
        return worst

    def _query(self, sql: str, statement_timeout: float) -> float:
        connection = connections[self._alias]
        with transaction.atomic(using=self._alias), connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION READ ONLY")
            if connection.mysql_is_mariadb:  # type: ignore[attr-defined]
                sql = f"SET STATEMENT max_statement_time = {statement_timeout:.3f} FOR {sql}"
            cursor.execute(sql)
            return query_value(cursor.fetchone() if cursor.description else None)
