"""The tutorial's first step (docs/tutorial/django.md) as a reader runs it: the README's
`scripts/quickstart`, which the tutorial includes whole, on the example shop and SQLite."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_seeds_the_shop_and_migrate_runs_both_batched_migrations(
        tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    # a reader's shell: none of the settings the other tests' fixtures export
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHUNKWISE_", "PG", "DJANGO_"))}
    env["SHOP_SQLITE_PATH"] = str(db)
    run = subprocess.run([str(REPO / "scripts" / "quickstart"), "3000"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert "shop.0002_customer_status[0] forward" in out and "3,000" in out, out
    # chunkwise_status, the script's last command, lists both operations as done
    status = [line.split() for line in run.stdout.splitlines() if line.startswith("shop.")]
    assert {(row[0], row[4]) for row in status} == {
        ("shop.0002_customer_status", "done"), ("shop.0003_count_visit", "done")}, run.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM shop_customer WHERE status IS NULL"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT min(visits), max(visits) FROM shop_customer").fetchone() \
            == (1, 1)
