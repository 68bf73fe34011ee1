"""The deploy flow on the embedded default (SQLite): a deferring migrate plans the batched
operation, records the migration and moves on; chunkwise_manifest lists what is left; a
later migration's EnsureBatchedComplete finishes it inline; then nothing is left."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from tests.django.test_sqlite import sqlite_env
from tests.support.shop import SHOP


def shop(db: Path, *args: str, defer: str = "") -> subprocess.CompletedProcess[str]:
    env = {**sqlite_env(db), "CHUNKWISE_DEFER": defer}
    return subprocess.run([sys.executable, str(SHOP / "manage.py"), *args], env=env, cwd=SHOP,
                          capture_output=True, text=True, timeout=300)


def test_defer_then_manifest_then_ensure_finishes_it(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "3000"]):
        assert shop(db, *args).returncode == 0
    deferred = shop(db, "migrate", "shop", "0002", defer="1")
    assert deferred.returncode == 0, deferred.stderr
    [line] = [x for x in deferred.stdout.splitlines() if "deferred" in x]
    assert line.strip().startswith("deferred shop.0002_customer_status[0] (3,000 rows to do, "
                                   "up to key 3000): run it with a DataMigration")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM shop_customer WHERE status IS NULL"
                            ).fetchone() == (3000,)
        assert conn.execute("SELECT state, rows_estimated, batches FROM chunkwise_checkpoint"
                            ).fetchall() == [("deferred", 3000, 0)]
        assert conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'shop' AND "
                            "name = '0002_customer_status'").fetchone() == (1,)

    listed = shop(db, "chunkwise_manifest", "--image", "registry.example.com/shop:2",
                  "--namespace", "shop", "--env-from-secret", "shop-db")
    assert listed.returncode == 0, listed.stderr
    [document] = yaml.safe_load_all(listed.stdout)
    assert document["metadata"] == {"name": "shop-0002-customer-status", "namespace": "shop"}
    assert document["spec"]["image"] == "registry.example.com/shop:2"
    as_json = shop(db, "chunkwise_manifest", "--image", "x:1", "-o", "json")
    assert '"kind": "List"' in as_json.stdout

    planned = shop(db, "migrate", "--plan")
    assert "Ensure batched data migration shop.0002_customer_status is complete" in \
        planned.stdout
    finalized = shop(db, "migrate")  # a developer's migrate: 0003 inline, 0004 finishes 0002
    assert finalized.returncode == 0, finalized.stderr
    assert ("ensuring shop.0002_customer_status[0] forward is complete: finishing it here"
            in finalized.stdout)
    assert "shop.0002_customer_status[0] forward: done (Completed)" in finalized.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM shop_customer WHERE status IS NULL"
                            ).fetchone() == (0,)
        try:  # the constraint release 3 adds, which needed the migrated data
            conn.execute("UPDATE shop_customer SET status = NULL WHERE id = 1")
            raise AssertionError("the CHECK constraint did not hold")
        except sqlite3.IntegrityError as exc:
            assert "shop_customer_status_set" in str(exc)
    left = shop(db, "chunkwise_manifest", "--image", "x:1")
    assert left.returncode == 0 and left.stdout == ""
    assert "no batched operation left to run" in left.stderr


def test_manifest_bad_input_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    assert shop(db, "migrate", "chunkwise").returncode == 0
    for args, message in ((["--image", "a b"], "--image: expected an image reference"),
                          (["--image", "x:1", "nosuchapp"], "app_label: no installed app is "
                                                            "called 'nosuchapp'"),
                          (["--image", "x:1", "--database", "replica"],
                           "--database: no database alias 'replica'"),
                          ([], "the following arguments are required: --image")):
        result = shop(db, "chunkwise_manifest", *args)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_bad_defer_value_stops_migrate_before_anything_is_written(tmp_path: Path) -> None:
    """The system check (chunkwise.E002) names it before migrate starts; past it
    (--skip-checks), the operation itself stops migrate with one line and exit 64."""
    db = tmp_path / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"]):
        assert shop(db, *args).returncode == 0
    message = "CHUNKWISE_DEFER: expected true or false (1/0, yes/no, on/off), got 'sometimes'"
    checked = shop(db, "migrate", "shop", "0002", defer="sometimes")
    assert checked.returncode == 1 and f"(chunkwise.E002) {message}" in checked.stderr
    assert "Traceback" not in checked.stderr and "Applying" not in checked.stdout
    result = shop(db, "migrate", "--skip-checks", "shop", "0002", defer="sometimes")
    assert result.returncode == 64
    assert message in result.stderr and "Traceback" not in result.stderr
    with sqlite3.connect(db) as conn:  # not recorded as applied, nothing planned
        assert conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'shop' AND "
                            "name = '0002_customer_status'").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM chunkwise_checkpoint").fetchone() == (0,)
