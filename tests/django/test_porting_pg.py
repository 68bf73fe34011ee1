"""The worked examples of docs/how-to/port-runpython.md, on a real PostgreSQL: each
ported migration leaves its table identical, row by row, to its plain RunPython form, also
when the run is SIGKILLed mid-way and migrate is run again."""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Iterator

import pytest

from tests.conftest import LabDb
from tests.django.test_batches_pg import wait_until
from tests.support.pgserver import PgServer

pytestmark = pytest.mark.postgres

PROFILES = 10_000
CUSTOMERS = 6_000
_databases = iter(range(1_000_000))


def messy_prefs(rng: random.Random) -> str:
    """What years of releases leave in a JSON text field."""
    kind = rng.randrange(6)
    if kind == 0:
        return "not json at all"
    if kind == 1:
        return json.dumps(["an", "array"])
    if kind == 2:
        return "{}"
    return json.dumps({rng.choice(["Theme", "theme", "NOTIFY", "notify", "Lang"]):
                       rng.choice(["on", "off", "dark", 3, None]) for _ in range(3)})


def seed(db: LabDb) -> None:
    rng = random.Random(7)
    rows = [(i, messy_prefs(rng)) for i in range(1, PROFILES + 1)]
    db.execute("INSERT INTO porting_profile (id, prefs) SELECT * FROM unnest(%s::bigint[], "
               "%s::text[])", ([r[0] for r in rows], [r[1] for r in rows]))
    db.execute("INSERT INTO porting_customer (id) SELECT g FROM generate_series(1, %s) g",
               (CUSTOMERS,))
    db.execute("INSERT INTO porting_order (customer_id, created) SELECT c, "  # c % 4 = 0: none
               "timestamptz '2020-01-01' + (c * 7 + k) * interval '1 hour' "
               "FROM generate_series(1, %s) c, generate_series(1, 1 + c %% 3) k "
               "WHERE c %% 4 <> 0", (CUSTOMERS,))


@pytest.fixture
def porting_dbs(pg: PgServer, django_setup: None) -> Iterator[tuple[LabDb, LabDb]]:
    """Two databases seeded alike at porting 0001: one for the plain form, one ported."""
    names = [f"porting_{next(_databases)}_{side}" for side in ("plain", "ported")]
    dbs = []
    for name in names:
        pg.sql(f"CREATE DATABASE {name}")
        db = LabDb(pg, name)
        for target in (["chunkwise"], ["porting", "0001"]):
            done = db.manage("migrate", *target, "-v0", LAB_PORTING="1")
            assert done.returncode == 0, done.stderr
        seed(db)
        dbs.append(db)
    try:
        yield dbs[0], dbs[1]
    finally:
        for name in names:
            pg.sql(f"DROP DATABASE {name} WITH (FORCE)")


def run_plain(db: LabDb, function: str) -> None:
    code = (f"from django.apps import apps; from django.db import connection; "
            f"from porting import plain; "
            f"plain.{function}(apps, connection.schema_editor())")
    done = db.manage("shell", "-c", code, LAB_PORTING="1")
    assert done.returncode == 0, done.stderr


def table(db: LabDb, sql: str) -> list[tuple[object, ...]]:
    return db.query(sql)


@pytest.mark.parametrize(("migration", "plain", "rows_sql"), [
    ("0002", "normalise_prefs", "SELECT id, prefs FROM porting_profile ORDER BY id"),
    ("0003", "backfill_last_order",
     "SELECT id, last_order_at FROM porting_customer ORDER BY id"),
], ids=["per-row JSON normalisation", "backfill from the latest related row"])
def test_a_ported_migration_leaves_the_table_its_plain_form_leaves_also_after_a_kill(
        porting_dbs: tuple[LabDb, LabDb], migration: str, plain: str,
        rows_sql: str) -> None:
    plain_db, ported_db = porting_dbs
    if migration == "0003":  # 0002 first, in both
        run_plain(plain_db, "normalise_prefs")
        assert ported_db.manage("migrate", "porting", "0002", LAB_PORTING="1",
                                CHUNKWISE_BATCH_SIZE="5000").returncode == 0
    run_plain(plain_db, plain)
    runner = ported_db.popen("migrate", "porting", migration, LAB_PORTING="1",
                             CHUNKWISE_BATCH_SIZE="500", CHUNKWISE_MAX_BATCH_SIZE="500",
                             CHUNKWISE_MAX_ROWS_PER_SECOND="5000")
    wait_until(lambda: ported_db.query(
        "SELECT 1 FROM chunkwise_checkpoint WHERE migration LIKE %s AND batches >= 3",
        (f"{migration}%",)), "three batches committed")
    assert runner.poll() is None, "the rows/s cap keeps the run going for about 2 s"
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=60)
    resumed = ported_db.manage("migrate", "porting", migration, LAB_PORTING="1")
    assert resumed.returncode == 0, resumed.stderr
    if migration == "0003":  # a todo (shape 1 has none): the verification is exact
        assert "verified: no row up to key" in resumed.stderr, resumed.stderr
    assert table(ported_db, rows_sql) == table(plain_db, rows_sql)
    assert ported_db.query("SELECT count(*) FROM chunkwise_failedrow") == [(0,)]
