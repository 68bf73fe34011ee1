"""Batch bounds that do not depend on the planner's luck: on tables filled since their last
ANALYZE (statistics of empty tables), the statements that find a batch's rows in key order
walk the key's index, as PostgreSQL's own plan of each statement shows (auto_explain).

Without it, the planner took the rest of the table for a few hundred rows, and sorted every
remaining row for each batch: a bitmap scan and a sort whose cost grows with the table."""

from __future__ import annotations

import re
from collections.abc import Iterator

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
