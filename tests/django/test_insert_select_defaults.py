"""What batch.insert_select gives the fields it is not given: what Model.objects.create()
would, in Django's order, or a refusal naming the field; checked before any SQL runs."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest


def test_left_out_fields_get_what_create_gives_them(django_setup: None) -> None:
    from django.db import models
    from django.test.utils import isolate_apps

    from chunkwise.django.batch import _left_out

    with isolate_apps("lab"):
        class Stamp(models.Model):
            day = models.DateField(auto_now_add=True)
            at = models.DateTimeField(auto_now=True)
            note = models.CharField(max_length=5)
            size = models.IntegerField(default=3)
            both = models.IntegerField(default=1, db_default=2)
            served = models.IntegerField(db_default=4)
            maybe = models.IntegerField(null=True)
            token = models.UUIDField(default=uuid.uuid4)
            rank = models.IntegerField()

            class Meta:
                app_label = "lab"

    def given(name: str) -> Any:
        field = Stamp._meta.get_field(name)
        assert isinstance(field, models.Field)
        found = _left_out(Stamp, field)
        return None if found is None else found.value

    # a DateField's own date, as create() sets it (Now() stored a timestamp in SQLite's
    # date column, which read back as None)
    assert given("day") == datetime.date.today()
    assert isinstance(given("at"), datetime.datetime)
    assert (given("note"), given("size"), given("both")) == ("", 3, 1)  # default first
    assert (given("served"), given("maybe"), given("id")) == (None, None, None)  # the db's
    with pytest.raises(ValueError, match=r"^batch.insert_select: lab.Stamp.token's default "
                                         r"is computed in Python for each row; give "
                                         r"token=<an expression>"):
        given("token")
    with pytest.raises(ValueError, match=r"^batch.insert_select: lab.Stamp.rank has no "
                                         r"default; give rank=<an expression over the "
                                         r"batch's rows>$"):
        given("rank")


def test_a_model_with_multi_table_inheritance_is_refused(django_setup: None) -> None:
    from django.db import models
    from django.db.models import Value
    from django.test.utils import isolate_apps
    from lab.models import Port

    from chunkwise.django.batch import BatchScope, as_batch

    with isolate_apps("lab"):
        class Place(models.Model):
            name = models.CharField(max_length=5)

            class Meta:
                app_label = "lab"

        class Shop(Place):
            class Meta:
                app_label = "lab"

    batch = as_batch(Port._base_manager.none(), BatchScope(Port._meta.pk))
    with pytest.raises(ValueError, match=r"^batch.insert_select: lab.Shop inherits the table "
                                         r"of lab.Place \(multi-table inheritance\), which "
                                         r"one INSERT cannot fill; use batch.insert$"):
        batch.insert_select(Shop, name=Value("x"))
