"""SQLite, the embedded default: the same operation, no lock_timeout (and it says so)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.support.shop import SHOP, shop_env


def sqlite_env(db: Path) -> dict[str, str]:
    return shop_env({"SHOP_SQLITE_PATH": str(db)})


def committed_batches(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            row = conn.execute("SELECT batches FROM chunkwise_checkpoint "
                               "WHERE migration = '0002_customer_status'").fetchone()
    except sqlite3.OperationalError:  # the table is being written; ask again
        return 0
    return int(row[0]) if row else 0


def shop(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SHOP / "manage.py"), *args], env=sqlite_env(db),
                          cwd=SHOP, capture_output=True, text=True, timeout=300)


def test_shop_example_on_sqlite_migrates_in_batches_and_resumes(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    assert shop(db, "migrate", "chunkwise").returncode == 0
    assert shop(db, "migrate", "shop", "0001").returncode == 0
    seeded = shop(db, "seed_customers", "20000")
    assert seeded.returncode == 0 and "seeded 20,000" in seeded.stdout
    # halfway: run 0002 alone, stopping it after a few batches by a tiny rows/s cap + SIGTERM
    runner = subprocess.Popen(
        [sys.executable, str(SHOP / "manage.py"), "chunkwise_run", "shop", "0002",
         "--batch-size", "1000", "--max-rows-per-second", "4000"],
        env=sqlite_env(db),
        cwd=SHOP, stderr=subprocess.PIPE, text=True)
    # stop it once a few batches have committed (the rows/s cap keeps it from finishing)
    deadline = time.monotonic() + 60
    while committed_batches(db) < 3:
        assert runner.poll() is None and time.monotonic() < deadline, "no batches committed"
        time.sleep(0.05)
    runner.terminate()
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 75, err
    assert "sqlite has no lock_timeout, statement_timeout or row locks" in err
    with sqlite3.connect(db) as conn:
        done = conn.execute(
            "SELECT count(*) FROM shop_customer WHERE status IS NOT NULL").fetchone()
    assert 0 < done[0] < 20000
    result = shop(db, "migrate")
    assert result.returncode == 0, result.stderr
    assert f"resuming after key {done[0]}" in result.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT status, min(visits), max(visits), count(*) FROM shop_customer "
                            "GROUP BY status ORDER BY status").fetchall()
    assert [r[0] for r in rows] == ["active", "inactive"]
    assert all(r[1] == r[2] == 1 for r in rows)  # the per-row migration: every row exactly once
    assert sum(r[3] for r in rows) == 20000
    with sqlite3.connect(db) as conn:
        (batches,) = conn.execute("SELECT batches FROM chunkwise_checkpoint "
                                  "WHERE migration = '0003_count_visit'").fetchone()
    assert batches <= 10  # batch_size 5000 on 20k rows: no 0.5%-of-rows cap on SQLite
    status = shop(db, "chunkwise_status")
    assert "shop.0002_customer_status" in status.stdout and "done" in status.stdout


def test_sqlite_reports_no_lock_wait_it_did_not_measure(tmp_path: Path) -> None:
    """SQLite has no row locks: the time its batches spend reading their rows is not lock
    wait, so neither the progress line, the plan nor the checkpoint call it one."""
    db = tmp_path / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "3000"]):
        assert shop(db, *args).returncode == 0
    plan = shop(db, "chunkwise_run", "shop", "0002", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "rows/s" in plan.stdout and "lock wait" not in plan.stdout, plan.stdout
    run = shop(db, "chunkwise_run", "shop", "0002", "--batch-size", "500")
    assert run.returncode == 0, run.stderr
    [last] = [line for line in run.stderr.splitlines() if "3,000/3,000 rows" in line]
    assert "rows/s" in last and "lock wait" not in last, run.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT lock_wait_seconds FROM chunkwise_checkpoint WHERE "
                            "migration = '0002_customer_status'").fetchone() == (0.0,)
