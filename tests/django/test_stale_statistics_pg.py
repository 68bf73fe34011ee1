"""Batch bounds that do not depend on the planner's luck: on tables filled since their last
ANALYZE (statistics of empty tables), the statements that find a batch's rows in key order
walk the key's index, as PostgreSQL's own plan of each statement shows (auto_explain).

Without it, the planner took the rest of the table for a few hundred rows, and sorted every
remaining row for each batch: a bitmap scan and a sort whose cost grows with the table."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import LabDb
from tests.support.pgserver import PgServer, running_server

pytestmark = pytest.mark.postgres

ITEMS = 20_000
#: every plan PostgreSQL ran, in the server's log, prefixed with its database
PLANS = {"session_preload_libraries": "auto_explain", "auto_explain.log_min_duration": "0",
         "log_line_prefix": "%d "}


@pytest.fixture(scope="module")
def explaining() -> Iterator[PgServer]:
    with running_server(PLANS) as server:
        yield server


def stale_lab(server: PgServer, name: str) -> LabDb:
    """The lab's tables ANALYZEd empty, then filled: half the items flagged on the table
    (payload) and through a relation (one flagged Stamped row of three)."""
    server.sql(f"CREATE DATABASE {name}")
    db = LabDb(server, name)
    for target in (["lab", "0001"], ["chunkwise"]):
        done = db.manage("migrate", *target, "-v0")
        assert done.returncode == 0, done.stderr
    db.execute("ANALYZE")
    db.execute("INSERT INTO lab_item (id, counter, payload, score) SELECT g, 0, CASE WHEN "
               "g %% 2 = 0 THEN 'flagged' ELSE '' END, 0 FROM generate_series(1, %s) g",
               (ITEMS,))
    db.execute("INSERT INTO lab_stamped (at, day, amount, ref, ratio, flag, note, item_id) "
               "SELECT now(), now()::date, 1, gen_random_uuid(), 1, (i %% 2 = 0 AND k = 1), "
               "'', i FROM generate_series(1, %s) i, generate_series(1, 3) k", (ITEMS,))
    return db


def key_step_plans(server: PgServer, database: str) -> list[str]:
    """The plans of ``database``'s statements that find rows in key order by position
    (``ORDER BY key ... OFFSET n``: a batch's last key, or the end of its window)."""
    log = (server.datadir.parent / "postgres.log").read_text(errors="replace")
    plans = re.split(rf"^{re.escape(database)} LOG:  duration: [0-9.]+ ms  plan:\n", log,
                     flags=re.MULTILINE)[1:]
    bodies = ["\n".join(line for line in plan.splitlines() if line.startswith("\t"))
              for plan in plans]
    return [body for body in bodies if "OFFSET" in body and "lab_item" in body]


@pytest.mark.parametrize(("migration", "todo"), [
    ("0010", "across a relation (todo=Q(stamped__flag=True, counter=0))"),
    ("0011", "on the table (todo=Q(payload='flagged', counter=0))"),
])
def test_batches_find_their_rows_on_the_key_index_whatever_the_statistics_say(
        explaining: PgServer, migration: str, todo: str) -> None:
    db = stale_lab(explaining, f"stale_{migration}")
    done = db.manage("chunkwise_run", "lab", migration, "--batch-size", "500",
                     "--min-batch-size", "500", "--max-batch-size", "500",
                     "--max-locked-fraction", "1")
    assert done.returncode == 0, done.stderr
    assert db.query("SELECT counter, count(*) FROM lab_item GROUP BY 1 ORDER BY 1") == [
        (0, ITEMS // 2), (1, ITEMS // 2)], "every flagged item bumped once, no other"
    plans = key_step_plans(explaining, db.name)
    assert len(plans) >= ITEMS // 2 // 500, f"a key step per batch; found {len(plans)}"
    sorted_ = [plan for plan in plans if re.search(r"^\t\s*->\s+Sort\b|^\tSort\b", plan,
                                                   re.MULTILINE)]
    assert not sorted_, (
        f"todo {todo}: {len(sorted_)} of {len(plans)} key steps sorted the rows instead of "
        f"walking the key's index; the first:\n{sorted_[0]}")
    assert all("lab_item_pkey" in plan for plan in plans), plans[0]


# -- what runs with the key order, and what never does -----------------------------------


def sorting(alias: str = "default") -> str:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute("SHOW enable_sort")
        return str(cursor.fetchone()[0])


def test_only_the_batch_end_step_runs_with_the_key_order_never_the_migrations_sql(
        lab_db: LabDb) -> None:
    """The read of a transform's rows carries the migration's own SQL (annotate=, a
    Subquery), as the set-based code and a todo with a subquery do: they run under the
    session's own planner settings. Under the key order a per-row Subquery ordered by time
    became an index walk filtering every row: 0.006 s against 3.5 s for 500 rows."""
    from django.db import transaction
    from django.db.models import Exists, OuterRef, Q
    from django.db.models.expressions import RawSQL
    from lab.models import Item, Stamped

    from chunkwise.django.target import DjangoBatchTarget
    from chunkwise.engine import Timeouts

    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT g, 0, '', 0 FROM generate_series(1, 300) g")
    timeouts = Timeouts(5.0, 30.0)
    seen: dict[str, set[str]] = {"read": set(), "forward": set(), "prepare": set()}

    def transform(row: Any, context: object) -> None:
        seen["read"].add(row.sorting)

    def prepare(batch: object) -> None:
        seen["prepare"].add(sorting())

    def forward(batch: object) -> None:
        seen["forward"].add(sorting())

    todo = Item._base_manager.filter(Q(counter=0))
    with_subquery = Item._base_manager.filter(~Exists(Stamped._base_manager.filter(
        item=OuterRef("pk"))))
    targets = [
        DjangoBatchTarget("default", todo, Item._meta.pk, transform=transform,
                          fields=["counter"], prepare=prepare,
                          annotate={"sorting": RawSQL("current_setting('enable_sort')", [])}),
        DjangoBatchTarget("default", todo, Item._meta.pk, forward=forward),
        DjangoBatchTarget("default", todo, Item._meta.pk, forward=forward, lock_first=True),
        DjangoBatchTarget("default", with_subquery, Item._meta.pk, forward=forward),
    ]
    pinned = []
    for target in targets:
        for after, upto in [(None, 100), (100, 300)]:
            with transaction.atomic():
                settings = target.batch_settings(timeouts)
                target.set_batch_settings(timeouts)
                rows, last = target.lock_rows(after, upto, 100)
                assert rows == 100, (rows, last)
                target.apply(after, last)
                transaction.set_rollback(True)
        pinned.append(settings.get("enable_sort") == "off")
    assert seen == {"read": {"on"}, "forward": {"on"}, "prepare": {"on"}}
    assert pinned == [True, True, True, False], "a todo with a subquery: never"


def test_a_plan_sample_that_fails_takes_only_its_own_settings_with_it(lab_db: LabDb) -> None:
    """chunkwise_plan samples batches in savepoints of one transaction: with the settings
    set once outside them, a sample rolled back after the key step brought the key order
    back for the next samples' code (seen: on, off, off)."""
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader
    from django.db.models import Q

    from chunkwise.django import BatchedRunPython
    from chunkwise.django.config import resolve_settings
    from chunkwise.django.operation_ref import OperationRef
    from chunkwise.django.plan import plan_run

    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT g, 0, '', 0 FROM generate_series(1, 300) g")
    seen: list[str] = []

    def forward(apps: object, schema_editor: object, batch: object) -> None:
        seen.append(sorting())
        if len(seen) == 1:
            raise ValueError("the first sample fails")

    operation = BatchedRunPython("lab.Item", forward, todo=Q(counter=0), batch_size=100)
    apps = MigrationLoader(connection).project_state(("lab", "0001_initial")).apps
    settings = resolve_settings(operation.base_settings(), {}, {})
    plan = plan_run(operation, OperationRef("lab", "0002_bump_items", 0), apps,
                    connection.schema_editor(), settings, samples=3)
    assert seen == ["on", "on", "on"], seen
    assert plan.sample_errors == ("ValueError: the first sample fails",)


def test_a_joined_todos_batch_stays_near_its_size_where_the_density_jumps(
        explaining: PgServer) -> None:
    """One item to do, then a long stretch of none, then a dense stretch: the windows
    widened on the sparse start then took the whole dense stretch in one batch (20,001
    rows for batches of 1,000, found in review). Every batch keeps to its size, a
    quarter over at most, and every item to do is bumped once."""
    db = LabDb(explaining, "density_jump")
    explaining.sql(f"CREATE DATABASE {db.name}")
    for target in (["lab", "0001"], ["chunkwise"]):
        done = db.manage("migrate", *target, "-v0")
        assert done.returncode == 0, done.stderr
    db.execute("INSERT INTO lab_item (id, counter, payload, score) "
               "SELECT g, 0, '', 0 FROM generate_series(1, 40000) g")
    db.execute("INSERT INTO lab_stamped (at, day, amount, ref, ratio, flag, note, item_id) "
               "SELECT now(), now()::date, 1, gen_random_uuid(), 1, true, '', i "
               "FROM generate_series(1, 40000) i WHERE i = 1 OR i > 36000")
    db.execute("ANALYZE")
    done = db.manage("chunkwise_run", "lab", "0010", "--batch-size", "100",
                     "--min-batch-size", "100", "--max-batch-size", "100",
                     "--max-locked-fraction", "1")
    assert done.returncode == 0, done.stderr
    assert db.query("SELECT counter, count(*) FROM lab_item GROUP BY 1 ORDER BY 1") == [
        (0, 35999), (1, 4001)]
    rows, batches = (int(str(value)) for value in
                     db.query("SELECT rows_processed, batches FROM chunkwise_checkpoint")[0])
    assert rows == 4001 and rows / batches <= 125, f"{rows:,} rows in {batches} batches"
