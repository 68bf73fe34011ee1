"""A run's failed rows marked for retry (the admin's action), taken up by the next
``chunkwise_run`` by hand; and chunkwise's migration 0004, which holds the marks, never
in the way of a migration written against 0003."""

from __future__ import annotations

import datetime

import pytest

from tests.conftest import LabDb
from tests.django.test_batches_pg import counters, seed_items
from tests.django.test_retry_failed_pg import records

pytestmark = pytest.mark.postgres


def applied(db: LabDb, app: str) -> list[str]:
    return [str(name) for (name,) in db.query(
        "SELECT name FROM django_migrations WHERE app = %s ORDER BY name", (app,))]


def test_a_migration_written_against_0003_migrates_while_chunkwise_0004_is_not_applied(
        lab_db: LabDb) -> None:
    """lab.0002 depends on chunkwise 0003, as users' migrations do. A plan that applies
    it without chunkwise 0004 (``migrate lab 0002``) was refused by the guard, which
    wanted every chunkwise migration first; the runner needs only 0003's tables, and runs
    without 0004's (chunkwise_run too)."""
    assert lab_db.manage("migrate", "chunkwise", "0003", "-v0").returncode == 0
    assert "0004_admin_runs_and_retry_requests" not in applied(lab_db, "chunkwise")
    seed_items(lab_db, 1200)
    result = lab_db.manage("migrate", "lab", "0002")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db) == {1: 1200}
    assert not lab_db.query("SELECT 1 FROM pg_tables WHERE tablename = 'chunkwise_retryrequest'")
    again = lab_db.manage("chunkwise_run", "lab", "0002")  # done; looks for no mark
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert lab_db.manage("migrate", "chunkwise", "-v0").returncode == 0
    assert "0004_admin_runs_and_retry_requests" in applied(lab_db, "chunkwise")


def mark(db: LabDb, who: str = "alice") -> int:
    from chunkwise.django.operation_ref import OperationRef
    from chunkwise.django.retry_marks import mark_for_retry

    return mark_for_retry(OperationRef("lab", "0002_bump_items", 0), "default", who)


def marks(db: LabDb) -> list[str]:
    return [str(who) for (who,) in db.query("SELECT requested_by FROM chunkwise_retryrequest")]


def test_a_marked_run_is_retried_by_the_next_chunkwise_run_by_hand(lab_db: LabDb) -> None:
    """Marking runs nothing. The next plain chunkwise_run of the run (which would say
    "done" and do nothing) retries the marked rows; a retry that stops keeps the mark, one
    that goes through every record removes it; one shard's run (as in a pod) ignores it."""
    seed_items(lab_db, 3000, payload_at={137: "raise", 1500: "raise"})
    run = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "500")
    assert run.returncode == 0, run.stderr
    assert len(records(lab_db)) == 2
    assert mark(lab_db) == 2
    assert marks(lab_db) == ["alice"]

    one_shard = lab_db.manage("chunkwise_run", "lab", "0002", "--shards", "1", "--shard", "0")
    assert one_shard.returncode == 0, one_shard.stderr
    assert "marked for retry" not in one_shard.stderr and len(records(lab_db)) == 2

    unfixed = lab_db.manage("chunkwise_run", "lab", "0002", "--halt-failed-rows", "1")
    assert unfixed.returncode == 65, unfixed.stderr
    assert unfixed.stderr.startswith(
        "lab.0002_bump_items[0] forward: done, and its failed rows were marked for retry by "
        "alice at "), unfixed.stderr
    assert ": retrying them (as --retry-failed does)\n" in unfixed.stderr
    assert marks(lab_db) == ["alice"]  # the retry halted: the mark waits for the next

    lab_db.execute("UPDATE lab_item SET payload = '' WHERE id IN (137, 1500)")
    fixed = lab_db.manage("chunkwise_run", "lab", "0002")
    assert fixed.returncode == 0, fixed.stderr
    assert "retry: done (FailedRowsRetried): retried 2, succeeded 2" in fixed.stderr
    assert counters(lab_db) == {1: 3000}
    assert records(lab_db) == [] and marks(lab_db) == []

    done = lab_db.manage("chunkwise_run", "lab", "0002")
    assert done.returncode == 0, done.stderr
    assert "retry" not in done.stderr


def test_only_a_done_run_with_failed_rows_is_marked_and_a_mark_is_its_runs_only(
        lab_db: LabDb) -> None:
    """The mark is refused where the retry would refuse (not done, nothing recorded), in
    one line; a mark older than the run's completion (made on an earlier run of the same
    operation) is not taken up; --retry-failed removes a mark too."""
    from chunkwise.django.retry_marks import MarkRefused

    with pytest.raises(MarkRefused, match=r"^lab\.0002_bump_items\[0\] forward has no "
                                          r"checkpoint: nothing has run$"):
        mark(lab_db)
    seed_items(lab_db, 1000, payload_at={10: "raise", 20: "raise"})
    halted = lab_db.manage("chunkwise_run", "lab", "0002", "--halt-failed-rows", "1")
    assert halted.returncode == 65, halted.stderr
    with pytest.raises(MarkRefused) as refused:
        mark(lab_db)
    assert str(refused.value) == (
        "lab.0002_bump_items[0] forward is not done (halted): its failed rows are retried "
        "once every row of the run has been through it; finish the run, then mark it")
    assert lab_db.manage("chunkwise_run", "lab", "0002").returncode == 0
    assert mark(lab_db) == 2

    lab_db.execute("UPDATE chunkwise_retryrequest SET requested_at = %s",
                   (datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),))
    stale = lab_db.manage("chunkwise_run", "lab", "0002")
    assert stale.returncode == 0 and "marked for retry" not in stale.stderr, stale.stderr
    assert len(records(lab_db)) == 2

    assert mark(lab_db, "bob") == 2 and marks(lab_db) == ["bob"]  # renewed, one per run
    lab_db.execute("UPDATE lab_item SET payload = '' WHERE id IN (10, 20)")
    retried = lab_db.manage("chunkwise_run", "lab", "0002", "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert marks(lab_db) == [] and records(lab_db) == []
    with pytest.raises(MarkRefused, match="has no failed rows recorded: nothing to retry$"):
        mark(lab_db)
