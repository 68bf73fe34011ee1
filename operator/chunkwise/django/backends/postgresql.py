"""PostgreSQL: advisory locks, SET LOCAL timeouts computed with the checkpoint row's lock,
row locks FOR NO KEY UPDATE, arrays bound server-side for the write-back, or a batch's
rows staged through a binary COPY (staging.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from django.db.models import QuerySet

from chunkwise.engine import HealthProbe

from ..prefetch import ROW_VERSION
from . import EXACT_COUNT_LIMIT, DatabaseBackend
from .staging import stage_and_update

__all__ = ["PostgreSQLBackend", "set_local"]


def set_local(settings: Mapping[str, str]) -> tuple[str, list[str]]:
    """Select-list items that set ``settings`` for the rest of the transaction (``SET
    LOCAL``, as ``set_config(name, value, true)``), and their parameters; what a statement
    of its own or one that also reads something puts after its SELECT."""
    items = ", ".join(["set_config(%s, %s, true)"] * len(settings))
    return items, [part for item in settings.items() for part in item]


def advisory_key(name: str) -> int:
    """The bigint advisory lock key of the lock ``name``."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgreSQLBackend(DatabaseBackend):
    vendor = "postgresql"
    name = "PostgreSQL"
    row_locks = True
    parallel_writers = True
    batch_timeouts = True
    optimistic_set_based = True
    optimistic_transforms = True
    row_versions = True
    pins_key_order = True
    binds_keys_as_read = True

    @property
    def psycopg3(self) -> bool:
        """Whether the connection is psycopg 3's (the app's choice: Django takes psycopg 3
        when it can import it, else psycopg2; chunkwise never installs either)."""
        from django.db.backends.postgresql.psycopg_any import (  # type: ignore[import-untyped]
            is_psycopg3,
        )

        return bool(is_psycopg3)

    def describe(self) -> str:
        driver = "psycopg 3, binary fetch" if self.psycopg3 else "psycopg2, text fetch"
        return f"PostgreSQL through {driver}"

    def setting_items(self, settings: Mapping[str, str]) -> tuple[str, list[str]]:
        return set_local(settings)

    def current_settings(self, names: Sequence[str]) -> dict[str, str]:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(["current_setting(%s)"] * len(names)),
                           list(names))
            return dict(zip(names, cursor.fetchone(), strict=True))

    # -- the runner lock -----------------------------------------------------------------

    def try_lock(self, name: str) -> bool:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [advisory_key(name)])
            (acquired,) = cursor.fetchone()
        return bool(acquired)

    def unlock(self, name: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [advisory_key(name)])

    def lock_taken(self, name: str) -> bool:
        key = advisory_key(name)
        with self.connection.cursor() as cursor:
            # a bigint advisory key shows in pg_locks as classid (high half), objid (low half)
            cursor.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                           "AND database = (SELECT oid FROM pg_database "
                           "WHERE datname = current_database()) "
                           "AND classid = %s AND objid = %s AND objsubid = 1",
                           [(key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF])
            return cursor.fetchone() is not None

    @contextmanager
    def serialized(self, name: str) -> Iterator[None]:
        with self.connection.cursor() as cursor:  # let go of at the transaction's end
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(name)])
        yield

    # -- a batch ---------------------------------------------------------------------------

    def batch_settings(self, lock: float, statement: float) -> dict[str, str]:
        return {"lock_timeout": f"{max(1, int(lock * 1000))}ms",
                "statement_timeout": f"{int(statement * 1000)}ms"}

    def apply_settings(self, settings: Mapping[str, str]) -> None:
        if settings:
            items, values = set_local(settings)
            with self.connection.cursor() as cursor:
                cursor.execute(f"SELECT {items}", values)

    def lock_checkpoint(self, table: str, columns: Sequence[str], checkpoint_id: int,
                        settings: Mapping[str, str]) -> tuple[Any, ...]:
        # the settings (SET LOCAL: set_config(..., true)) are computed with the row, below
        # the plan's LockRows step: lock_timeout holds while this very statement waits for
        # the row's lock, and for the rest of the transaction
        items, params = set_local(settings)
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT {items}{', ' if items else ''}{', '.join(columns)} "
                           f"FROM {table} WHERE id = %s FOR UPDATE", [*params, checkpoint_id])
            return tuple(cursor.fetchone()[len(settings):])

    def for_update(self, rows: QuerySet[Any]) -> QuerySet[Any]:
        # NO KEY: rows that reference these through a foreign key can still be written
        return rows.select_for_update(no_key=True, of=("self",))

    def lock_holders(self, table: str) -> str:
        """Who holds locks on the table now, as pg_locks and pg_stat_activity tell it: a
        transaction that locked rows holds a table lock too."""
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT a.pid, a.application_name, a.usename, "
                "extract(epoch FROM now() - a.xact_start)::int, a.state "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.relation = %s::regclass AND l.granted "
                "AND l.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL "
                "ORDER BY 4 DESC LIMIT 5", [table])
            found = cursor.fetchall()
        return "; ".join(
            f"pid {pid} (application_name {app or '(none)'!r}, user {user}, {state}) has "
            f"held locks on {table} for {age}s" for pid, app, user, age, state in found)

    def unreadable(self) -> dict[str, str]:
        why = ("PostgreSQL keeps old row versions in the table, not in an undo history; "
               "what holds their cleanup back is an old transaction "
               "(throttle.transactionAge) or a busy autovacuum (throttle.autovacuum)")
        return {"throttle.historyListLength": why, "haltOn.historyListLength": why}

    def health_probe(self, table: str) -> HealthProbe:
        from ..health import PostgresHealthProbe

        return PostgresHealthProbe(self.alias, table)

    def estimate_rows(self, rows: QuerySet[Any]) -> tuple[int, bool]:
        """The planner's estimate on a large table (a count of millions of rows would
        take longer than the plan's samples), else the count."""
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                           [rows.model._meta.db_table])
            found = cursor.fetchone()
            if found and found[0] > EXACT_COUNT_LIMIT:
                sql, params = rows.query.sql_with_params()
                cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
                (explained,) = cursor.fetchone()
                plan = explained if isinstance(explained, list) else json.loads(explained)
                return int(plan[0]["Plan"]["Plan Rows"]), False
        return rows.count(), True

    # -- the write-back --------------------------------------------------------------------

    def _arrays(self, columns: Sequence[str], binary: Sequence[bool],
                types: Sequence[str], named: bool) -> str:
        # unnest() per array in the select list, not one unnest(a, b, ...) in FROM: both
        # pair the arrays' elements in order, but this one streams them where that one
        # fills a tuplestore first (0.6 ms of a 14 ms write-back of 5k rows)
        return ", ".join(
            f"unnest(%{'b' if self.psycopg3 and is_binary else 's'}::{kind})"
            + (f" AS {column}" if named else "")
            for column, is_binary, kind in zip(columns, binary, types, strict=True))

    def update_from_values(self, table: str, key_column: str, columns: Sequence[str],
                           values: Sequence[list[Any]], bounds: str,
                           bound_params: Sequence[Any], binary: Sequence[bool],
                           types: Sequence[str], versions: Sequence[str] | None = None,
                           may_stage: bool = False) -> int:
        assignments = ", ".join(f"{column} = v.{column}" for column in columns[1:])
        if may_stage and self.psycopg3 and all(binary) and not self.connection.savepoint_ids:
            written = stage_and_update(
                self.connection, table, key_column, columns, values, bounds, bound_params,
                [kind.removesuffix("[]") for kind in types], versions, ROW_VERSION,
                assignments)
            if written is not None:
                return written
        if versions is not None:  # a column of the derived table, compared, not assigned
            columns, values = [*columns, ROW_VERSION], [*values, list(versions)]
            binary, types = [*binary, False], [*types, "xid[]"]  # parsed once per row
            bounds = f" AND {table}.xmin = v.{ROW_VERSION}{bounds}"
        sql = (f"UPDATE {table} SET {assignments} FROM "
               f"(SELECT {self._arrays(columns, binary, types, named=True)}) AS v "
               f"WHERE {key_column} = v.{columns[0]}{bounds}")
        return self._execute(sql, [*values, *bound_params])[0]

    def name_session(self, name: str) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT set_config('application_name', %s, false)", [name])

    def row_version(self, table: str) -> str:
        # xmin: the transaction that wrote the row version; any update makes a new one.
        # As text (xid has no cheap cast to a number): compared as xid in the write-back,
        # not as a bigint, whose casts cost 3.5 ms per 5k rows there
        return f"{table}.xmin::text"

    def insert_values(self, table: str, columns: Sequence[str], values: Sequence[list[Any]],
                      returning: str | None, binary: Sequence[bool], types: Sequence[str]
                      ) -> tuple[int, list[Any] | None]:
        ending = f" RETURNING {returning}" if returning is not None else ""
        count, keys = self._execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT "
            f"{self._arrays(columns, binary, types, named=False)}{ending}",
            list(values), fetch=returning is not None)
        return count, keys if returning is not None else None

    def _execute(self, sql: str, params: Sequence[Any],
                 fetch: bool = False) -> tuple[int, list[Any]]:
        """Run one statement with array parameters: (rows it touched, the first column of
        the rows it returned, with ``fetch``)."""
        connection = self.connection
        if self.psycopg3:
            import psycopg

            # a server-binding cursor: the one Django's connection makes binds client-side,
            # quoting every array element into the SQL text in Python
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params, prepare=False)
                return cursor.rowcount, [row[0] for row in cursor.fetchall()] if fetch else []
        with connection.connection.cursor() as cursor:  # psycopg2 binds client-side
            cursor.execute(sql, params)
            return cursor.rowcount, [row[0] for row in cursor.fetchall()] if fetch else []
