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
