"""Keys of any orderable type, stored as text in the checkpoint and read back typed; and
what a field must be to serve as one (the rule the system check and the run share)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import Field, UniqueConstraint

__all__ = ["Key", "KeyCodec", "key_problem"]

Key = Any

#: field types a keyset cannot page by. Keys are compared by the database only, never in
#: Python, so any type with a total order in SQL works (integers, text under its column's
#: collation, UUIDs, dates, decimals); these have none, or no exact round trip through the
#: checkpoint's text: bytes print as "b'...'", JSON has no order on SQLite and on
#: PostgreSQL's json, a float's equality is the first thing a range bound needs, and a
#: boolean is a key of two rows
_NOT_KEYS = {
    "BinaryField": "bytes do not round-trip through the checkpoint's text",
    "JSONField": "JSON values have no order that keyset batching can page by",
    "FloatField": "floating-point values are not exact bounds",
    "BooleanField": "a boolean cannot tell more than two rows apart",
}


def key_problem(label: str, field: Field[Any, Any], unique_together: Iterable[Sequence[str]],
                constraints: Iterable[object]) -> str:
    """Why ``field`` of model ``label`` cannot be a keyset key; "" when it can. It must
    hold one row per key (primary key, ``unique=True`` or a one-field unconditional
    UniqueConstraint), never NULL (PostgreSQL sorts NULL above every key, so a NULL would
    be the high-water mark and the run would find nothing to do; SQLite's ``key > x`` skips
    NULL rows), and of a type the database orders."""
    name = f"{label}.{field.name}"
    kind = field.get_internal_type()
    if kind in _NOT_KEYS:
        return (f"BatchedRunPython key: {name} is a {kind}, which cannot be a key "
                f"({_NOT_KEYS[kind]}); use the primary key or a unique integer, text, UUID, "
                f"date or decimal field")
    unique = field.primary_key or field.unique or any(
        isinstance(c, UniqueConstraint) and tuple(c.fields) == (field.name,)
        and c.condition is None and not c.expressions for c in constraints)
    if not unique:
        together = [tuple(group) for group in unique_together if field.name in group]
        why = (f"; it is unique only together with "
               f"{', '.join(n for n in together[0] if n != field.name)} (unique_together), "
               f"which keyset order over one field cannot use" if together else "")
        return (f"BatchedRunPython key: {name} must be the primary key or a unique field "
                f"(keyset batching needs one row per key; rows sharing a key would be skipped "
                f"or done twice){why}")
    if field.null:
        return (f"BatchedRunPython key: {name} admits NULL (null=True): rows whose key is "
                f"NULL have no place in key order, so batches would skip them; use the "
                f"primary key, or make {field.name} NOT NULL (null=False) in a migration "
                f"before this one")
    return ""


class KeyCodec:
    """Keys are stored as text and read back through the key field, so any type round-trips."""

    def __init__(self, field: Field[Any, Any]) -> None:
        self._field = field

    def dump(self, key: Key | None) -> str | None:
        return None if key is None else str(key)

    def load(self, text: str | None) -> Key | None:
        return None if text is None else self._field.to_python(text)
