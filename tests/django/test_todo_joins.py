"""A todo is a join only when its SQL joins: what makes a batch a semi-join over key
windows, and that path on a database other than Django's default."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.django.test_retry_failed_sqlite import counters, lab_on_sqlite


def test_a_relation_django_trims_from_the_sql_is_not_a_join(django_setup: None) -> None:
    """``item__isnull=True`` reads the row's own column: Django keeps the join it trimmed
    among the query's aliases, unused. Taken for a join, the todo became a semi-join
    searched in key windows, the slow path for a todo that really joins."""
    from django.db.models import Q
    from lab.models import Item, Stamped

    from chunkwise.django.execute import one_per_key

    plain = one_per_key(Stamped._base_manager.all(), Q(item__isnull=True, flag=True),
                        Stamped._meta.pk)
    assert "IN (SELECT" not in str(plain.query)
    anti_join = one_per_key(Item._base_manager.all(), Q(stamped__isnull=True),
                            Item._meta.pk)  # a real one: items without a Stamped row
    assert "IN (SELECT" in str(anti_join.query)


def test_set_based_code_with_a_todo_across_a_relation_runs_on_another_database(
        tmp_path: Path) -> None:
    """lab 0010 (set-based, todo across a relation) on the lab's "lite" database, not
    Django's default: the batch's SQL is compiled for the batch's database."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    for target in (["chunkwise"], ["lab", "0001"]):
        assert lab("migrate", *target, "-v0").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_item (id, counter, payload, score) "
                         "VALUES (?, 0, '', 0)", [(i,) for i in range(1, 1001)])
        conn.executemany(
            "INSERT INTO lab_stamped (at, day, amount, ref, ratio, flag, note, item_id) "
            "VALUES ('2026-01-01 00:00:00', '2026-01-01', 1, ?, 1, ?, '', ?)",
            [(f"{i:032x}", i % 3 == 0, i) for i in range(1, 1001)])
    result = lab("chunkwise_run", "lab", "0010", "--batch-size", "100")
    assert result.returncode == 0, result.stderr
    assert counters(db) == {1: 333, 0: 667}
