"""What a key must be, on a real PostgreSQL: unique and NOT NULL (refused otherwise before
any row is read), compared by the database only (text under its column's collation), and
never reported verified while rows whose key is NULL still match todo."""

from __future__ import annotations

import pytest

from tests.conftest import LabDb
from tests.django.test_batches_pg import counters

pytestmark = pytest.mark.postgres


def seed_books(db: LabDb, count: int, null_every: int) -> None:
    db.execute("INSERT INTO lab_book (code, counter) SELECT CASE WHEN g %% %s = 0 THEN NULL "
               "ELSE 'b' || g END, 0 FROM generate_series(1, %s) g", (null_every, count))


def test_a_key_that_admits_null_is_refused_before_any_row(lab_db: LabDb) -> None:
    """lab.Book.code is unique and null=True, 100 of 1,000 rows NULL. PostgreSQL sorts
    NULL first in `ORDER BY code DESC`, so the high-water mark was NULL: the run said
    `done (AlreadyDone): nothing left to do` and changed nothing."""
    seed_books(lab_db, 1000, null_every=10)
    result = lab_db.manage("chunkwise_run", "lab", "0009")
    assert result.returncode == 64, result.stderr
    assert result.stderr.strip().splitlines() == [
        "CommandError: BatchedRunPython key: lab.Book.code admits NULL (null=True): rows whose "
        "key is NULL have no place in key order, so batches would skip them; use the primary "
        "key, or make code NOT NULL (null=False) in a migration before this one"]
    assert counters(lab_db, "lab_book") == {0: 1000}
    assert lab_db.query("SELECT count(*) FROM chunkwise_checkpoint") == [(0,)]


def test_rows_whose_key_is_null_are_counted_by_verification(lab_db: LabDb) -> None:
    """If the database holds NULL keys all the same (a column the models say is NOT NULL,
    changed by hand), the high-water mark is the top non-NULL key and verification counts
    the NULL-key rows as remaining and missed: never "verified" while they match todo."""
    from django.db import connection
    from django.db.models import Q
    from lab.models import Book

    from chunkwise.contract import Direction
    from chunkwise.django.checkpoints import DjangoCheckpointStore
    from chunkwise.django.operation_ref import OperationRef

    seed_books(lab_db, 1000, null_every=10)
    todo = Book._default_manager.filter(Q(counter=0))
    ref = OperationRef("lab", "0009_key_admits_null", 0, Direction.FORWARD)
    store = DjangoCheckpointStore(ref, connection.alias, todo, Book._meta.get_field("code"),
                                  has_todo=True)
    planned = store.plan_deferred()
    assert planned.high_water_key == "b999" and planned.rows_estimated == 1000
    Book._default_manager.exclude(code=None).update(counter=1)  # every batch's work, done
    verification = store.verify()
    assert verification is not None
    assert (verification.rows_remaining, verification.missed, verification.null_keys) == \
        (100, 100, 100)
    assert verification.describe() == (
        "100 rows up to key b999 still match todo: 0 recorded as failed, 100 missed (100 of "
        "them with a NULL key, which no batch can reach)")


def test_text_keys_follow_the_column_collation_not_python_order(lab_db: LabDb) -> None:
    """Keys are compared by the database only: under an ICU collation, where "a" < "B" <
    "é" < "Z" (Python puts "B" and "Z" before "a" and "é" after "z"), batches of 2 still
    change every row exactly once."""
    lab_db.execute('ALTER TABLE lab_textitem ALTER COLUMN slug TYPE varchar(64) '
                   'COLLATE "und-x-icu"')
    slugs = ["a", "B", "c", "D", "_e", "é", "Z", "z", "10", "9", "Ab", "aB", "ß", "ss"]
    assert sorted(slugs) != [row[0] for row in lab_db.query(
        "SELECT unnest(%s::text[]) COLLATE \"und-x-icu\" s ORDER BY s", (slugs,))]
    for slug in slugs:
        lab_db.execute("INSERT INTO lab_textitem (slug, counter) VALUES (%s, 0)", (slug,))
    result = lab_db.manage("chunkwise_run", "lab", "0004", "--operation", "1",
                           "--batch-size", "2", "--min-batch-size", "1")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db, "lab_textitem") == {1: len(slugs)}
