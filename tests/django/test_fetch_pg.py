"""The per-row path's binary fetch returns exactly what Django's own queryset returns."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LabDb

pytestmark = pytest.mark.postgres


def rows_both_ways(model: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], bool]:
    from django.db import transaction

    from chunkwise.django.target import DjangoBatchTarget

    target = DjangoBatchTarget("default", model._base_manager.all(), model._meta.pk,
                               transform=lambda row: None,
                               fields=[model._meta.concrete_fields[-1].name])
    attnames = [f.attname for f in model._meta.concrete_fields]
    with transaction.atomic():
        count, last = target.lock_rows(None, 10**9, 1000)
        fetched = [tuple(getattr(row, name) for name in attnames) for row in target._rows]
    expected = list(model._base_manager.order_by("pk").values_list(*attnames))
    assert count == len(expected) and last == expected[-1][0]
    return fetched, expected, target._binary_fetch


def test_binary_fetch_equals_django_values(lab_db: LabDb) -> None:
    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) VALUES (1, 0, '', 0)")
    lab_db.execute(
        "INSERT INTO lab_stamped (at, day, amount, ref, ratio, flag, note, item_id) "
        "SELECT timestamptz '2026-03-01 12:34:56.789+02' + g * interval '1 hour', "
        "date '2026-01-01' + g, g * 1.125, gen_random_uuid(), g / 3.0, g %% 2 = 0, "
        "'note ' || g, CASE WHEN g %% 2 = 0 THEN 1 END FROM generate_series(1, 50) g")
    from lab.models import Stamped

    fetched, expected, binary = rows_both_ways(Stamped)
    assert binary
    assert fetched == expected
    assert expected[0][1].tzinfo is not None and fetched[0][1].utcoffset().total_seconds() == 0


def test_fields_with_converters_use_the_text_path(lab_db: LabDb) -> None:
    lab_db.execute("""INSERT INTO lab_document (data) VALUES ('{"a": [1, 2]}'), ('"x"')""")
    from lab.models import Document

    fetched, expected, binary = rows_both_ways(Document)
    assert not binary
    assert fetched == expected and fetched[0][1] == {"a": [1, 2]}
