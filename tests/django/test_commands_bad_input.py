"""Bad input to chunkwise_run: one line naming the problem, exit 64 (usage), no
traceback, nothing written. (A second runner, exit 69, is tested on PostgreSQL.)"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import LAB, REPO
from tests.django.test_sqlite import shop, sqlite_env
from tests.support.shop import SHOP

CASES = [
    (["shop", "0002", "--bogus"], "unrecognized arguments: --bogus"),
    (["shop", "0002", "--batch-size", "abc"], "batch.size (--batch-size): expected an integer"),
    (["shop", "0002", "--lock-timeout", "2 seconds"], "timeouts.lock (--lock-timeout)"),
    (["shop", "0002", "--batch-size", "0"], "batch.size (--batch-size): expected an integer >= 1, "
                                            "got 0"),
    (["shop", "0002", "--max-locked-fraction", "1.5"], "batch.maxLockedFraction"),
    (["shop", "0999"], "There is no migration for 'shop' with the prefix '0999'"),
    (["nosuchapp", "0002"], "app_label: no installed app is called 'nosuchapp' (apps with "
                            "migrations: chunkwise, shop)"),
    (["shop", "0002", "--operation", "3"], "--operation: expected the index of a "
                                           "BatchedRunPython operation"),
    (["shop", "0001"], "migration_name: shop.0001_initial has no BatchedRunPython operation; "
                       "chunkwise_run runs one of those (migrate applies the rest)"),
    (["shop", "0002", "--direction", "sideways"], "argument --direction: invalid choice"),
    (["shop", "0003", "--direction", "backward"], "has none (it is irreversible)"),
    (["shop", "0002", "--database", "replica"], "--database: no database alias 'replica'"),
    (["shop", "0002", "--metrics-port", "http"], "--metrics-port (CHUNKWISE_METRICS_PORT)"),
    ([], "app_label and migration_name are required"),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad-input") / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "100"]):
        assert shop(path, *args).returncode == 0
    return path


@pytest.mark.parametrize(("args", "message"), CASES, ids=[m for _, m in CASES])
def test_bad_input_is_one_line_exit_64_and_writes_nothing(db: Path, args: list[str],
                                                          message: str) -> None:
    result = shop(db, "chunkwise_run", *args)
    assert result.returncode == 64, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_written(db)


def assert_nothing_written(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM chunkwise_checkpoint").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM shop_customer WHERE status IS NOT NULL"
                            ).fetchone() == (0,)


def test_a_direction_from_the_environment_is_checked_as_the_flags_is(db: Path) -> None:
    """argparse checks --direction's choices, not the default it takes from
    CHUNKWISE_DIRECTION: a word that is no direction must not run as one."""
    result = subprocess.run([sys.executable, str(SHOP / "manage.py"), "chunkwise_run", "shop",
                             "0002"], env={**sqlite_env(db), "CHUNKWISE_DIRECTION": "sideways"},
                            cwd=SHOP, capture_output=True, text=True, timeout=300)
    assert result.returncode == 64, result.stderr
    assert result.stderr.strip().splitlines() == [
        "CommandError: --direction (CHUNKWISE_DIRECTION): expected forward or backward, got "
        "'sideways'"], result.stderr
    assert_nothing_written(db)


def test_status_reads_a_checkpoint_of_a_direction_no_longer_accepted(tmp_path: Path) -> None:
    """An older chunkwise wrote 'sideways' checkpoint rows (see the test above):
    chunkwise_status lists such a row, judged by its heartbeat, without a traceback."""
    db = tmp_path / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"]):
        assert shop(db, *args).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO chunkwise_checkpoint (app_label, migration, operation, direction, "
            "shard, shard_count, model, key_field, rows_estimated, rows_processed, "
            "failed_rows, batches, consecutive_failed_batches, lock_wait_seconds, state, "
            "message, owner, planned, started_at, heartbeat_at) VALUES ('shop', "
            "'0002_customer_status', 0, 'sideways', 0, 1, 'shop.Customer', 'id', 0, 0, 0, "
            "0, 0, 0, 'running', '', '', 0, datetime('now'), datetime('now', '-1 hour'))")
    result = shop(db, "chunkwise_status")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    [row] = [line.split() for line in result.stdout.splitlines() if "sideways" in line]
    assert "stale" in row, result.stdout


def lab_on_sqlite(db: Path, **extra: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """manage.py of the lab project, its "lite" database at ``db``, with the `mistakes` app."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "labsite.settings", "LAB_MISTAKES": "1",
           "LAB_SQLITE_PATH": str(db), "PYTHONPATH": f"{LAB}{os.pathsep}{REPO / 'operator'}",
           **extra}

    def lab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(LAB / "manage.py"), *args], env=env,
                              cwd=LAB, capture_output=True, text=True, timeout=300)

    return lab


