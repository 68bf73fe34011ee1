"""The worked examples of docs/how-to/port-runpython.md, on a real PostgreSQL: each
ported migration leaves its tables identical, row by row, to its plain RunPython form, also
when the run is SIGKILLed mid-way and migrate (or, deferred, the next release's migrate)
is run again."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chunkwise.contract import ShardState
from tests.conftest import LabDb
from tests.django.test_batches_pg import wait_until
from tests.support.pgserver import PgServer

pytestmark = pytest.mark.postgres

PROFILES = 10_000
CUSTOMERS = 6_000
INTERFACES = 8_000
PRODUCTS = 300
LINE_ITEMS = 8_000
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


def messy_mac(rng: random.Random, pool: list[str]) -> str | None:
    """What a free-text MAC column holds: none, empty, lower case with dashes, blanks
    around it, and the same address on several interfaces (a pool of 500)."""
    mac = rng.choice(pool)
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return ""
    if kind == 2:
        return mac.lower().replace(":", "-")
    if kind == 3:
        return f"  {mac.lower()} "
    return mac


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
    pool = [":".join(f"{rng.randrange(256):02X}" for _ in range(6)) for _ in range(500)]
    macs = [messy_mac(rng, pool) for _ in range(INTERFACES)]
    db.execute("INSERT INTO porting_interface (id, name, mac_address) SELECT i, 'eth' || "
               "i %% 48, mac FROM unnest(%s::bigint[], %s::text[]) AS t(i, mac)",
               (list(range(1, INTERFACES + 1)), macs))
    db.execute("INSERT INTO porting_product (id, price) SELECT p, CASE WHEN p %% 50 = 0 THEN 0 "
               "ELSE (p * 7919 %% 100000) / 100.0 END FROM generate_series(1, %s) p",
               (PRODUCTS,))
    # UUID keys alike in both databases; every seventh item has no product, every tenth a
    # total already (kept as it is by both forms), quantities from -1 to 9
    db.execute("INSERT INTO porting_lineitem (id, product_id, quantity, total) SELECT "
               "md5('item' || g)::uuid, CASE WHEN g %% 7 = 0 THEN NULL ELSE 1 + g * 13 %% %s "
               "END, g %% 11 - 1, CASE WHEN g %% 10 = 3 THEN 1.00 END "
               "FROM generate_series(1, %s) g", (PRODUCTS, LINE_ITEMS))


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


@dataclass(frozen=True)
class Shape:
    """A worked example: its data step, what comes before it, and its plain form."""

    #: the migration before the data step: the plain form runs with its models, as the
    #: RunPython would in the one migration upstream writes
    after: str
    #: the ported data step, whose checkpoint tells when to kill
    data_step: str
    #: what migrate runs to: the data step, or (shape 3) through the RemoveField
    through: str
    plain: str
    #: the tables compared row by row (keys the two databases number alike)
    tables: tuple[str, ...]
    #: earlier shapes' migrations, recorded as applied without running (tested on their own)
    skipped: str | None = None
    #: the schema migration before the data step (shape 3), run in both databases
    schema: str | None = None


SHAPES = {
    "per-row JSON normalisation": Shape(
        after="0001_initial", data_step="0002_normalise_prefs", through="0002",
        plain="normalise_prefs",
        tables=("SELECT id, prefs FROM porting_profile ORDER BY id",)),
    "backfill from the latest related row": Shape(
        after="0002_normalise_prefs", data_step="0003_backfill_last_order", through="0003",
        plain="backfill_last_order", skipped="0002",
        tables=("SELECT id, last_order_at FROM porting_customer ORDER BY id",)),
    "new table from an old column, in three migrations": Shape(
        after="0004_macaddress", data_step="0005_populate_mac_addresses", through="0006",
        plain="populate_mac_addresses", skipped="0003", schema="0004",
        # the new rows' ids are the sequence's (a killed batch used some): compared by
        # what they hold, each interface's own and every row of the new table
        tables=("SELECT i.id, i.name, m.mac_address, m.interface_id FROM porting_interface i "
                "LEFT JOIN porting_macaddress m ON m.id = i.primary_mac_address_id "
                "ORDER BY i.id",
                "SELECT interface_id, mac_address FROM porting_macaddress "
                "ORDER BY interface_id, mac_address")),
    "UUID key with per-batch lookups": Shape(
        after="0006_remove_interface_mac_address", data_step="0007_line_item_totals",
        through="0007", plain="total_line_items", skipped="0006",
        tables=("SELECT id, product_id, quantity, total FROM porting_lineitem ORDER BY id",)),
}
SHAPE_3 = SHAPES["new table from an old column, in three migrations"]


def start_plain(db: LabDb, shape: Shape) -> subprocess.Popen[str]:
    """The plain form, with the models of the migration it would sit in (the historical
    ones, as RunPython gets them): shape 3's current Interface has no mac_address."""
    code = ("from django.db import connection; "
            "from django.db.migrations.loader import MigrationLoader; "
            "from porting import plain; "
            f"apps = MigrationLoader(connection).project_state(('porting', {shape.after!r}))"
            f".apps; plain.{shape.plain}(apps, connection.schema_editor())")
    return db.popen("shell", "-c", code, LAB_PORTING="1")


