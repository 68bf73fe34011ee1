"""What the code of a batch gets as ``batch``: a queryset of the batch's rows, plus the
fast ways to write them and to fill another table from them.

``batch.write(rows, fields)`` writes computed values back in one statement, as a per-row
transform's are (never ``bulk_update``'s CASE per row); ``batch.insert(Model, rows)``
inserts new rows in one statement (never ``bulk_create``'s work per value);
``batch.insert_select(Model, field=expression, ...)`` inserts a row per batch row that the
database computes itself (``INSERT ... SELECT``: no row through Python). All run in
the batch's transaction, so what they write commits with the checkpoint's advance, or
not at all: exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import connections
from django.db.models import Field, Model, QuerySet, Value
from django.db.models.fields.reverse_related import ForeignObjectRel
from django.db.models.sql import Query

from .writeback import KeyRange, insert_rows, insertable, write_back

#: what a field without db_default has there (Django 5.0+)
_NOT_PROVIDED = Field().db_default

__all__ = ["Batch", "BatchScope", "as_batch", "to_many_relation"]


@dataclass(frozen=True)
class BatchScope:
    """Which rows a batch holds: a key range, or given keys (a retry of failed rows)."""

    key: Field[Any, Any]
    within: KeyRange | None = None
    keys: frozenset[Any] | None = None
    psycopg3: bool = False

    def describe(self) -> str:
        if self.keys is not None:
            return f"its {len(self.keys):,} keys"
        assert self.within is not None
        lower = "" if self.within.after is None else f"{self.within.after!r} < "
        return f"{lower}{self.key.name} <= {self.within.upto!r}"


class Batch(QuerySet[Any]):
    """A queryset of one batch's rows (what ``forward``, ``reverse`` and ``prepare`` get),
    with :meth:`write` and :meth:`insert`. Filtering or slicing it keeps them."""

    _chunkwise_scope: BatchScope

    def _clone(self) -> Batch:
        clone: Batch = super()._clone()  # type: ignore[misc]
        clone._chunkwise_scope = self._chunkwise_scope
        return clone

    def write(self, rows: Iterable[Any], fields: Sequence[str]) -> int:
        """Write ``fields`` of ``rows`` back to the batch's rows, in one statement; how
        many. ``rows`` are the batch's own (model instances read from it, or any objects
        with the key's and the fields' attributes), each once: a row whose key is not in
        the batch, repeated, or gone raises, and the batch rolls back."""
        rows = list(rows)
        scope = self._chunkwise_scope
        model = self.model
        if isinstance(fields, str) or not fields:
            raise ValueError(f"batch.write fields: expected a list of {model._meta.label} "
                             f"field names, e.g. ['status'], got {fields!r}")
        targets = [_concrete(model, name, "batch.write fields") for name in fields]
        for field in targets:
            if field.primary_key or field == scope.key:
                raise ValueError(f"batch.write fields: {field.name!r} is the key the rows "
                                 "are found by, which this cannot change")
        key = scope.key
        if scope.keys is not None:
            outside = [k for k in map(attrgetter(key.attname), rows) if k not in scope.keys]
            if outside:
                raise ValueError(f"batch.write: {len(outside):,} of {len(rows):,} rows are "
                                 f"not in this batch ({key.name} {outside[0]!r} first); "
                                 "write the batch's own rows")
        written = write_back(connections[self.db], model, key, targets, rows,
                             psycopg3=scope.psycopg3,
                             within=scope.within or KeyRange(None, None))
        if written != len(rows):
            raise ValueError(
                f"batch.write: {len(rows) - written:,} of {len(rows):,} rows were not "
                f"written: their key is outside this batch ({scope.describe()}), repeated, "
                "or their row is gone; write the batch's own rows, each once")
        return written

    def insert(self, model: type[Model], rows: Iterable[Any],
               fields: Sequence[str] | None = None) -> int:
        """Insert ``rows`` into ``model``'s table in one statement (on PostgreSQL; chunks
        of SQLite's bound-variable limit there); how many. ``rows`` are model instances
        of ``model`` (``Model(field=value, ...)``), or any objects with the fields'
        attributes. ``fields``: the fields to insert, by default every concrete one
        except a primary key the database numbers, which is set on each row afterwards,
        as ``bulk_create`` does."""
        if not (isinstance(model, type) and issubclass(model, Model)):
            raise ValueError(f"batch.insert: expected a model class "
                             f"(apps.get_model('app_label', 'Model')), got {model!r}")
        if fields is None:
            targets = [f for f in model._meta.concrete_fields if insertable(f)]
        elif isinstance(fields, str) or not fields:
            raise ValueError(f"batch.insert fields: expected a list of {model._meta.label} "
                             f"field names, e.g. ['address'], got {fields!r}")
        else:
            targets = [_concrete(model, name, "batch.insert fields") for name in fields]
            generated = [f.name for f in targets if getattr(f, "generated", False)]
            if generated:
                raise ValueError(f"batch.insert fields: {generated[0]!r} is generated by "
                                 "the database, which gives it its value")
        if not targets:
            raise ValueError(f"batch.insert: {model._meta.label} has no field to insert a "
                             "value into")
        return insert_rows(connections[self.db], model, targets, rows,
                           psycopg3=self._chunkwise_scope.psycopg3)


    def insert_select(self, model: type[Model], **values: Any) -> int:
        """Insert one row into ``model``'s table for each of the batch's rows, computed by
        the database in one ``INSERT ... SELECT``: no row is read into Python, so it costs
        what the server's own work costs; how many. ``values``: ``model``'s fields, each
        an expression over the batch's rows (``F("pk")``, ``Upper("mac_address")``,
        ``Concat(...)``) or a constant. A field left out gets what ``Model.objects.create``
        would give it (see _left_out); a default computed per row in Python (``uuid4``),
        or no default at all, is refused, naming the field."""
        if not (isinstance(model, type) and issubclass(model, Model)):
            raise ValueError(f"batch.insert_select: expected a model class "
                             f"(apps.get_model('app_label', 'Model')), got {model!r}")
        label = model._meta.label
        if model._meta.parents:
            raise ValueError(f"batch.insert_select: {label} inherits the table of "
                             f"{next(iter(model._meta.parents))._meta.label} (multi-table "
                             f"inheritance), which one INSERT cannot fill; use batch.insert")
        if not values:
            raise ValueError(f"batch.insert_select: give {label}'s fields as keyword "
                             f"arguments, each an expression over the batch's rows, e.g. "
                             f"port=F('pk')")
        given = {_concrete(model, name, "batch.insert_select"): value
                 for name, value in values.items()}
        for field in given:
            if getattr(field, "generated", False):
                raise ValueError(f"batch.insert_select: {field.name!r} is generated by the "
                                 "database, which gives it its value")
        selected: dict[Field[Any, Any], Any] = {}
        for field in model._meta.concrete_fields:
            if field in given:
                value = given[field]
                selected[field] = value if hasattr(value, "resolve_expression") else \
                    Value(value, output_field=field)
            elif (left_out := _left_out(model, field)) is not None:
                selected[field] = left_out
        aliases = {f"chunkwise_{index}": expression
                   for index, expression in enumerate(selected.values())}
        query = self.order_by().values(**aliases).query
        relation = to_many_relation(query)
        if relation is not None:  # the join would repeat the batch row once per match
            raise ValueError(
                f"batch.insert_select: an expression follows the to-many relation "
                f"{relation.get_accessor_name() or relation.name!r} of "
                f"{relation.model._meta.label}, which would insert a row per related row; "
                f"read one value per row with a Subquery")
        select, params = query.get_compiler(using=self.db).as_sql()
        connection = connections[self.db]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in selected)
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {quote(model._meta.db_table)} ({columns}) {select}",
                           params)
            return int(cursor.rowcount)


def _left_out(model: type[Model], field: Field[Any, Any]) -> Any:
    """What ``Model.objects.create()`` gives a field left out of ``insert_select``, as an
    expression, in Django's order (Field._get_default): ``auto_now``/``auto_now_add``
    the time (one value for the batch's rows); a constant ``default`` its value; None
    where the database gives it its own (a ``db_default``, a primary key it numbers, a
    generated column) or NULL; the empty string for a text field. A default computed
    per row in Python, or none at all, is refused naming the field."""
    label = f"{model._meta.label}.{field.name}"
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return Value(field.pre_save(model(), True), output_field=field)
    if field.has_default():
        if callable(field.default):  # one value for every row would not be its default
            raise ValueError(f"batch.insert_select: {label}'s default is computed in Python "
                             f"for each row; give {field.name}=<an expression> (on "
                             f"PostgreSQL, a UUID: django.contrib.postgres.functions"
                             f".RandomUUID())")
        return Value(field.get_default(), output_field=field)
    if not insertable(field) or getattr(field, "db_default", None) is not _NOT_PROVIDED \
            or field.null:
        return None
    if field.empty_strings_allowed and not field.primary_key:
        return Value("", output_field=field)
    raise ValueError(f"batch.insert_select: {label} has no default; give "
                     f"{field.name}=<an expression over the batch's rows>")


def to_many_relation(query: Query) -> ForeignObjectRel | None:
    """A to-many relation ``query`` joins (a join Django trimmed from the SQL aside):
    each row would come once per related row."""
    for alias, join in query.alias_map.items():
        relation = getattr(join, "join_field", None) if query.alias_refcount[alias] else None
        if isinstance(relation, ForeignObjectRel) and relation.multiple:
            return relation
    return None


def _concrete(model: type[Model], name: object, argument: str) -> Field[Any, Any]:
    """``model``'s concrete field ``name`` (its name, or for a foreign key its attname)."""
    try:
        field = model._meta.get_field(name) if isinstance(name, str) else None
    except FieldDoesNotExist:
        field = None
    if not isinstance(field, Field) or not field.concrete:
        raise ValueError(f"{argument}: {model._meta.label} has no column {name!r}; expected "
                         f"one of {[f.name for f in model._meta.concrete_fields]}")
    return field


_CLASSES: dict[type[QuerySet[Any]], type[Batch]] = {}


def as_batch(rows: QuerySet[Any], scope: BatchScope) -> Batch:
    """``rows`` as a :class:`Batch` of ``scope`` (its class's own methods kept)."""
    base = type(rows)
    cls = _CLASSES.get(base)
    if cls is None:
        cls = Batch if base is QuerySet else type("Batch", (Batch, base), {})
        _CLASSES[base] = cls
    batch = rows._chain()  # type: ignore[attr-defined]
    batch.__class__ = cls
    assert isinstance(batch, Batch)
    batch._chunkwise_scope = scope
    return batch
