"""Light rows for per-row transforms.

A ``transform(row)`` gets one of these instead of a model instance: an object
with one attribute per concrete field (by ``attname``, so a foreign key is
``customer_id``; with the operation's ``only=``, those fields alone), one per
``annotate=`` name (``customer_name``), and ``pk``. Migrations only ever see
historical models, which have fields but none of the model's methods, so nothing is
lost; what is gained is speed: building a Django model instance costs more than most
transforms.

The row class's namespace belongs to the model's fields: besides them it defines
only dunder names (which Django refuses as field names, fields.E001/E002: no
trailing underscore, no ``__``) and ``pk`` (a reserved word, fields.E003). Any other
name of its own (once a ``fields`` tuple) collides with a field of that name: Python
refuses a ``__slots__`` entry that is also a class attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.models import Field, Model

__all__ = ["row_class"]


def row_class(model: type[Model], attnames: Sequence[str] | None = None,
              extra: Sequence[str] = ()) -> type:
    """The row class of ``model``: its rows are built from values in the order of
    ``attnames`` (default: every concrete field's), then ``extra`` (annotations' names,
    which Django keeps apart from the fields' names)."""
    if attnames is None:
        fields: Sequence[Field[Any, Any]] = model._meta.concrete_fields
        attnames = [field.attname for field in fields]
    attnames = (*attnames, *extra)
    pk_attname = model._meta.pk.attname if model._meta.pk else attnames[0]
    params = ", ".join(f"v{i}" for i in range(len(attnames)))
    body = "".join(f"    row.{name} = v{i}\n" for i, name in enumerate(attnames)) or "    pass\n"
    namespace: dict[str, Any] = {}
    exec(f"def __init__(row, {params}):\n{body}", namespace)  # names are attnames

    def get_pk(row: Any) -> Any:
        return getattr(row, pk_attname)

    def set_pk(row: Any, value: Any) -> None:
        setattr(row, pk_attname, value)

    def describe(row: Any) -> str:
        shown = ", ".join(f"{name}={getattr(row, name)!r}" for name in attnames)
        return f"<{model._meta.label} row {shown}>"

    own: dict[str, Any] = {"__slots__": attnames, "__init__": namespace["__init__"],
                           "__repr__": describe}
    if "pk" not in attnames:  # a historical model may carry one: the field itself answers
        own["pk"] = property(get_pk, set_pk)
    return type(f"{model.__name__}Row", (), own)
