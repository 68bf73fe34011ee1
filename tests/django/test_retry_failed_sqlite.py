"""``chunkwise_run --retry-failed`` on SQLite, the embedded default: the lab project's
"lite" database. The rows a run recorded as failed are run again once the data is fixed,
each exactly once, also across a SIGKILL mid-retry."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import LAB, REPO

Lab = Callable[..., subprocess.CompletedProcess[str]]


def lab_env(db: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "labsite.settings",
            "LAB_SQLITE_PATH": str(db), "PYTHONPATH": f"{LAB}{os.pathsep}{REPO / 'operator'}",
            **extra}


def lab_on_sqlite(db: Path) -> Lab:
    def lab(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(LAB / "manage.py"), *args, "--database",
                               "lite"], env=lab_env(db, **extra), cwd=LAB, capture_output=True,
                              text=True, timeout=300)

    return lab


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Read while a runner may hold the write lock: SQLite lets readers in, but a commit
    takes the file for a moment, so a busy read asks again."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                return list(conn.execute(sql).fetchall())
        except sqlite3.OperationalError:
            assert time.monotonic() < deadline, f"the database stayed locked: {sql}"
            time.sleep(0.05)


def execute(db: Path, sql: str) -> None:
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute(sql)


def counters(db: Path) -> dict[int, int]:
    return {int(str(c)): int(str(n)) for c, n in
            query(db, "SELECT counter, count(*) FROM lab_item GROUP BY counter")}


def recorded(db: Path) -> list[str]:
    return [str(k) for (k,) in query(db, "SELECT key FROM chunkwise_failedrow "
                                         "ORDER BY CAST(key AS INTEGER)")]


def lab_with_items(tmp_path: Path, count: int, bad: dict[int, str]) -> tuple[Path, Lab]:
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    for target in (["chunkwise"], ["lab", "0001"]):
        migrated = subprocess.run([sys.executable, str(LAB / "manage.py"), "migrate", *target,
                                   "--database", "lite", "-v0"], env=lab_env(db), cwd=LAB,
                                  capture_output=True, text=True, timeout=300)
        assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_item (id, counter, payload, score) VALUES (?, 0, ?, 0)",
                         [(key, bad.get(key, "")) for key in range(1, count + 1)])
    return db, lab


def test_a_retry_runs_each_failed_row_once_even_after_a_kill(tmp_path: Path) -> None:
    """lab.0002 (per row, counter + 1, not idempotent): 12 rows fail. With 11 fixed, a
    retry of one row a batch is SIGKILLed after its third batch committed; the next retry
    does the rest, the row still broken fails again and stays recorded (its time moved);
    once that one is fixed too, the last retry empties the list. Every row changed once."""
    bad = {key: "raise" for key in range(75, 2000, 160)}
    db, lab = lab_with_items(tmp_path, 2000, bad)
    run = lab("chunkwise_run", "lab", "0002", "--batch-size", "200",
              "--halt-failure-rate", "1", "--halt-consecutive-failed-batches", "20")
    assert run.returncode == 0, run.stderr
    assert recorded(db) == [str(key) for key in bad]
    broken = str(max(bad))
    execute(db, f"UPDATE lab_item SET payload = '' WHERE id <> {broken}")
    [(first_failed_at,)] = query(db, "SELECT created_at FROM chunkwise_failedrow "
                                     f"WHERE key = '{broken}'")

    retry = subprocess.Popen(
        [sys.executable, str(LAB / "manage.py"), "chunkwise_run", "lab", "0002", "--database",
         "lite", "--retry-failed", "--batch-size", "1", "--min-batch-size", "1",
         "--max-batch-size", "1"], env=lab_env(db, LAB_ROW_SLEEP="0.2"), cwd=LAB,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(recorded(db)) > 9:
        assert retry.poll() is None and time.monotonic() < deadline, "no retry batch committed"
        time.sleep(0.02)
    retry.send_signal(signal.SIGKILL)
    retry.wait(timeout=30)
    left = len(recorded(db))
    assert 1 < left <= 9
    assert counters(db) == {1: 2000 - left, 0: left}
    assert query(db, "SELECT rows_processed, failed_rows FROM chunkwise_checkpoint") == \
        [(2000 - left, left)]

    again = lab("chunkwise_run", "lab", "0002", "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert (f"done (FailedRowsRetried): retried {left}, succeeded {left - 1}, failed again 1, "
            "dropped 0 (no longer matched todo); 1 row still recorded as failed") in again.stderr
    assert counters(db) == {1: 1999, 0: 1}
    assert recorded(db) == [broken]
    [(failed_at,)] = query(db, "SELECT created_at FROM chunkwise_failedrow")
    assert str(failed_at) > str(first_failed_at)

    execute(db, f"UPDATE lab_item SET payload = '' WHERE id = {broken}")
    last = lab("chunkwise_run", "lab", "0002", "--retry-failed")
    assert last.returncode == 0, last.stderr
    assert "retried 1, succeeded 1, failed again 0" in last.stderr
    assert counters(db) == {1: 2000}
    assert recorded(db) == []
    assert query(db, "SELECT state, rows_processed, failed_rows FROM chunkwise_checkpoint") == \
        [("done", 2000, 0)]


def test_a_set_based_retry_drops_what_left_todo(tmp_path: Path) -> None:
    """lab.0007 (set-based, todo: status IS NULL): rows breaking a CHECK are recorded; one
    fixed is done by the retry, one the application finished itself is dropped."""
    db, lab = lab_with_items(tmp_path, 500, {7: "negative", 300: "negative"})
    run = lab("chunkwise_run", "lab", "0007")
    assert run.returncode == 0, run.stderr
    assert recorded(db) == ["7", "300"]
    execute(db, "UPDATE lab_item SET payload = '' WHERE id = 7")
    execute(db, "UPDATE lab_item SET status = 'manual' WHERE id = 300")
    retry = lab("chunkwise_run", "lab", "0007", "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    assert "retried 1, succeeded 1, failed again 0, dropped 1 (no longer matched todo)" \
        in retry.stderr
    assert "verified: no row up to key 500 still matches todo" in retry.stderr
    assert query(db, "SELECT id, status, score FROM lab_item WHERE id IN (7, 300) ORDER BY id"
                 ) == [(7, "done", 0), (300, "manual", 0)]
    assert recorded(db) == []


def test_migrate_refuses_to_be_asked_for_a_retry(tmp_path: Path) -> None:
    """CHUNKWISE_RETRY_FAILED is chunkwise_run's (spec.retryFailed): migrate would run the
    migration instead, so it says so in one line and runs nothing."""
    db, _ = lab_with_items(tmp_path, 100, {})
    result = subprocess.run([sys.executable, str(LAB / "manage.py"), "migrate", "--database",
                             "lite", "lab", "0002"], env=lab_env(db, CHUNKWISE_RETRY_FAILED="1"),
                            cwd=LAB, capture_output=True, text=True, timeout=300)
    assert result.returncode == 64, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert ("CHUNKWISE_RETRY_FAILED is set, but migrate does not retry failed rows (it would "
            "run lab.0002_bump_items instead): unset it, and retry them with manage.py "
            "chunkwise_run lab 0002_bump_items --retry-failed") in line
    assert counters(db) == {0: 100}
    assert query(db, "SELECT count(*) FROM django_migrations WHERE app = 'lab' "
                     "AND name = '0002_bump_items'") == [(0,)]
