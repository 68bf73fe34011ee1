"""The per-row path's binary fetch returns exactly what Django's own queryset returns."""

from __future__ import annotations

from copy import copy
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


@pytest.mark.parametrize("staged", [False, True], ids=["arrays", "staged"])
def test_binary_write_back_stores_every_binary_safe_type_as_django_would(
        lab_db: LabDb, staged: bool) -> None:
    """Each BINARY_SAFE column is bound in binary format by the psycopg 3 write-back, as
    arrays or (a batch's own write-back) through a binary COPY into the session's table;
    the values read back are the ones the transform set (None included). A column that
    is not BINARY_SAFE (JSON) takes the text path in the same statement, and is never
    staged."""
    import datetime
    import decimal
    import uuid

    from django.db import connection, transaction
    from lab.models import Document, Item, Stamped

    from chunkwise.django.writeback import BINARY_SAFE, write_back

    Item._base_manager.create(id=7)
    at = datetime.datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=datetime.UTC)
    new = {"at": at, "day": datetime.date(2026, 12, 31), "amount": decimal.Decimal("12.345"),
           "ref": uuid.UUID(int=42), "ratio": 0.125, "flag": True, "note": "é ünïcode",
           "item_id": 7}
    row_ids = [Stamped._base_manager.create(at=at, day=new["day"], amount=1, ref=uuid.uuid4(),
                                      ratio=1.0, flag=False, note="", item_id=None).pk
               for _ in range(3)]
    fields = [f for f in Stamped._meta.concrete_fields if f.attname in new]
    assert len(fields) == len(new)
    assert {f.get_internal_type() for f in fields} <= BINARY_SAFE
    rows = list(Stamped._base_manager.order_by("pk"))
    for row in rows[:2]:
        for name, value in new.items():
            setattr(row, name, value)
    rows[2].note = "third"
    setattr(rows[2], "item_id", None)  # noqa: B010  # the FK attname
    with transaction.atomic():
        write_back(connection, Stamped, Stamped._meta.pk, fields, rows, psycopg3=True,
                   may_stage=staged)
    with connection.cursor() as cursor:  # the session's staging table, if it staged
        cursor.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND "
                       "relname LIKE 'chunkwise_writeback_%%' AND pg_table_is_visible(oid)")
        assert cursor.fetchone()[0] == int(staged)
    stored = list(Stamped._base_manager.order_by("pk").values_list("pk", *new))
    assert stored[:2] == [(pk, *new.values()) for pk in row_ids[:2]]
    assert stored[2][7] == "third" and stored[2][8] is None

    document = Document._base_manager.create(data={"a": 1})
    document.data = {"b": [1, None, "x"]}
    with transaction.atomic():
        write_back(connection, Document, Document._meta.pk,
                   Document._meta.concrete_fields[1:], [document], psycopg3=True,
                   may_stage=staged)
    assert Document._base_manager.get().data == {"b": [1, None, "x"]}


def test_write_back_prepares_values_unless_every_one_is_already_plain(lab_db: LabDb) -> None:
    from django.db import connection, connections
    from django.db.models import ForeignKey
    from lab.models import Item, Stamped

    from chunkwise.django.writeback import _prepared

    counter, payload = Item._meta.get_field("counter"), Item._meta.get_field("payload")
    plain = [3, None, 5]
    assert _prepared(counter, connection, plain) is plain  # nothing to prepare: as is
    assert _prepared(payload, connection, ["a", None]) == ["a", None]
    # a bool is no plain int for an integer column, nor is a numeric string
    assert _prepared(counter, connection, [3, True, "7"]) == [3, 1, 7]
    assert _prepared(payload, connection, ["a", 12]) == ["a", "12"]
    # a foreign key to an integer key is as plain as that key, and prepared as it is else
    item = Stamped._meta.get_field("item")
    assert isinstance(item, ForeignKey)
    keys = [4, None, 6]
    assert _prepared(item, connection, keys) is keys
    assert _prepared(item, connection, [4, "6"]) == [4, 6]
    # ... unless the backend checks an auto field's values, as MySQL refuses 0: then each
    # value is asked (Django 6 calls validate_autopk_value() from get_db_prep_save())
    refuses_zero = copy(connections["default"])
    refuses_zero.ops = type("RefusesZero", (type(refuses_zero.ops),), {
        "validate_autopk_value": lambda ops, value: value or _refuse(value)})(refuses_zero)
    with pytest.raises(ValueError, match="0 is refused"):
        _prepared(item, refuses_zero, [4, 0])


def _refuse(value: object) -> object:
    raise ValueError(f"{value} is refused")


def test_the_write_back_refuses_a_value_too_long_for_its_column(lab_db: LabDb) -> None:
    """A CharField value past max_length fails the row, as Django's own UPDATE does
    (arrays or staged: the staging table's column has no length, the assignment checks
    it). The arrays were cast to the column's type, varchar(10)[], and an explicit cast to
    varchar(n) cuts a string to n characters without a word: the row was stored cut."""
    import psycopg
    from django.db import connection, transaction
    from lab.models import Item

    from chunkwise.django.writeback import write_back

    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) VALUES (1, 0, '', 0)")
    row = type("Row", (), {"id": 1, "status": "x" * 15})()
    for psycopg3, staged in ((True, False), (True, True), (False, False)):
        with pytest.raises(psycopg.errors.StringDataRightTruncation), transaction.atomic():
            write_back(connection, Item, Item._meta.pk, [Item._meta.get_field("status")],
                       [row], psycopg3=psycopg3, may_stage=staged)
    assert lab_db.query("SELECT status FROM lab_item") == [(None,)]


def test_a_value_out_of_its_columns_range_fails_its_row_either_way(lab_db: LabDb) -> None:
    """An integer too large for its column fails the row (a row error, isolated and
    recorded like any other), whether bound as an array or staged: psycopg's C COPY
    writer put 2**40 into an integer column's binary format as 0, without a word, so
    staging widens integer columns to bigint and the UPDATE's assignment refuses it;
    past bigint, psycopg refuses it."""
    from django.db import connection, transaction
    from lab.models import Item

    from chunkwise.django.writeback import write_back
    from chunkwise.engine import ErrorKind, classify

    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) VALUES (1, 0, '', 0)")
    for value in (2**40, -(2**40), 2**70):
        row = type("Row", (), {"id": 1, "counter": value})()
        for staged in (False, True):
            with pytest.raises(Exception) as raised, transaction.atomic():
                write_back(connection, Item, Item._meta.pk,
                           [Item._meta.get_field("counter")], [row], psycopg3=True,
                           may_stage=staged)
            assert classify(raised.value) is ErrorKind.ROW_ERROR, (staged, raised.value)
    assert lab_db.query("SELECT counter FROM lab_item") == [(0,)]
