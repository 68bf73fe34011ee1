"""Write per-row transform results back: one UPDATE statement per batch.

PostgreSQL: ``UPDATE t SET c = v.c FROM (SELECT unnest(%s::type[]) AS k, unnest(...) AS c)
AS v WHERE t.k = v.k AND t.k BETWEEN first AND last``, one array parameter per column,
bound server-side; a transform's batch with psycopg 3 copies its rows into a table of
the session's own instead and updates from it (backends/staging.py). The key range
matters: without it the planner merge-joins from the start of the primary key index, so
every batch would cost more than the last.
SQLite: the same shape with ``FROM (VALUES ...)`` (SQLite >= 3.33), chunked under
its limit of bound variables. Never ``bulk_update`` (a CASE per row) nor ``save()``.
Each database's statement is its backend's (backends/).

:func:`insert_rows` fills a table the same way: ``INSERT INTO t (...) SELECT
unnest(%s::type[]), ...`` on PostgreSQL, one statement per batch, ``VALUES`` chunks on
SQLite; never ``bulk_create``'s model-instance work per value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Field, ForeignKey, Model
from django.db.models.fields import AutoFieldMixin

from .backends import backend_for

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
    "AutoField": (int,), "BigAutoField": (int,), "SmallAutoField": (int,),
}


#: the get_db_prep_save()s that return a value of the field's _PLAIN types unchanged:
#: Field's, and since Django 6.0 an auto field's own (5.2 called the same steps from
#: get_db_prep_value()), which adds the backend's validate_autopk_value()
_PLAIN_SAVES = frozenset({Field.get_db_prep_save,
                          getattr(AutoFieldMixin, "get_db_prep_save", Field.get_db_prep_save)})


def _saves_plain_values_as_they_are(field: Field[Any, Any],
                                    connection: BaseDatabaseWrapper) -> bool:
    if type(field).get_db_prep_save not in _PLAIN_SAVES:
        return False
    # an auto field's values pass the backend's validate_autopk_value(), which returns
    # them as they are unless the backend overrides it (MySQL refuses 0): then each is asked
    return not isinstance(field, AutoFieldMixin) or \
        type(connection.ops).validate_autopk_value is BaseDatabaseOperations.validate_autopk_value


def _prepared(field: Field[Any, Any], connection: BaseDatabaseWrapper,
              values: list[Any]) -> list[Any]:
    """``get_db_prep_save()`` of each value, skipped when every value is of a type it
    returns unchanged (one pass over the types in C: the call per value was most of the
    write-back's Python time). A foreign key to an integer key is judged by its target,
    whose preparation it defers to (it only adds that '' is NULL, which no int is)."""
    while isinstance(field, ForeignKey) and \
            type(field).get_db_prep_save is ForeignKey.get_db_prep_save and \
            _PLAIN.get(field.target_field.get_internal_type()) == (int,):
        field = field.target_field
    plain = _PLAIN.get(field.get_internal_type())
    if plain is not None and _saves_plain_values_as_they_are(field, connection) \
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


@dataclass(frozen=True)
class KeyRange:
    """The rows a statement may touch: keys in (after, upto], compared by the database
    (a batch's own range); a bound that is None is not one."""

    after: Any
    upto: Any


def range_sql(connection: BaseDatabaseWrapper, key: Field[Any, Any], column: str,
               rows: KeyRange) -> tuple[str, list[Any]]:
    sql, params = "", []
    if rows.upto is not None:
        sql += f" AND {column} <= %s"
        params.append(key.get_db_prep_value(rows.upto, connection))
    if rows.after is not None:
        sql += f" AND {column} > %s"
        params.append(key.get_db_prep_value(rows.after, connection))
    return sql, params


def write_back(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    key: Field[Any, Any],
    fields: Sequence[Field[Any, Any]],
    rows: Sequence[Any],
    psycopg3: bool = False,
    within: KeyRange | None = None,
    versions: Sequence[str] | None = None,
    may_stage: bool = False,
) -> int:
    """Write ``fields`` of ``rows`` to the rows with their keys; how many rows it wrote.
    Without ``within``, ``rows`` are in key order (as the lock step returned them) and
    bound the statement's range; with it, a row outside the range is not written. With
    ``psycopg3``, the arrays of BINARY_SAFE columns are bound in binary format (text
    arrays of 5k elements cost about 2.2 ms more to write and parse), and the statement
    is not prepared: each batch gets a plan made for its own key range (psycopg would
    prepare it after five runs, and PostgreSQL then reuse a generic plan; that measured
    no faster). With ``versions`` (the rows' versions as read ahead, prefetch.py), a row
    changed since is not written. ``may_stage``: a batch's own write-back (not
    ``batch.write``'s), which may stage its rows (backends/staging.py)."""
    if not rows or not fields:
        return 0
    backend = backend_for(connection.alias)
    keys = list(map(attrgetter(key.attname), rows))  # loaded from the database
    values = [keys if backend.binds_keys_as_read else _prepared(key, connection, keys)] + [
        _prepared(field, connection, list(map(attrgetter(field.attname), rows)))
        for field in fields]
    columns = [key, *fields]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    key_column = f"{table}.{quote(key.column)}"
    if within is None:
        bounds, bound_params = (f" AND {key_column} >= %s AND {key_column} <= %s",
                                [values[0][0], values[0][-1]])
    else:
        bounds, bound_params = range_sql(connection, key, key_column, within)
    return backend.update_from_values(
        table, key_column, [quote(c.column) for c in columns], values, bounds, bound_params,
        [psycopg3 and binary_safe(c) for c in columns],
        [array_type(c, connection) for c in columns], versions, may_stage)


def insertable(field: Field[Any, Any]) -> bool:
    """Whether an INSERT gives ``field`` a value: not a generated column, nor a primary
    key the database numbers (it is returned instead, as bulk_create does)."""
    return not getattr(field, "generated", False) and not (
        field.primary_key and bool(getattr(field, "db_returning", False)))


def insert_rows(
    connection: BaseDatabaseWrapper,
    model: type[Model],
    fields: Sequence[Field[Any, Any]],
    rows: Iterable[Any],
    psycopg3: bool = False,
) -> int:
    """Insert ``rows`` (objects with the fields' attributes: model instances, or any)
    into ``model``'s table in one statement on PostgreSQL; how many. A primary key the
    database numbers, left out of ``fields``, is set on each row from ``RETURNING``, as
    bulk_create does. A field that fills itself in on save (``auto_now_add``) does so."""
    rows = list(rows)
    if not rows:
        return 0
    values = []
    for field in fields:
        if type(field).pre_save is not Field.pre_save:  # auto_now, auto_now_add, files
            column = [field.pre_save(row, True) for row in rows]
        else:
            column = list(map(attrgetter(field.attname), rows))
        values.append(_prepared(field, connection, column))
    pk = model._meta.pk
    returned = pk if pk is not None and pk not in fields and not insertable(pk) else None
    quote = connection.ops.quote_name
    count, keys = backend_for(connection.alias).insert_values(
        quote(model._meta.db_table), [quote(field.column) for field in fields], values,
        None if returned is None else quote(returned.column),
        [psycopg3 and binary_safe(f) for f in fields], [array_type(f, connection) for f in fields])
    if returned is not None and keys is not None:  # MySQL returns none, as bulk_create
        for row, key in zip(rows, keys, strict=True):
            setattr(row, returned.attname, key)
    return count
