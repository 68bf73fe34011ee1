"""The light rows a per-row transform gets: every field name works, whatever it is."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize("name", ["fields", "describe", "row", "get_pk", "attnames", "model"])
def test_a_field_may_have_any_name_the_row_class_might_use(django_setup: None,
                                                           name: str) -> None:
    from django.db import models
    from django.test.utils import isolate_apps

    from chunkwise.django.rows import row_class

    with isolate_apps("lab"):
        model: Any = type(f"Named_{name}", (models.Model,), {
            "__module__": "lab.models", name: models.IntegerField(default=0),
            "Meta": type("Meta", (), {"app_label": "lab"})})
        row = row_class(model)(7, 3)
    assert (row.pk, row.id, getattr(row, name)) == (7, 7, 3)
    setattr(row, name, 4)
    row.pk = 8
    assert (row.id, getattr(row, name)) == (8, 4)
    assert repr(row) == f"<lab.Named_{name} row id=8, {name}=4>"


def test_the_row_class_defines_no_name_a_field_could_take(django_setup: None) -> None:
    """Besides the fields, only dunders (Django refuses them as field names) and ``pk``
    (reserved): a new helper attribute would break the models that have that field."""
    from django.apps import apps

    from chunkwise.django.rows import row_class

    for model in apps.get_models():
        fields = {f.attname for f in model._meta.concrete_fields}
        own = {n for n in vars(row_class(model)) if not n.startswith("__")} - fields
        assert own == {"pk"}, model


def test_a_shaped_row_holds_the_fields_read_and_the_annotations(django_setup: None) -> None:
    """only= and annotate=: the row class holds those names and no other field's."""
    from lab.models import Item

    from chunkwise.django.rows import row_class

    row = row_class(Item, ["id", "counter"], ["customer_name"])(7, 3, "Ada")
    assert (row.pk, row.counter, row.customer_name) == (7, 3, "Ada")
    assert not hasattr(row, "payload")
    assert repr(row) == "<lab.Item row id=7, counter=3, customer_name='Ada'>"
