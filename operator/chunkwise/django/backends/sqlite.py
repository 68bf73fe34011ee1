"""SQLite, for local runs: one writer for the whole file, so no row locks, no runner lock
to ask (a live runner's "running" checkpoint keeps a second one off instead), no
timeouts; the write-back in ``VALUES`` chunks under its limit of bound variables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.utils import timezone

from . import DatabaseBackend

__all__ = ["SQLiteBackend"]


class SQLiteBackend(DatabaseBackend):
    vendor = "sqlite"
    name = "SQLite"

    def describe(self) -> str:
        return ("note: sqlite has no lock_timeout, statement_timeout or row locks, nor "
                "health figures to throttle on; those settings, batch.maxLockedFraction "
                "and throttle do not apply")

    def lock_checkpoint(self, table: str, columns: Sequence[str], checkpoint_id: int,
                        settings: Mapping[str, str]) -> tuple[Any, ...]:
        # take SQLite's write lock first, so the batch cannot deadlock on upgrade; the
        # heartbeat is what tells a second runner that this one is alive (no runner lock)
        self.apply_settings(settings)
        now = self.connection.ops.adapt_datetimefield_value(timezone.now())
        with self.connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET heartbeat_at = %s WHERE id = %s",
                           [now, checkpoint_id])
            cursor.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE id = %s",
                           [checkpoint_id])
            return tuple(cursor.fetchone())

    def lock_checkpoints(self, table: str, ids: Sequence[int],
                         settings: Mapping[str, str]) -> None:
        self.apply_settings(settings)
        marks = ", ".join(["%s"] * len(ids))
        with self.connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET failed_rows = failed_rows WHERE id IN ({marks})",
                           list(ids))

    def update_from_values(self, table: str, key_column: str, columns: Sequence[str],
                           values: Sequence[list[Any]], bounds: str,
                           bound_params: Sequence[Any], binary: Sequence[bool],
                           types: Sequence[str], versions: Sequence[str] | None = None,
                           may_stage: bool = False) -> int:
        assert versions is None, "no row versions here (row_versions)"
        assignments = ", ".join(f"{column} = v.{column}" for column in columns[1:])
        select = ", ".join(f"column{i + 1} AS {column}" for i, column in enumerate(columns))
        written = 0
        for chunk, rows in self._chunks(values, len(bound_params)):
            placeholders = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * rows)
            with self.connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET {assignments} FROM (SELECT {select} FROM (VALUES "
                    f"{placeholders})) AS v WHERE {key_column} = v.{columns[0]}{bounds}",
                    [*chunk, *bound_params])
                written += cursor.rowcount
        return written