def test_a_key_that_is_not_unique_is_refused_before_any_row(tmp_path: Path) -> None:
    """The lab's `mistakes` app (installed only with LAB_MISTAKES) batches Visit by email,
    which many rows share: keyset batching would skip or repeat rows, so it is refused."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    assert lab("migrate", "--database", "lite", "chunkwise", "-v0").returncode == 0
    assert lab("migrate", "--database", "lite", "mistakes", "0001", "-v0").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO mistakes_visit (email, counter) VALUES (?, 0)",
                         [("a@example.com",), ("a@example.com",), ("b@example.com",)])
    result = lab("chunkwise_run", "mistakes", "0002", "--database", "lite")
    assert result.returncode == 64, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert ("BatchedRunPython key: mistakes.Visit.email must be the primary key or a unique "
            "field") in line
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM chunkwise_checkpoint").fetchone() == (0,)
        assert conn.execute("SELECT sum(counter) FROM mistakes_visit").fetchone() == (0,)


def shop_with(db: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SHOP / "manage.py"), *args],
                          env={**sqlite_env(db), **env}, cwd=SHOP, capture_output=True,
                          text=True, timeout=300)


def test_an_unknown_dry_run_value_is_refused_naming_the_variable(db: Path) -> None:
    result = shop_with(db, {"CHUNKWISE_DRY_RUN": "maybe"}, "chunkwise_run", "shop", "0002")
    assert result.returncode == 64, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "CHUNKWISE_DRY_RUN: expected true or false (1/0, yes/no, on/off), got 'maybe'" \
        in line


@pytest.mark.parametrize("value", ["False", "no", "off"])
def test_dry_run_false_in_any_spelling_runs_for_real(tmp_path: Path, value: str) -> None:
    db = tmp_path / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "50"]):
        assert shop(db, *args).returncode == 0
    result = shop_with(db, {"CHUNKWISE_DRY_RUN": value}, "chunkwise_run", "shop", "0002")
    assert result.returncode == 0, result.stderr
    assert "dry run" not in result.stdout + result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM shop_customer WHERE status IS NOT NULL"
                            ).fetchone() == (50,)


def test_a_misconfigured_migration_stops_migrate_with_one_line_exit_64(tmp_path: Path) -> None:
    """Mistakes only running can tell (the system checks name them first; --skip-checks
    reaches the run): one line and exit 64, as chunkwise_run says them, no traceback."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    for target in (["chunkwise"], ["lab", "0004"], ["mistakes", "0001"]):
        assert lab("migrate", "--database", "lite", "--skip-checks", *target, "-v0"
                   ).returncode == 0
    for target, message in ((["lab", "0005"], "BatchedMigrationMisconfigured: lab.0005_atomic_"
                                              "by_mistake[0] forward: BatchedRunPython commits "
                                              "batch by batch, so its migration needs `atomic "
                                              "= False`"),
                            (["mistakes", "0002"], "BatchedMigrationMisconfigured: "
                                                   "BatchedRunPython key: mistakes.Visit.email "
                                                   "must be the primary key or a unique field")):
        result = lab("migrate", "--database", "lite", "--skip-checks", *target)
        assert result.returncode == 64, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(message), result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM django_migrations WHERE name IN "
                            "('0005_atomic_by_mistake', '0002_key_not_unique')").fetchall() == []