def migrate(db: LabDb, *args: str, deferred: bool = False) -> str:
    """migrate porting, to a migration; deferred: with CHUNKWISE_DEFER=1 (a release flow)."""
    if deferred:
        done = db.manage("migrate", "porting", *args, LAB_PORTING="1", CHUNKWISE_DEFER="1")
    else:
        done = db.manage("migrate", "porting", *args, LAB_PORTING="1")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def up_to_the_data_step(db: LabDb, shape: Shape) -> None:
    if shape.skipped:
        migrate(db, shape.skipped, "--fake", "-v0")
    if shape.schema:
        migrate(db, shape.schema, "-v0")


def kill_after_three_batches(db: LabDb, runner: subprocess.Popen[str], shape: Shape) -> None:
    wait_until(lambda: db.query(
        "SELECT 1 FROM chunkwise_checkpoint WHERE migration = %s AND batches >= 3",
        (shape.data_step,)), "three batches committed")
    assert runner.poll() is None, "the rows/s cap keeps the run going for about 2 s"
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=60)
    wait_until(lambda: not db.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"),
               "the killed run's lock is freed")
    assert db.query("SELECT state FROM chunkwise_checkpoint WHERE migration = %s",
                    (shape.data_step,)) == [(ShardState.RUNNING,)], "killed mid-run"


def tables(db: LabDb, shape: Shape) -> list[list[tuple[object, ...]]]:
    return [db.query(sql) for sql in shape.tables]


CAPPED = {"CHUNKWISE_BATCH_SIZE": "500", "CHUNKWISE_MAX_BATCH_SIZE": "500",
          "CHUNKWISE_MAX_ROWS_PER_SECOND": "5000"}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_a_ported_migration_leaves_the_table_its_plain_form_leaves_also_after_a_kill(
        porting_dbs: tuple[LabDb, LabDb], shape: Shape) -> None:
    plain_db, ported_db = porting_dbs
    for db in porting_dbs:
        up_to_the_data_step(db, shape)
    seeded = tables(ported_db, shape)
    plain = start_plain(plain_db, shape)  # meanwhile: the two databases share nothing
    runner = ported_db.popen("migrate", "porting", shape.through, LAB_PORTING="1", **CAPPED)
    kill_after_three_batches(ported_db, runner, shape)
    resumed = migrate(ported_db, shape.through)
    assert "verified: no row up to key" in resumed or shape.plain == "normalise_prefs", \
        resumed  # a todo (shape 1 has none): the verification is exact
    assert plain.wait(timeout=120) == 0, plain.communicate()[0]
    assert tables(plain_db, shape) != seeded, "the plain form changed the tables"
    assert tables(ported_db, shape) == tables(plain_db, shape)
    assert ported_db.query("SELECT count(*) FROM chunkwise_failedrow") == [(0,)]
    if shape is SHAPE_3:
        assert ported_db.query("SELECT column_name FROM information_schema.columns WHERE "
                               "table_name = 'porting_interface' ORDER BY ordinal_position"
                               ) == [("id",), ("name",), ("primary_mac_address_id",)]


def test_the_new_table_is_the_plain_forms_when_its_data_step_is_deferred_and_killed(
        porting_dbs: tuple[LabDb, LabDb]) -> None:
    """Shape 3 in a release flow: CHUNKWISE_DEFER=1 migrate records 0005 without running
    it; chunkwise_run (what a DataMigration's worker runs) is SIGKILLed mid-run; the next
    release's migrate reaches 0006, whose EnsureBatchedComplete finishes 0005 from its
    checkpoint before the RemoveField drops the column 0005 reads."""
    plain_db, ported_db = porting_dbs
    shape = SHAPE_3
    for db in porting_dbs:
        up_to_the_data_step(db, shape)
    plain = start_plain(plain_db, shape)
    deferred = migrate(ported_db, "0005", deferred=True)
    assert f"deferred porting.{shape.data_step}[0]" in deferred, deferred
    runner = ported_db.popen("chunkwise_run", "porting", "0005", "--batch-size", "500",
                             "--max-rows-per-second", "5000", LAB_PORTING="1")
    kill_after_three_batches(ported_db, runner, shape)
    released = migrate(ported_db, "0006", deferred=True)
    assert f"ensuring porting.{shape.data_step}[0] forward is complete: finishing it here" \
        in released, released
    assert "resuming after key" in released, released
    assert plain.wait(timeout=120) == 0, plain.communicate()[0]
    assert tables(ported_db, shape) == tables(plain_db, shape)
    assert ported_db.query("SELECT count(*) FROM chunkwise_failedrow") == [(0,)]
    assert ported_db.query("SELECT count(*) FROM information_schema.columns WHERE table_name "
                           "= 'porting_interface' AND column_name = 'mac_address'") == [(0,)]
