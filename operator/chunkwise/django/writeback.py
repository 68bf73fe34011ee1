"""Write per-row transform results back: one UPDATE statement per batch.

PostgreSQL: ``UPDATE t SET c = v.c FROM unnest(%s::type[], ...) AS v(k, c) WHERE t.k = v.k``,
one array parameter per column, so the statement text is the same for every batch.
SQLite: the same shape with ``FROM (VALUES ...)`` (SQLite >= 3.33), chunked under its
limit of bound variables. Never ``bulk_update`` (a CASE per row) nor ``save()`` per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

_SQLITE_MAX_VARIABLES = 32_000


def write_back(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    key: Field[Any, Any],
    fields: Sequence[Field[Any, Any]],
    rows: Sequence[Model],
) -> None:
    if not rows or not fields:
        return
    columns = [key, *fields]
    values = [
        [column.get_db_prep_save(getattr(row, column.attname), connection) for row in rows]
        for column in columns
    ]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in fields)
    names = ", ".join(quote(c.column) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            arrays = ", ".join(
                f"%s::{c.cast_db_type(connection)}[]"  # type: ignore[attr-defined]  # not in stubs
                for c in columns
            )
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM unnest({arrays}) AS v({names}) "
                f"WHERE {table}.{quote(key.column)} = v.{quote(key.column)}",
                values,
            )
            return
        per_chunk = max(1, _SQLITE_MAX_VARIABLES // len(columns))
        for start in range(0, len(rows), per_chunk):
            chunk = list(zip(*(column[start:start + per_chunk] for column in values), strict=True))
            placeholders = ", ".join("(" + ", ".join(["%s"] * len(columns)) + ")" for _ in chunk)
            select = ", ".join(f"column{i + 1} AS {quote(c.column)}" for i, c in enumerate(columns))
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM (SELECT {select} FROM (VALUES "
                f"{placeholders})) AS v WHERE {table}.{quote(key.column)} = v.{quote(key.column)}",
                [value for row in chunk for value in row],
            )
