"""``chunkwise_run --retry-failed`` on a real PostgreSQL server: the rows a run recorded as
failed, run again once the data (or the code) is fixed, each exactly once."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import LabDb
from tests.django.test_batches_pg import checkpoint, counters, seed_items, wait_until

pytestmark = pytest.mark.postgres


def records(db: LabDb) -> list[tuple[str, str]]:
    """(key, error class) of every failed row recorded, in key order."""
    return [(str(k), str(c)) for k, c in db.query(
        "SELECT key, error_class FROM chunkwise_failedrow ORDER BY key::int")]


def runner_lock_freed(db: LabDb) -> None:
    # a killed client's backend lets its advisory lock go a moment later
    wait_until(lambda: not db.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"),
               "the runner lock is freed")


def test_a_retry_runs_each_failed_row_once_and_keeps_what_fails_again(lab_db: LabDb) -> None:
    """lab.0002 (per row, counter + 1, not idempotent) fails rows whose payload says
    raise. Before the fix a retry halts on its own budget and changes nothing; after it,
    each fixed row is changed once and its record goes; a row that fails again (now in
    the write-back: the counter would pass the column's range) stays recorded, with the
    new error and time; a last retry after that row is fixed empties the list."""
    seed_items(lab_db, 3000, payload_at={137: "raise", 1500: "raise", 2999: "raise"})
    run = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "500")
    assert run.returncode == 0, run.stderr
    assert records(lab_db) == [("137", "ValueError"), ("1500", "ValueError"),
                               ("2999", "ValueError")]
    first_seen = lab_db.query("SELECT created_at FROM chunkwise_failedrow WHERE key = '2999'")

    unfixed = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed",
                            "--halt-failed-rows", "1")
    assert unfixed.returncode == 65, unfixed.stderr
    assert ("retry: HALTED (FailedRowsExceeded): in this retry, 2 rows failed, more than "
            "--halt-failed-rows=1; fix the code or the data that make rows fail, or raise "
            "--halt-failed-rows; then retry again (--retry-failed); so far retried 2, "
            "succeeded 0, failed again 2, dropped 0 (no longer matched todo); 3 rows still "
            "recorded as failed\n") in unfixed.stderr
    assert counters(lab_db) == {1: 2997, 0: 3}
    assert len(records(lab_db)) == 3

    lab_db.execute("UPDATE lab_item SET payload = '' WHERE id IN (137, 1500, 2999)")
    lab_db.execute("UPDATE lab_item SET counter = 2147483647 WHERE id = 2999")
    fixed = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert fixed.returncode == 0, fixed.stderr
    assert ("lab.0002_bump_items[0] forward retry: done (FailedRowsRetried): retried 3, "
            "succeeded 2, failed again 1, dropped 0 (no longer matched todo); 1 row still "
            "recorded as failed\n") in fixed.stderr
    assert lab_db.query("SELECT id, counter FROM lab_item WHERE id IN (137, 1500, 2999) "
                        "ORDER BY id") == [(137, 1), (1500, 1), (2999, 2147483647)]
    [(key, error, message, when)] = lab_db.query(
        "SELECT key, error_class, message, created_at FROM chunkwise_failedrow")
    assert key == "2999" and error != "ValueError" and "out of range" in str(message)
    assert when > first_seen[0][0]  # type: ignore[operator]
    cp = checkpoint(lab_db, "0002_bump_items")
    assert (cp["state"], cp["rows_processed"], cp["failed_rows"]) == ("done", 2999, 1)

    lab_db.execute("UPDATE lab_item SET counter = 0 WHERE id = 2999")
    last = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert last.returncode == 0, last.stderr
    assert "retried 1, succeeded 1, failed again 0, dropped 0 (no longer matched todo); " \
           "0 rows still recorded as failed" in last.stderr
    assert counters(lab_db) == {1: 3000}
    assert records(lab_db) == []
    cp = checkpoint(lab_db, "0002_bump_items")
    assert (cp["rows_processed"], cp["failed_rows"]) == (3000, 0)

    nothing = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert nothing.returncode == 64, nothing.stderr
    [line] = nothing.stderr.strip().splitlines()
    assert ("--retry-failed: lab.0002_bump_items[0] forward has no failed rows recorded, so "
            "there is nothing to retry") in line
    # in a pod (the Job ran it again after its last commit, or a new image came while
    # spec.retryFailed stays true), the retry is done, not misconfigured (review)
    again = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed",
                          CHUNKWISE_RESOURCE="shop/customer-status")
    assert again.returncode == 0, again.stderr
    assert "FailedRowsRetried" in again.stderr and "nothing left to retry" in again.stderr
    assert counters(lab_db) == {1: 3000}


def test_a_set_based_retry_drops_rows_that_left_todo_and_verifies_again(
        lab_db: LabDb) -> None:
    """lab.0007 (set-based, todo: status IS NULL) records rows that break a CHECK. One is
    fixed; the application marks the other done itself, so it no longer matches todo: it
    is dropped without running the code. The run's check is made again."""
    seed_items(lab_db, 2000, gap=2, payload_at={10: "negative", 1500: "negative"})
    run = lab_db.manage("chunkwise_run", "lab", "0007", "--batch-size", "100")
    assert run.returncode == 0, run.stderr
    assert "verified: 2 rows up to key 4000 still match todo: 2 recorded as failed, 0 missed" \
        in run.stderr
    lab_db.execute("UPDATE lab_item SET payload = '' WHERE id = 10")
    lab_db.execute("UPDATE lab_item SET status = 'manual', payload = '' WHERE id = 1500")
    retry = lab_db.manage("chunkwise_run", "lab", "0007", "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    assert "retried 1, succeeded 1, failed again 0, dropped 1 (no longer matched todo)" \
        in retry.stderr
    assert "verified: no row up to key 4000 still matches todo" in retry.stderr
    assert lab_db.query("SELECT id, status FROM lab_item WHERE id IN (10, 1500) "
                        "ORDER BY id") == [(10, "done"), (1500, "manual")]
    assert lab_db.query("SELECT count(*) FROM lab_item WHERE status IS NULL") == [(0,)]
    assert records(lab_db) == []
    assert lab_db.query("SELECT rows_processed, failed_rows, rows_remaining, rows_missed "
                        "FROM chunkwise_checkpoint") == [(1999, 0, 0, 0)]


def test_a_retry_covers_every_shard(lab_db: LabDb) -> None:
    """lab.0003 (set-based, counter + 1, no todo) run as 3 shards, with failing rows in
    each: one retry, one process, does them all, and each shard's counts stay true."""
    bad = {100: "negative", 2500: "negative", 5800: "negative", 5900: "negative"}
    seed_items(lab_db, 6000, payload_at=bad)
    run = lab_db.manage("chunkwise_run", "lab", "0003", "--shards", "3", "--batch-size", "200")
    assert run.returncode == 0, run.stderr
    assert lab_db.query("SELECT shard, failed_rows FROM chunkwise_checkpoint ORDER BY shard"
                        ) == [(0, 1), (1, 1), (2, 2)]
    lab_db.execute("UPDATE lab_item SET payload = '' WHERE id IN (100, 2500, 5800, 5900)")
    retry = lab_db.manage("chunkwise_run", "lab", "0003", "--retry-failed", "--shards", "3")
    assert retry.returncode == 0, retry.stderr
    assert "4 failed rows recorded over 3 shards" in retry.stderr
    assert "retried 4, succeeded 4, failed again 0" in retry.stderr
    assert counters(lab_db) == {1: 6000}
    assert lab_db.query("SELECT shard, rows_processed, failed_rows FROM chunkwise_checkpoint "
                        "ORDER BY shard") == [(0, 2000, 0), (1, 2000, 0), (2, 2000, 0)]


def test_a_retry_killed_mid_way_resumes_without_repeating_a_row(lab_db: LabDb) -> None:
    """SIGKILL after the retry's second batch committed (one row a batch): the rows it did
    lost their records in the same transaction, so the next retry does only the rest.
    Every row is changed exactly once (counter + 1 is not idempotent)."""
    bad = {k: "raise" for k in range(50, 1000, 100)}  # 10 rows
    seed_items(lab_db, 1000, payload_at=bad)
    run = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "100",
                        "--halt-failure-rate", "1", "--halt-consecutive-failed-batches", "20")
    assert run.returncode == 0, run.stderr
    assert len(records(lab_db)) == 10
    lab_db.execute("UPDATE lab_item SET payload = ''")
    one_at_a_time = ("--batch-size", "1", "--min-batch-size", "1", "--max-batch-size", "1")
    retry = lab_db.popen("chunkwise_run", "lab", "0002", "--retry-failed", *one_at_a_time,
                         LAB_ROW_SLEEP="0.2")
    wait_until(lambda: len(records(lab_db)) <= 8, "the retry committed two batches")
    retry.send_signal(signal.SIGKILL)
    retry.wait(timeout=30)
    runner_lock_freed(lab_db)
    left = len(records(lab_db))
    assert 0 < left <= 8
    assert counters(lab_db) == {1: 1000 - left, 0: left}
    cp = checkpoint(lab_db, "0002_bump_items")
    assert (cp["rows_processed"], cp["failed_rows"]) == (1000 - left, left)
    again = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert again.returncode == 0, again.stderr
    assert f"retried {left}, succeeded {left}, failed again 0" in again.stderr
    assert counters(lab_db) == {1: 1000}
    cp = checkpoint(lab_db, "0002_bump_items")
    assert (cp["rows_processed"], cp["failed_rows"]) == (1000, 0)


def test_a_retry_waits_for_nobody_a_second_one_is_busy(lab_db: LabDb) -> None:
    """Two retries at once: the second exits 69 (busy) at once, as a second runner does,
    and the first does every row once."""
    seed_items(lab_db, 500, payload_at={k: "raise" for k in range(5, 500, 17)})  # 30 rows
    run = lab_db.manage("chunkwise_run", "lab", "0002", "--halt-consecutive-failed-batches",
                        "10")
    assert run.returncode == 0, run.stderr
    assert len(records(lab_db)) == 30
    lab_db.execute("UPDATE lab_item SET payload = ''")
    first = lab_db.popen("chunkwise_run", "lab", "0002", "--retry-failed", "--batch-size", "1",
                         "--min-batch-size", "1", "--max-batch-size", "1", LAB_ROW_SLEEP="0.3")
    wait_until(lambda: len(records(lab_db)) <= 29, "the first retry committed a batch")
    second = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert second.returncode == 69, second.stderr
    assert "is being run, or its failed rows retried, by another process now" in second.stderr
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    assert counters(lab_db) == {1: 500}


def test_a_run_that_is_not_done_is_not_retried(lab_db: LabDb) -> None:
    """A halted run: its failed rows wait until the run is done (one line, exit 64,
    nothing changed); raising the threshold finishes it, and then the retry runs."""
    seed_items(lab_db, 2000, payload_at={k: "raise" for k in range(100, 1100, 100)})
    halted = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "100",
                           "--halt-failed-rows", "3", "--halt-consecutive-failed-batches", "50")
    assert halted.returncode == 65, halted.stderr
    lab_db.execute("UPDATE lab_item SET payload = ''")
    before = counters(lab_db)
    refused = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert refused.returncode == 64, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert ("--retry-failed: lab.0002_bump_items[0] forward is not done (halted); its 4 "
            "failed rows are retried once every row of the run has been through it: run "
            "chunkwise_run lab 0002_bump_items to the end first") in line
    assert counters(lab_db) == before and len(records(lab_db)) == 4
    finished = lab_db.manage("chunkwise_run", "lab", "0002", "--halt-failed-rows", "10")
    assert finished.returncode == 0, finished.stderr
    retry = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    assert "retried 4, succeeded 4, failed again 0" in retry.stderr
    assert counters(lab_db) == {1: 2000}


