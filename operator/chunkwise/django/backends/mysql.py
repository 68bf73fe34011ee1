"""MariaDB and MySQL (InnoDB), through Django's MySQL backend: GET_LOCK for the runner
lock, the batch's timeouts as session variables, row locks FOR UPDATE, the write-back as
one UPDATE joined with a derived table of the new values.

A per-row transform's batches always lock their rows first: InnoDB's REPEATABLE READ does
not refuse a write to a row another transaction changed since it was read (PostgreSQL's
does, 40001), so skipping the lock step could overwrite a concurrent change with a value
computed from the old one. Set-based batches skip it while nothing contends, as on
PostgreSQL: their UPDATEs lock and change each row's latest version themselves."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from chunkwise.engine import HealthProbe, Timeouts

from ..config import REPLICAS
from . import EXACT_COUNT_LIMIT, DatabaseBackend

__all__ = ["SPLIT_WAIT", "MySQLBackend", "replicas", "whole_seconds"]

#: seconds a process waits for another to finish splitting an operation into shards
SPLIT_WAIT = 60
#: the session's own values of the batch's settings, kept on Django's connection object
#: (one per thread) so they are put back when the run ends: MySQL has no SET LOCAL
_SAVED = "_chunkwise_session_settings"


def replicas(alias: str) -> list[str]:
    """The aliases of the databases that replicate ``alias`` (settings.CHUNKWISE_REPLICAS:
    a list of aliases, or a mapping from a primary's alias to its replicas' aliases);
    refused in one line when one is not a MariaDB/MySQL database of DATABASES."""
    from django.conf import settings

    from chunkwise.engine import SettingsError

    given: Any = getattr(settings, REPLICAS, [])
    named = given.get(alias, []) if isinstance(given, Mapping) else given
    if not isinstance(named, list | tuple) or \
            not all(isinstance(name, str) for name in named):
        raise SettingsError(f"settings.{REPLICAS}: expected a list of database aliases (or "
                            f"a dict of them by primary), got {given!r}")
    for name in named:
        engine = str(settings.DATABASES.get(name, {}).get("ENGINE", ""))
        if not engine.endswith(".mysql"):
            raise SettingsError(f"settings.{REPLICAS}: {name!r} is not a MariaDB/MySQL "
                                f"database of settings.DATABASES")
    return list(named)


class MySQLBackend(DatabaseBackend):
    vendor = "mysql"
    name = "MariaDB/MySQL"
    row_locks = True
    parallel_writers = True
    optimistic_set_based = True
    batch_timeouts = True
    #: the driver binds client-side: the limit is max_allowed_packet (16 MiB by default),
    #: which 200,000 values of a write-back stay well below; a batch is one statement
    max_parameters = 200_000

    def unreadable(self) -> dict[str, str]:
        refused = {"throttle.autovacuum": "MariaDB and MySQL have no autovacuum"}
        if not replicas(self.alias):
            why = (f"a MariaDB or MySQL primary does not know its replicas' lag: name the "
                   f"databases that replicate it in settings.{REPLICAS}")
            refused.update({"throttle.replicationLag": why, "haltOn.replicationLag": why})
        return refused

    @property
    def is_mariadb(self) -> bool:
        return bool(self.connection.mysql_is_mariadb)  # type: ignore[attr-defined]

    def describe(self) -> str:
        server = "MariaDB" if self.is_mariadb else "MySQL"
        version = ".".join(map(str, self.connection.mysql_version))  # type: ignore[attr-defined]
        return f"{server} {version} through {self._driver()}"

    def _driver(self) -> str:
        module = type(self.connection.connection).__module__.split(".")[0]
        return {"MySQLdb": "mysqlclient", "pymysql": "PyMySQL"}.get(module, module)

    # -- the runner lock -----------------------------------------------------------------

    def _lock_name(self, name: str) -> str:
        """GET_LOCK's names are the server's, not a database's, and at most 64 characters:
        the database's name goes into the hash, so that two databases on one server (a
        staging copy beside production) do not share a runner lock."""
        database = self.connection.settings_dict.get("NAME") or ""
        digest = hashlib.blake2b(f"{database}\0{name}".encode(), digest_size=16).hexdigest()
        return f"chunkwise:{digest}"

    def try_lock(self, name: str) -> bool:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(%s, 0)", [self._lock_name(name)])
            (acquired,) = cursor.fetchone()
        return bool(acquired == 1)

    def unlock(self, name: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [self._lock_name(name)])

    def lock_taken(self, name: str) -> bool:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT IS_USED_LOCK(%s)", [self._lock_name(name)])
            (holder,) = cursor.fetchone()
        return holder is not None

    @contextmanager
    def serialized(self, name: str) -> Iterator[None]:
        """GET_LOCK is the session's, not the transaction's: it is let go of once the
        transaction has committed (as PostgreSQL's transaction-scoped lock is), or at
        once when the block fails (its transaction then rolls back)."""
        lock = self._lock_name(name)
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(%s, %s)", [lock, SPLIT_WAIT])
            (acquired,) = cursor.fetchone()
        if acquired != 1:
            raise TimeoutError(f"another process has been splitting this operation into "
                               f"shards for {SPLIT_WAIT}s; try again")

        def release() -> None:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT RELEASE_LOCK(%s)", [lock])

        try:
            yield
        except BaseException:
            release()
            raise
        transaction.on_commit(release, using=self.alias)

    # -- a batch ---------------------------------------------------------------------------

    def _statement_variable(self) -> str:
        # MariaDB's max_statement_time (seconds, any statement); MySQL's
        # max_execution_time (milliseconds, SELECT only)
        return "max_statement_time" if self.is_mariadb else "max_execution_time"

    def honoured(self, timeouts: Timeouts) -> Timeouts:
        return dataclasses.replace(timeouts, lock=float(whole_seconds(timeouts.lock)))

    def batch_settings(self, lock: float, statement: float) -> dict[str, str]:
        limit = f"{statement:.3f}" if self.is_mariadb else str(int(statement * 1000))
        return {"innodb_lock_wait_timeout": str(whole_seconds(lock)),
                self._statement_variable(): limit}

    def limited(self, sql: str, seconds: float) -> str:
        """``sql`` run under a statement timeout of its own (MariaDB's SET STATEMENT; MySQL's
        optimizer hint reaches SELECTs only: there the query is given as it is)."""
        if self.is_mariadb:
            return f"SET STATEMENT max_statement_time = {seconds:.3f} FOR {sql}"
        return sql

    def apply_settings(self, settings: Mapping[str, str]) -> None:
        """SET SESSION, only when they differ from what this session has: they hold until
        changed (there is no SET LOCAL), so most batches send nothing; the session's own
        values are put back by reset_settings()."""
        if not settings:  # a checkpoint's lock outside a batch (a failed row's record)
            return
        connection = self.connection
        raw = connection.connection
        saved = getattr(connection, _SAVED, None)
        if saved is None or saved[0] is not raw:
            saved = (raw, self._session_values(list(settings)), {})
            setattr(connection, _SAVED, saved)
        applied: dict[str, str] = saved[2]
        if all(applied.get(name) == value for name, value in settings.items()):
            return
        self._set(settings)
        applied.update(settings)

    def _session_values(self, names: Sequence[str]) -> dict[str, str]:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(f"@@SESSION.{name}" for name in names))
            return {name: str(value) for name, value in
                    zip(names, cursor.fetchone(), strict=True)}

    def _set(self, settings: Mapping[str, str]) -> None:
        # names and values are chunkwise's own (batch_settings: numbers), never the user's;
        # bound as numbers, as the server's numeric variables want them (a quoted value
        # is refused, 1232)
        with self.connection.cursor() as cursor:
            cursor.execute("SET SESSION " + ", ".join(f"{name} = %s" for name in settings),
                           [_number(value) for value in settings.values()])

    def reset_settings(self) -> None:
        connection = self.connection
        saved = getattr(connection, _SAVED, None)
        if saved is None:
            return
        setattr(connection, _SAVED, None)
        if saved[0] is connection.connection and saved[2] and saved[1]:
            self._set(saved[1])

    def for_update(self, rows: QuerySet[Any]) -> QuerySet[Any]:
        # OF: only the model's rows, not a joined todo's (MySQL 8; MariaDB has no OF and
        # locks the joined rows too)
        if self.connection.features.has_select_for_update_of:
            return rows.select_for_update(of=("self",))
        return rows.select_for_update()

    def lock_holders(self, table: str) -> str:
        """The transactions of other sessions that hold row locks, oldest first, as
        information_schema.INNODB_TRX tells it (every session's only with the PROCESS
        privilege). InnoDB does not say on which table a lock is held unless someone
        waits for it, so they are the ones that may hold ``table``'s."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT t.trx_mysql_thread_id, p.USER, p.HOST, "
                "TIMESTAMPDIFF(SECOND, t.trx_started, NOW()), t.trx_rows_locked, p.COMMAND "
                "FROM information_schema.INNODB_TRX t "
                "LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                "WHERE t.trx_mysql_thread_id <> CONNECTION_ID() AND t.trx_rows_locked > 0 "
                "ORDER BY t.trx_started LIMIT 5")
            found = cursor.fetchall()
        return "; ".join(
            f"thread {thread} (user {user}, host {host}, {command}) has held {rows} row lock(s) "
            f"in a transaction for {age}s" for thread, user, host, age, rows, command in found)

    def health_probe(self, table: str) -> HealthProbe:
        from ..health_mysql import MySQLHealthProbe

        return MySQLHealthProbe(self.alias, table, replicas(self.alias), self.limited)

    def non_transactional(self, tables: Sequence[str]) -> dict[str, str]:
        if not tables:
            return {}
        marks = ", ".join(["%s"] * len(tables))
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT t.TABLE_NAME, t.ENGINE FROM information_schema.TABLES t "
                           "JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
                           f"WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_NAME IN ({marks}) "
                           "AND e.TRANSACTIONS <> 'YES'", list(tables))
            return {str(table): str(engine) for table, engine in cursor.fetchall()}

    def estimate_rows(self, rows: QuerySet[Any]) -> tuple[int, bool]:
        """InnoDB's estimate of the table's rows on a large table (an upper bound of the
        rows to do), else the count."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT TABLE_ROWS FROM information_schema.TABLES "
                           "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                           [rows.model._meta.db_table])
            found = cursor.fetchone()
        if found and found[0] is not None and found[0] > EXACT_COUNT_LIMIT:
            return int(found[0]), False
        return rows.count(), True

    # -- the write-back --------------------------------------------------------------------

    def update_from_values(self, table: str, key_column: str, columns: Sequence[str],
                           values: Sequence[list[Any]], bounds: str,
                           bound_params: Sequence[Any], binary: Sequence[bool],
                           types: Sequence[str], versions: Sequence[str] | None = None,
                           may_stage: bool = False) -> int:
        """``UPDATE t JOIN (SELECT %s AS k, %s AS c UNION ALL VALUES (%s, %s), ...) AS v
        ON t.k = v.k SET t.c = v.c``: one statement per batch (there are no arrays to
        bind). The first row names the columns; MariaDB takes the others as a table value
        constructor, which it parses in two thirds of the time of as many SELECTs (68.6 ms
        against 108.8 ms for 5,000 rows, bench/README.md); MySQL's VALUES wants ROW(), so
        there they are SELECTs."""
        assert versions is None, "no row versions here (row_versions)"
        assignments = ", ".join(f"{table}.{column} = v.{column}" for column in columns[1:])
        first = "SELECT " + ", ".join(f"%s AS {column}" for column in columns)
        row = ", ".join(["%s"] * len(columns))
        written = 0
        for chunk, rows in self._chunks(values, len(bound_params)):
            if rows == 1:
                derived = first
            elif self.is_mariadb:
                derived = f"{first} UNION ALL VALUES " + ", ".join([f"({row})"] * (rows - 1))
            else:
                derived = " UNION ALL ".join([first, *[f"SELECT {row}"] * (rows - 1)])
            with self.connection.cursor() as cursor:
                cursor.execute(f"UPDATE {table} JOIN ({derived}) AS v "
                               f"ON {key_column} = v.{columns[0]} SET {assignments} "
                               f"WHERE TRUE{bounds}", [*chunk, *bound_params])
                written += cursor.rowcount
        return written


def whole_seconds(seconds: float) -> int:
    """innodb_lock_wait_timeout's unit: whole seconds, at least one, a fraction rounded up."""
    return max(1, math.ceil(seconds))


def _number(value: str) -> int | float:
    return int(value) if value.isdigit() else float(value)
