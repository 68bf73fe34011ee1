"""The engine's health probe on MariaDB and MySQL: the server's status and InnoDB's
transactions, read between batches.

``Threads_running`` (less this session) is what gh-ost's ``max-load`` watches, the
counterpart of PostgreSQL's active backends; the oldest transaction of another session
comes from ``information_schema.INNODB_TRX`` (every session's only with the ``PROCESS``
privilege, which docs/how-to/mariadb.md says). A primary does not know its replicas' lag:
it is read from each replica named in settings.CHUNKWISE_REPLICAS (``SHOW REPLICA
STATUS``, the worst ``Seconds_Behind_Master``; a replica whose replication is stopped
has no lag to tell, and fails the reading rather than read as none, as gh-ost does). The
history list length (undo InnoDB has yet to purge) is MariaDB's status variable
``Innodb_history_list_length``; MySQL has it only as the ``trx_rseg_history_len`` counter
of ``information_schema.INNODB_METRICS`` (PROCESS privilege, as INNODB_TRX). The
user's throttle query runs in a read-only transaction under ``timeouts.statement``, as on
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import DatabaseError, connections, transaction

from chunkwise.engine import HealthReading, RunSettings, mysql_errno_of, wanted_figures

from .config import REPLICAS
from .health import query_value

__all__ = ["MySQLHealthProbe"]

#: the oldest transaction of another session, in seconds
_TRANSACTION_AGE = ("SELECT COALESCE(MAX(TIMESTAMPDIFF(SECOND, trx_started, NOW())), 0) "
                    "FROM information_schema.INNODB_TRX "
                    "WHERE trx_mysql_thread_id <> CONNECTION_ID()")
#: MySQL's history list length (MariaDB's is a status variable, which needs no privilege)
_HISTORY_METRIC = ("SELECT `COUNT` FROM information_schema.INNODB_METRICS "
                   "WHERE NAME = 'trx_rseg_history_len'")
#: ER_SPECIFIC_ACCESS_DENIED_ERROR: INNODB_TRX without the PROCESS privilege
_NEEDS_PROCESS = 1227


class MySQLHealthProbe:
    """Reads the health of the server ``alias`` points at."""

    def __init__(self, alias: str, table: str, replicas: Sequence[str],
                 limited: Callable[[str, float], str]) -> None:
        self._alias = alias
        self._table = table
        #: the aliases of the databases that replicate it (settings.CHUNKWISE_REPLICAS)
        self._replicas = list(replicas)
        #: ``sql`` under a statement timeout of its own, as the server says it
        self._limited = limited

    def read(self, settings: RunSettings) -> HealthReading:
        # autovacuum (and replication lag without replicas): refused before the run
        # (MySQLBackend.unreadable)
        wanted = wanted_figures(settings)
        active = age = history = None
        with connections[self._alias].cursor() as cursor:
            if "active_backends" in wanted:  # SHOW: MySQL 8 has no information_schema's
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Threads_running'")
                active = int(cursor.fetchone()[1]) - 1  # this session's own is running
            if "transaction_age" in wanted:
                age = _readable_with_process(cursor, _TRANSACTION_AGE)
            if "history_list_length" in wanted:
                history = self._history_list_length(cursor)
        query = settings.throttle.query.strip()
        return HealthReading(
            active_backends=active, transaction_age=age, history_list_length=history,
            replication_lag=self._lag() if "replication_lag" in wanted else None,
            query_value=self._query(query, settings.timeouts.statement) if query else None)

    @staticmethod
    def _history_list_length(cursor: Any) -> int | None:
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
        row = cursor.fetchone()
        if row is None:  # MySQL
            return _readable_with_process(cursor, _HISTORY_METRIC)
        return int(row[1])

    def _lag(self) -> float:
        worst = 0.0
        for alias in self._replicas:
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
            cursor.execute(self._limited(sql, statement_timeout))
            return query_value(cursor.fetchone() if cursor.description else None)


def _readable_with_process(cursor: Any, sql: str) -> int | None:
    """The number ``sql`` reads from InnoDB's information_schema views, which refuse a
    user without the PROCESS privilege: then nothing to wait for, as PostgreSQL's other
    sessions read without pg_monitor."""
    try:
        cursor.execute(sql)
    except DatabaseError as exc:
        if mysql_errno_of(exc) == _NEEDS_PROCESS:
            return None
        raise
    row = cursor.fetchone()
    return None if row is None else int(row[0])