def test_retry_and_dry_run_together_are_refused(lab_db: LabDb) -> None:
    both = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed",
                         CHUNKWISE_DRY_RUN="1")
    assert both.returncode == 64, both.stderr
    [line] = both.stderr.strip().splitlines()
    assert ("--retry-failed and --dry-run ask for two runs at once: a retry writes, a dry run "
            "writes nothing; give one of them") in line
    pod = lab_db.manage("chunkwise_run", "lab", "0002", CHUNKWISE_RETRY_FAILED="yes",
                        CHUNKWISE_DRY_RUN="1", CHUNKWISE_RESOURCE="shop/bump")
    assert pod.returncode == 64, pod.stderr
    assert "spec.retryFailed and spec.dryRun ask for two runs at once" in pod.stderr
    maybe = lab_db.manage("chunkwise_run", "lab", "0002", CHUNKWISE_RETRY_FAILED="maybe")
    assert maybe.returncode == 64, maybe.stderr
    assert "CHUNKWISE_RETRY_FAILED: expected true or false" in maybe.stderr


def test_migrate_records_the_migration_once_the_retry_leaves_no_failed_row(
        lab_db: LabDb) -> None:
    """The local flow: migrate runs lab.0002, rows fail, and migrate does not record the
    migration applied; the data is fixed, the retry does those rows, and migrate then
    records it at once (the run is done, nothing is left recorded)."""
    seed_items(lab_db, 1000, payload_at={10: "raise", 900: "raise"})
    first = lab_db.manage("migrate", "lab", "0002")
    assert first.returncode == 65, first.stderr
    assert "--retry-failed" in first.stderr
    lab_db.execute("UPDATE lab_item SET payload = ''")
    retry = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    assert "retried 2, succeeded 2, failed again 0" in retry.stderr
    again = lab_db.manage("migrate", "lab", "0002")
    assert again.returncode == 0, again.stderr
    assert lab_db.query("SELECT 1 FROM django_migrations WHERE app = 'lab' "
                        "AND name = '0002_bump_items'") == [(1,)]
    assert counters(lab_db) == {1: 1000}
