"""Write per-row transform results back: one UPDATE statement per batch.

PostgreSQL: ``UPDATE t SET c = v.c FROM (SELECT unnest(%s::type[]) AS k, unnest(...) AS c)
AS v WHERE t.k = v.k AND t.k BETWEEN first AND last``, one array parameter per column,
bound server-side. The key range matters: without it the planner merge-joins from
the start of the primary key index, so every batch would cost more than the last.
SQLite: the same shape with ``FROM (VALUES ...)`` (SQLite >= 3.33), chunked under
its limit of bound variables. Never ``bulk_update`` (a CASE per row) nor ``save()``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model

_SQLITE_MAX_VARIABLES = 32_000

#: field types whose psycopg 3 binary format carries exactly Django's values, read and
#: written (no converters; timestamps UTC-aware with USE_TZ). Others take the text path.
BINARY_SAFE = frozenset({
    "AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
    "SmallIntegerField", "PositiveIntegerField", "PositiveBigIntegerField",
    "PositiveSmallIntegerField", "CharField", "TextField", "EmailField", "SlugField",
    "URLField", "BooleanField", "FloatField", "DecimalField", "DateField", "DateTimeField",
    "UUIDField", "ForeignKey",
})

#: internal types whose get_db_prep_save() returns plain values of these Python types
#: unchanged; skipping the call for them is most of the write-back's Python time.
_PLAIN: dict[str, tuple[type, ...]] = {
    "CharField": (str,), "TextField": (str,), "SlugField": (str,), "EmailField": (str,),
    "IntegerField": (int,), "BigIntegerField": (int,), "SmallIntegerField": (int,),
    "PositiveIntegerField": (int,), "PositiveBigIntegerField": (int,),
    "PositiveSmallIntegerField": (int,), "BooleanField": (bool,), "FloatField": (float,),
}


def _prepared(field: Field[Any, Any], connection: BaseDatabaseWrapper,
              values: list[Any]) -> list[Any]:
    """``get_db_prep_save()`` of each value, skipped when every value is of a type it
    returns unchanged (one pass over the types in C: the call per value was most of the
    write-back's Python time)."""
    plain = _PLAIN.get(field.get_internal_type())
    if plain is not None and type(field).get_db_prep_save is Field.get_db_prep_save \
            and set(map(type, values)) <= {type(None), *plain}:  # bool is no int here
        return values
    return [field.get_db_prep_save(value, connection) for value in values]


def array_type(field: Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    """The SQL type of an array of ``field``'s values, on PostgreSQL: its column's type
    without a length or precision, as Django's bulk_create casts them. An explicit cast
    to varchar(10) cuts a longer string to 10 characters without a word; assigning it to
    the column refuses it (22001), so the row fails instead of being stored cut."""
    column_type: str = field.cast_db_type(connection)  # type: ignore[attr-defined]
    return re.sub(r"\([^)]*\)", "", column_type) + "[]"


def binary_safe(field: Field[Any, Any]) -> bool:
    """Whether psycopg 3 may read and write ``field`` in binary format: a BINARY_SAFE
    type without a converter; datetimes only with USE_TZ (naive ones would be read and
    bound as timestamp, not timestamptz)."""
    kind = field.get_internal_type()
    return kind in BINARY_SAFE and not hasattr(field, "from_db_value") and \
        (kind != "DateTimeField" or bool(settings.USE_TZ))


def write_back(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    key: Field[Any, Any],
    fields: Sequence[Field[Any, Any]],
    rows: Sequence[Any],
    psycopg3: bool = False,
) -> None:
    """``rows`` are in key order (as the lock step returned them). With ``psycopg3``, the
    arrays of BINARY_SAFE columns are bound in binary format (text arrays of 5k elements
    cost about 2.2 ms more to write and parse), and the statement is not prepared: each
    batch gets a plan made for its own key range (psycopg would prepare it after five
    runs, and PostgreSQL then reuse a generic plan; that measured no faster)."""
    if not rows or not fields:
        return
    keys = list(map(attrgetter(key.attname), rows))  # loaded from the database: no prep
    values = [keys] + [
        _prepared(field, connection, list(map(attrgetter(field.attname), rows)))
        for field in fields
    ]
    columns = [key, *fields]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    key_column = f"{table}.{quote(key.column)}"
    assignments = ", ".join(f"{quote(f.column)} = v.{quote(f.column)}" for f in fields)
    if connection.vendor == "postgresql":
        # unnest() per array in the select list, not one unnest(a, b, ...) in FROM: both
        # pair the arrays' elements in order, but this one streams them where that one
        # fills a tuplestore first (0.6 ms of a 14 ms write-back of 5k rows)
        arrays = ", ".join(
            f"unnest(%{'b' if psycopg3 and binary_safe(c) else 's'}::"
            f"{array_type(c, connection)}) AS {quote(c.column)}"
            for c in columns
        )
        sql = (f"UPDATE {table} SET {assignments} FROM (SELECT {arrays}) AS v "
               f"WHERE {key_column} = v.{quote(key.column)} "
               f"AND {key_column} >= %s AND {key_column} <= %s")
        params = [*values, keys[0], keys[-1]]
        if psycopg3:
            import psycopg

            # a server-binding cursor: the one Django's connection makes binds client-side,
            # quoting every array element into the SQL text in Python
            with psycopg.Cursor(connection.connection) as cursor:
                cursor.execute(sql, params, prepare=False)
        else:
            with connection.connection.cursor() as cursor:  # psycopg2 binds client-side
                cursor.execute(sql, params)
        return
    # SQLite cannot bind every key as read: Django reads a UUID key as uuid.UUID there
    values[0] = _prepared(key, connection, keys)
    per_chunk = max(1, _SQLITE_MAX_VARIABLES // len(columns))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), per_chunk):
            chunk = list(zip(*(column[start:start + per_chunk] for column in values), strict=True))
            placeholders = ", ".join("(" + ", ".join(["%s"] * len(columns)) + ")" for _ in chunk)
            select = ", ".join(f"column{i + 1} AS {quote(c.column)}" for i, c in enumerate(columns))
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM (SELECT {select} FROM (VALUES "
                f"{placeholders})) AS v WHERE {key_column} = v.{quote(key.column)}",
                [value for row in chunk for value in row],
            )
