"""The batch engine and BatchedRunPython on a real PostgreSQL server."""

from __future__ import annotations

import gc
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import LabDatabase, LabDb

pytestmark = pytest.mark.postgres


def seed_items(
    db: LabDb, count: int, gap: int = 1, payload_at: dict[int, str] | None = None
) -> None:
    db.execute("INSERT INTO lab_item (id, counter, payload, score) "
               "SELECT g * %s, 0, '', 0 FROM generate_series(1, %s) g", (gap, count))
    for key, payload in (payload_at or {}).items():
        db.execute("UPDATE lab_item SET payload = %s WHERE id = %s", (payload, key))


def counters(db: LabDatabase, table: str = "lab_item") -> dict[int, int]:
    rows = db.query(f"SELECT counter, count(*) FROM {table} GROUP BY counter")
    return {int(c): int(n) for c, n in rows}  # type: ignore[call-overload]


def wait_for_batches(db: LabDatabase, more_than: int = 0, timeout: float = 30) -> None:
    wait_until(lambda: db.query("SELECT 1 FROM chunkwise_checkpoint WHERE batches > %s",
                                (more_than,)), f"the runner committed {more_than + 1} batches",
               timeout)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def checkpoint(db: LabDatabase, migration: str, operation: int = 0) -> dict[str, object]:
    rows = db.query(
        "SELECT state, rows_processed, failed_rows, batches, last_key, high_water_key, "
        "lock_wait_seconds, rows_estimated, message FROM chunkwise_checkpoint "
        "WHERE migration = %s AND operation = %s", (migration, operation))
    assert rows, f"no checkpoint for {migration}"
    names = ["state", "rows_processed", "failed_rows", "batches", "last_key", "high_water_key",
             "lock_wait_seconds", "rows_estimated", "message"]
    return dict(zip(names, rows[0], strict=True))


def test_transform_with_gapped_int_keys_changes_every_row_once(lab_db: LabDb) -> None:
    seed_items(lab_db, 5000, gap=1000)
    result = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "300")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db) == {1: 5000}
    cp = checkpoint(lab_db, "0002_bump_items")
    assert cp["state"] == "done" and cp["rows_processed"] == 5000
    assert cp["last_key"] == "5000000" and cp["high_water_key"] == "5000000"
    assert "done (Completed)" in result.stderr


def test_a_run_keeps_the_collector_off_the_startup_heap(lab_db: LabDb) -> None:
    from chunkwise.django.execute import _startup_heap_frozen

    seed_items(lab_db, 10)
    result = lab_db.manage("chunkwise_run", "lab", "0002", LAB_NOTE_FROZEN="1")
    assert result.returncode == 0, result.stderr
    frozen = int(result.stderr.split("objects frozen from the collector: ")[1].split()[0])
    assert frozen > 10_000  # Django, the apps and the migration graph
    with _startup_heap_frozen():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0  # migrate's process goes on as before


def test_set_based_forward_and_reverse(lab_db: LabDb) -> None:
    seed_items(lab_db, 3000, gap=7)
    assert lab_db.manage("chunkwise_run", "lab", "0003").returncode == 0
    assert counters(lab_db) == {1: 3000}
    result = lab_db.manage("chunkwise_run", "lab", "0003", "--direction", "backward")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db) == {0: 3000}
    # the forward checkpoint was forgotten, so forward runs again from the start
    assert lab_db.manage("chunkwise_run", "lab", "0003").returncode == 0
    assert counters(lab_db) == {1: 3000}


def test_uuid_and_text_keys(lab_db: LabDb) -> None:
    lab_db.execute("INSERT INTO lab_uuiditem (id, counter) "
                   "SELECT gen_random_uuid(), 0 FROM generate_series(1, 1234)")
    lab_db.execute("INSERT INTO lab_textitem (slug, counter) "
                   "SELECT md5(g::text) || '-é-' || g, 0 FROM generate_series(1, 987) g")
    for operation in ("0", "1", "2"):
        result = lab_db.manage("chunkwise_run", "lab", "0004", "--operation", operation)
        assert result.returncode == 0, result.stderr
    assert counters(lab_db, "lab_uuiditem") == {2: 1234}  # set-based + transform
    assert counters(lab_db, "lab_textitem") == {1: 987}


def test_a_key_whose_column_has_another_name(lab_db: LabDb) -> None:
    # 1,234 rows in batches of 100: full batches end at the 100th key, the last is short
    lab_db.execute("INSERT INTO lab_codeditem (item_code, counter) "
                   "SELECT g * 7, 0 FROM generate_series(1, 1234) g")
    for operation, shards in (("0", "2"), ("1", "1")):
        result = lab_db.manage("chunkwise_run", "lab", "0008", "--operation", operation,
                               "--shards", shards)
        assert result.returncode == 0, result.stderr
    assert counters(lab_db, "lab_codeditem") == {2: 1234}  # set-based in 2 shards, transform


def test_empty_table_and_nothing_to_do(lab_db: LabDb) -> None:
    result = lab_db.manage("chunkwise_run", "lab", "0002")
    assert result.returncode == 0, result.stderr
    cp = checkpoint(lab_db, "0002_bump_items")
    assert cp["state"] == "done" and cp["rows_processed"] == 0
    again = lab_db.manage("chunkwise_run", "lab", "0002")
    assert again.returncode == 0 and "AlreadyDone" in again.stderr


def test_todo_filter_that_matches_nothing(lab_db: LabDb) -> None:
    """The shop-like todo of 0004 op 0 has no filter; use --direction backward on 0003 whose
    reverse_todo is unset, after marking nothing: an empty todo set still completes."""
    seed_items(lab_db, 100)
    result = lab_db.manage("chunkwise_run", "lab", "0002")
    assert result.returncode == 0
    result = lab_db.manage("chunkwise_run", "lab", "0002")  # done: nothing left
    assert result.returncode == 0
    assert counters(lab_db) == {1: 100}


def test_a_todo_across_a_to_many_relation_does_each_row_once(lab_db: LabDb) -> None:
    """Item todo `stamped__flag=True`: in a join an item with k flagged Stamped rows
    appears k times. Each item must be locked, transformed, counted and checkpointed once."""
    seed_items(lab_db, 400)
    lab_db.execute(  # item i has i % 4 flagged rows (0 to 3) and one unflagged
        "INSERT INTO lab_stamped (at, day, amount, ref, ratio, flag, note, item_id) "
        "SELECT now(), now()::date, 1, gen_random_uuid(), 1, f.flag, '', i "
        "FROM generate_series(1, 400) i, LATERAL (SELECT true AS flag FROM "
        "generate_series(1, mod(i, 4)) UNION ALL SELECT false) f")
    result = lab_db.manage("chunkwise_run", "lab", "0006", "--batch-size", "50")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db) == {1: 300, 0: 100}  # the 100 items with i % 4 == 0 are not todo
    cp = checkpoint(lab_db, "0006_todo_across_a_relation")
    assert cp["state"] == "done" and cp["rows_processed"] == 300
    assert cp["rows_estimated"] == 300


def test_rows_inserted_during_the_run_above_the_high_water_mark_are_left(lab_db: LabDb) -> None:
    seed_items(lab_db, 2000)
    runner = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "100",
                          "--max-rows-per-second", "2000")
    wait_for_batches(lab_db, more_than=2)
    assert runner.poll() is None, "the rows/s cap should keep the run going for about 1 s"
    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT g, 0, '', 0 FROM generate_series(2001, 2100) g")
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 0, output
    assert counters(lab_db) == {1: 2000, 0: 100}
    assert checkpoint(lab_db, "0002_bump_items")["high_water_key"] == "2000"


@pytest.mark.parametrize("migration", ["0002", "0003"], ids=["transform", "set-based"])
def test_kill_9_at_50_random_moments_changes_every_row_exactly_once(lab_db: LabDb,
                                                                   migration: str) -> None:
    """50 runs of a non-idempotent change (counter + 1), each SIGKILLed at a random moment,
    then one run to the end: every row changed exactly once, no failed rows, and the
    checkpoint, read after every kill, never moved backwards."""
    rows = 100_000
    seed_items(lab_db, rows, gap=3)
    rng = random.Random(20261122)
    targets = sorted(rng.randrange(0, rows - 5000) for _ in range(50))
    kills, after_kill, recoveries = 0, [], []
    name = "0002_bump_items" if migration == "0002" else "0003_setbased_items"

    def progress() -> tuple[int, int]:
        found = lab_db.query("SELECT coalesce(max(rows_processed), -1), "
                             "coalesce(max(batches), 0) FROM chunkwise_checkpoint")[0]
        return int(found[0]), int(found[1])  # type: ignore[call-overload]

    for target in targets:
        _, batches_before = progress()
        started = time.monotonic()
        runner = lab_db.popen("chunkwise_run", "lab", migration, "--batch-size", "1000")
        recovered = False
        while runner.poll() is None:
            done, batches = progress()
            if not recovered and batches > batches_before:
                recoveries.append(time.monotonic() - started)  # kill to the next commit
                recovered = True
            if done >= target:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.02))
        if runner.poll() is None:
            runner.send_signal(signal.SIGKILL)
            kills += 1
        runner.wait(timeout=30)
        if lab_db.query("SELECT 1 FROM chunkwise_checkpoint"):
            after_kill.append(int(checkpoint(lab_db, name)["last_key"]))  # type: ignore[call-overload]
        # the server notices the dead client a moment later; until then its backend holds
        # the runner lock and the next runner would (rightly) exit "busy"
        wait_until(lambda: not lab_db.query(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"), "the runner lock is freed")
    final = lab_db.manage("chunkwise_run", "lab", migration)
    assert final.returncode == 0, final.stderr
    assert kills >= 40, "most runners should have been killed mid-run"
    assert after_kill == sorted(after_kill), "the checkpoint moved backwards after a kill"
    assert counters(lab_db) == {1: rows}
    cp = checkpoint(lab_db, name)
    assert (cp["rows_processed"], cp["failed_rows"]) == (rows, 0)
    recoveries.sort()
    print(f"\n{migration}: {kills} kills, rows lost 0, rows doubled 0, kill to next commit "
          f"median {recoveries[len(recoveries) // 2]:.2f}s, max {recoveries[-1]:.2f}s")


def test_second_runner_exits_with_busy_and_names_the_first(lab_db: LabDb) -> None:
    seed_items(lab_db, 3000)
    first = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "100",
                         LAB_ROW_SLEEP="0.001")
    wait_for_batches(lab_db)
    second = lab_db.manage("chunkwise_run", "lab", "0002", CHUNKWISE_RESOURCE="ns/other")
    assert second.returncode == 69, second.stderr
    assert "already being run by" in second.stderr and "pid" in second.stderr
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    assert counters(lab_db) == {1: 3000}


def test_a_transform_reads_unlocked_and_never_overwrites_a_concurrent_change(
        lab_db: LabDb) -> None:
    """The per-row path reads its batch without row locks (writers do not queue behind a
    batch while Python transforms it); a row changed between the read and the write-back
    makes PostgreSQL refuse the write-back, and the batch is redone with its rows locked."""
    import psycopg

    seed_items(lab_db, 2000)
    runner = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "1000",
                          "--max-locked-fraction", "0",
                          LAB_ROW_SLEEP="0.002")  # 2 s of Python per batch
    try:
        # the runner has read its first batch and is transforming it: idle in transaction
        wait_until(lambda: lab_db.query(
            "SELECT 1 FROM pg_stat_activity WHERE state = 'idle in transaction' "
            "AND query LIKE 'SELECT %%FROM \"lab_item\"%%LIMIT 1000%%'"),
            "the runner read its first batch")
        with psycopg.connect(lab_db.server.dsn(lab_db.name), autocommit=True) as writer:
            writer.execute("SET lock_timeout = '200ms'")  # a locked row would fail this
            writer.execute("UPDATE lab_item SET counter = counter + 100 WHERE id = 900")
        output, _ = runner.communicate(timeout=120)
    finally:
        runner.kill()
    assert runner.returncode == 0, output
    assert counters(lab_db) == {1: 1999, 101: 1}  # the writer's +100 and the run's +1
    assert "serialization, retry 1" in output
    assert checkpoint(lab_db, "0002_bump_items")["rows_processed"] == 2000


@pytest.mark.parametrize("migration", ["0003_setbased_items", "0002_bump_items"])
def test_lock_contention_waits_retries_and_reports_lock_wait(lab_db: LabDb,
                                                             migration: str) -> None:
    import psycopg

    seed_items(lab_db, 1000)
    holder = psycopg.connect(lab_db.server.dsn(lab_db.name))
    holder.execute("SELECT id FROM lab_item WHERE id BETWEEN 400 AND 600 FOR UPDATE")

    def release_after_a_timed_out_wait() -> None:
        """Hold the rows for 1 s (a few 300 ms lock timeouts) from the moment the runner
        first waits for them, however long Django takes to start; then let it through."""
        deadline = time.monotonic() + 120
        with psycopg.connect(lab_db.server.dsn(lab_db.name), autocommit=True) as watcher:
            while time.monotonic() < deadline and watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone() == (0,):
                time.sleep(0.01)
        time.sleep(1.0)  # the contention this test is about, not a wait for a condition
        holder.rollback()

    release = threading.Thread(target=release_after_a_timed_out_wait)
    release.start()
    try:
        result = lab_db.manage("chunkwise_run", "lab", migration[:4], "--batch-size", "100",
                               "--lock-timeout", "300ms", "--max-attempts", "30",
                               "--backoff", "100ms")
    finally:
        release.join()
        holder.close()
    assert result.returncode == 0, result.stderr
    assert "lock_timeout, retry" in result.stderr
    assert counters(lab_db) == {1: 1000}
    assert float(checkpoint(lab_db, migration)["lock_wait_seconds"]) >= 0.3, result.stderr  # type: ignore[arg-type]


def test_a_lock_held_past_the_retry_budget_stops_naming_the_holder(lab_db: LabDb) -> None:
    import psycopg

    seed_items(lab_db, 1000)
    holder = psycopg.connect(lab_db.server.dsn(lab_db.name) + " application_name=billing-job")
    try:
        holder.execute("SELECT id FROM lab_item WHERE id BETWEEN 400 AND 600 FOR UPDATE")
        pid = holder.info.backend_pid
        stopped = lab_db.manage("chunkwise_run", "lab", "0003", "--batch-size", "100",
                                "--lock-timeout", "200ms", "--max-attempts", "3",
                                "--backoff", "50ms")
    finally:
        holder.rollback()
        holder.close()
    assert stopped.returncode == 1, stopped.stderr  # retryable: a Job would run it again
    message = stopped.stderr
    assert "lock waits: all 3 attempts of a batch timed out waiting 0.2s (timeouts.lock)" \
        in message
    assert f"pid {pid} (application_name 'billing-job', user chunkwise, idle in " \
        "transaction) has held locks on lab_item for" in message
    assert "Traceback" not in message
    cp = checkpoint(lab_db, "0003_setbased_items")
    assert cp["rows_processed"] == 300 and "LockWaitsExhausted" not in str(cp["state"])
    resumed = lab_db.manage("chunkwise_run", "lab", "0003")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after key 300" in resumed.stderr
    assert counters(lab_db) == {1: 1000}


def test_statement_timeout_on_an_oversized_batch_halves_it_and_completes(lab_db: LabDb) -> None:
    seed_items(lab_db, 1000)
    # every updated row costs 2 ms inside the UPDATE: 800 rows take 1.6 s, 100 take 0.2 s
    lab_db.execute("CREATE FUNCTION lab_slow() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$ BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END $$")
    lab_db.execute("CREATE TRIGGER lab_slow BEFORE UPDATE ON lab_item FOR EACH ROW "
                   "EXECUTE FUNCTION lab_slow()")
    result = lab_db.manage("chunkwise_run", "lab", "0003", "--batch-size", "800",
                           "--max-batch-size", "800", "--max-locked-fraction", "0",
                           "--statement-timeout", "500ms",
                           "--halve-after-timeouts", "1", "--max-attempts", "10",
                           "--backoff", "10ms")
    assert result.returncode == 0, result.stderr
    assert "statement_timeout, retry" in result.stderr
    assert counters(lab_db) == {1: 1000}
    cp = checkpoint(lab_db, "0003_setbased_items")
    assert cp["state"] == "done" and int(cp["batches"]) >= 1000 // 200  # type: ignore[call-overload]


def test_failing_rows_are_isolated_recorded_and_skipped(lab_db: LabDb) -> None:
    bad = {137: "raise", 1500: "raise", 2999: "raise"}
    seed_items(lab_db, 3000, payload_at=bad)
    result = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "500")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db) == {1: 2997, 0: 3}
    assert lab_db.query("SELECT counter FROM lab_item WHERE id IN (137, 1500, 2999)") == [(0,)] * 3
    failures = lab_db.query("SELECT key, error_class, message FROM chunkwise_failedrow ORDER BY id")
    assert [(k, c) for k, c, _ in failures] == [("137", "ValueError"), ("1500", "ValueError"),
                                                ("2999", "ValueError")]
    assert "payload says raise" in str(failures[0][2])
    cp = checkpoint(lab_db, "0002_bump_items")
    assert cp["rows_processed"] == 2997 and cp["failed_rows"] == 3


def test_constraint_violation_in_set_based_work_is_isolated(lab_db: LabDb) -> None:
    seed_items(lab_db, 1000, payload_at={10: "negative", 777: "negative"})
    result = lab_db.manage("chunkwise_run", "lab", "0003", "--batch-size", "200")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db) == {1: 998, 0: 2}
    failures = lab_db.query("SELECT key, error_class FROM chunkwise_failedrow ORDER BY id")
    assert failures == [("10", "IntegrityError"), ("777", "IntegrityError")]


def test_error_budget_halts_then_raised_threshold_resumes(lab_db: LabDb) -> None:
    bad = {k: "raise" for k in range(100, 1100, 100)}  # 10 bad rows
    seed_items(lab_db, 2000, payload_at=bad)
    halted = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "100",
                           "--halt-failed-rows", "3", "--halt-consecutive-failed-batches", "50")
    assert halted.returncode == 65, halted.stderr
    assert "HALTED (FailedRowsExceeded)" in halted.stderr
    cp = checkpoint(lab_db, "0002_bump_items")
    assert cp["state"] == "halted" and cp["failed_rows"] == 4
    assert "FailedRowsExceeded" in str(cp["message"])
    done_before = counters(lab_db).get(1, 0)
    assert 0 < done_before < 2000
    # same threshold: halts again at once without touching a row
    again = lab_db.manage("chunkwise_run", "lab", "0002", "--halt-failed-rows", "3")
    assert again.returncode == 65
    assert counters(lab_db).get(1, 0) == done_before
    resumed = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "100",
                            CHUNKWISE_HALT_FAILED_ROWS="20",
                            CHUNKWISE_HALT_CONSECUTIVE_FAILED_BATCHES="50")
    assert resumed.returncode == 0, resumed.stderr
    assert counters(lab_db) == {1: 1990, 0: 10}


def test_failure_rate_and_consecutive_batches_halt(lab_db: LabDb) -> None:
    seed_items(lab_db, 1000, payload_at={k: "raise" for k in range(1, 1001, 50)})
    rate = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "100",
                         "--halt-failed-rows", "1000", "--halt-failure-rate", "0.01",
                         "--halt-min-sample", "200", "--halt-consecutive-failed-batches", "99")
    assert rate.returncode == 65 and "FailureRateExceeded" in rate.stderr
    lab_db.execute("DELETE FROM chunkwise_failedrow")
    lab_db.execute("DELETE FROM chunkwise_checkpoint")
    lab_db.execute("UPDATE lab_item SET counter = 0")
    consecutive = lab_db.manage("chunkwise_run", "lab", "0002", "--batch-size", "100",
                                "--halt-failed-rows", "1000", "--halt-failure-rate", "1",
                                "--halt-consecutive-failed-batches", "3")
    assert consecutive.returncode == 65
    assert "ConsecutiveFailedBatchesExceeded" in consecutive.stderr


def test_sigterm_finishes_the_batch_and_exits_interrupted(lab_db: LabDb) -> None:
    seed_items(lab_db, 5000)
    runner = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "200",
                          LAB_ROW_SLEEP="0.0005")
    wait_for_batches(lab_db, 1)
    runner.send_signal(signal.SIGTERM)
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 75, output
    assert "SIGTERM: finishing the current batch" in output
    cp = checkpoint(lab_db, "0002_bump_items")
    assert cp["state"] == "interrupted"
    done = int(cp["rows_processed"])  # type: ignore[call-overload]
    assert counters(lab_db) == {1: done, 0: 5000 - done}  # the open batch committed whole
    assert lab_db.manage("chunkwise_run", "lab", "0002").returncode == 0
    assert counters(lab_db) == {1: 5000}


def test_yield_cpu_runs_the_worker_at_idle_cpu_priority(lab_db: LabDb) -> None:
    seed_items(lab_db, 3000)
    runner = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "200",
                          "--yield-cpu", "true", LAB_ROW_SLEEP="0.0005")
    wait_for_batches(lab_db, 1)
    policy = os.sched_getscheduler(runner.pid)  # the runner's thread: one shard, main thread
    output, _ = runner.communicate(timeout=120)
    assert policy == os.SCHED_IDLE, policy
    assert runner.returncode == 0, output
    assert counters(lab_db) == {1: 3000}


def test_lost_connection_reconnects_and_rereads_the_checkpoint(lab_db: LabDb) -> None:
    seed_items(lab_db, 4000)
    runner = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "100",
                          "--backoff", "50ms", LAB_ROW_SLEEP="0.001")
    terminated = 0
    deadline = time.monotonic() + 60
    while runner.poll() is None and terminated < 3 and time.monotonic() < deadline:
        if lab_db.query("SELECT 1 FROM chunkwise_checkpoint WHERE batches > %s",
                        (5 * (terminated + 1),)):
            rows = lab_db.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'")
            terminated += sum(1 for (ok,) in rows if ok)
        time.sleep(0.05)
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode == 0, output
    assert terminated >= 1
    assert "connection" in output or "shutdown" in output
    assert counters(lab_db) == {1: 4000}


def test_database_restart_and_a_longer_outage_lose_nothing() -> None:
    """On a server of its own: PostgreSQL restarted (fast shutdown, then start) mid-run
    inside the retry budget, the run goes on; down for longer than the budget, the run
    exits with the retryable status naming the database, and the next run resumes."""
    import sys

    from tests.conftest import LAB
    from tests.support.pgserver import running_server

    with running_server() as server:
        server.sql("CREATE DATABASE lab_faults")
        db = LabDb(server, "lab_faults")
        for target in (["lab", "0001"], ["chunkwise"]):
            subprocess.run([sys.executable, str(LAB / "manage.py"), "migrate", *target, "-v0"],
                           env=db.env(), check=True)
        seed_items(db, 20_000)
        runner = db.popen("chunkwise_run", "lab", "0002", "--batch-size", "200",
                          "--max-rows-per-second", "10000", "--max-attempts", "30",
                          "--backoff", "200ms", "--max-backoff", "1s")
        wait_for_batches(db, more_than=5)
        server.stop("fast")
        server.start()
        output, _ = runner.communicate(timeout=180)
        assert runner.returncode == 0, output
        assert "retry" in output
        assert counters(db) == {1: 20_000}

        runner = db.popen("chunkwise_run", "lab", "0003", "--batch-size", "200",
                          "--max-rows-per-second", "10000", "--max-attempts", "3",
                          "--backoff", "100ms", "--max-backoff", "100ms")
        wait_until(lambda: db.query("SELECT 1 FROM chunkwise_checkpoint "
                                    "WHERE migration = '0003_setbased_items' AND batches > 5"),
                   "the set-based run committed batches")
        server.stop("fast")
        try:
            output, _ = runner.communicate(timeout=120)
        finally:
            server.start()
        assert runner.returncode == 1, output  # retryable: a Job would run it again
        assert "database unreachable: all 3 attempts of a batch lost or could not open " \
            "their connection" in output
        assert f"database 'default' is postgresql 'lab_faults' at 127.0.0.1:{server.port}" \
            in output
        assert "Traceback" not in output
        resumed = db.manage("chunkwise_run", "lab", "0003")
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming after key" in resumed.stderr
        assert counters(db) == {2: 20_000}


def test_bad_settings_are_rejected_before_any_row(lab_db: LabDb) -> None:
    seed_items(lab_db, 10)
    result = lab_db.manage("chunkwise_run", "lab", "0002", "--lock-timeout", "soon")
    assert result.returncode == 64
    assert "timeouts.lock (--lock-timeout): expected a duration" in result.stderr
    env_bad = lab_db.manage("chunkwise_run", "lab", "0002", CHUNKWISE_BATCH_SIZE="10",
                            CHUNKWISE_MIN_BATCH_SIZE="50")
    assert env_bad.returncode == 64 and "batch.size" in env_bad.stderr
    assert counters(lab_db) == {0: 10}
    unknown = lab_db.manage("chunkwise_run", "lab", "0099")
    assert unknown.returncode == 64 and "migration_name" in unknown.stderr


def test_migrate_runs_reverses_and_refuses_an_atomic_migration(lab_db: LabDb) -> None:
    seed_items(lab_db, 1500)
    result = lab_db.manage("migrate", "lab", "0003")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db) == {2: 1500}  # 0002 transform + 0003 set-based
    back = lab_db.manage("migrate", "lab", "0002")
    assert back.returncode == 0, back.stderr
    assert counters(lab_db) == {1: 1500}  # 0003's reverse ran
    irreversible = lab_db.manage("migrate", "lab", "0001")
    assert irreversible.returncode != 0 and "not reversible" in irreversible.stderr
    forward_again = lab_db.manage("migrate", "lab", "0004")
    assert forward_again.returncode == 0, forward_again.stderr
    assert counters(lab_db) == {2: 1500}  # a reversed operation runs again from the start
    atomic = lab_db.manage("migrate", "lab", "0005")
    assert atomic.returncode != 0
    assert "needs `atomic = False`" in atomic.stderr
    assert counters(lab_db) == {2: 1500}


def test_status_command_lists_checkpoints_and_failed_rows(lab_db: LabDb) -> None:
    seed_items(lab_db, 300, payload_at={42: "raise"})
    assert lab_db.manage("chunkwise_run", "lab", "0002").returncode == 0
    status = lab_db.manage("chunkwise_status", "--failed")
    assert status.returncode == 0, status.stderr
    assert "lab.0002_bump_items" in status.stdout and "done" in status.stdout
    assert "failed key 42: ValueError" in status.stdout


def test_status_asks_the_runner_lock_whether_a_run_is_alive(lab_db: LabDb) -> None:
    """A paced run commits nothing for long stretches: while its runner holds the lock,
    chunkwise_status says running however old the heartbeat; once the runner is killed
    (no chance to say so), stale at once, not 120 s later."""
    seed_items(lab_db, 3000)
    runner = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "100",
                          "--max-rows-per-second", "1")  # 100 s between batches
    try:
        wait_for_batches(lab_db)
        lab_db.execute("UPDATE chunkwise_checkpoint SET heartbeat_at = now() - interval "
                       "'10 minutes'")  # as if paced for 10 minutes
        status = lab_db.manage("chunkwise_status", "--json")
        assert [r["state"] for r in json.loads(status.stdout)] == ["running"], status.stderr
    finally:
        runner.kill()
        runner.communicate(timeout=60)
    lab_db.execute("UPDATE chunkwise_checkpoint SET heartbeat_at = now()")

    def states() -> list[str]:
        return [r["state"] for r in json.loads(lab_db.manage("chunkwise_status",
                                                             "--json").stdout)]
    # the server ends the killed runner's session, and its lock, as soon as it sees it gone
    wait_until(lambda: states() == ["stale"], "the killed run is stale", timeout=10)


def test_rows_per_second_cap_is_honoured(lab_db: LabDb) -> None:
    seed_items(lab_db, 3000)
    started = time.monotonic()
    result = lab_db.manage("chunkwise_run", "lab", "0003", "--batch-size", "500",
                           "--max-rows-per-second", "2000")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed >= 1.2  # 3000 rows at 2000 rows/s: the last batch starts after >= 1.25 s


def test_shards_share_the_limits_set_for_the_whole_run(lab_db: LabDb) -> None:
    """batch.maxRowsPerSecond protects the database, which sees every shard: with 2
    shards the migration as a whole stays under the cap (each runs at half of it), and
    haltOn.failedRows is split so that the shards' budgets add up to it exactly."""
    seed_items(lab_db, 2000)
    started = time.monotonic()
    result = lab_db.manage("chunkwise_run", "lab", "0003", "--shards", "2", "--batch-size",
                           "250", "--max-locked-fraction", "0", "--max-rows-per-second",
                           "500", "--halt-failed-rows", "5")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    # 2000 rows at 500 rows/s in all: each shard's 1000 rows at 250 rows/s take >= 4 s
    # (capped per shard, they took 2 s and the process's start)
    assert elapsed >= 3.8, f"2000 rows in {elapsed:.2f}s: the cap was per shard"
    assert "haltOn.failedRows 5: this one halts past 3; batch.maxRowsPerSecond 500: " \
        "this one runs at most 250 rows/s" in result.stderr
    assert "haltOn.failedRows 5: this one halts past 2;" in result.stderr


def test_deploy_time_migrate_fails_fast_naming_the_datamigration(lab_db: LabDb) -> None:
    """A DataMigration's worker holds the operation; the app's own `migrate` at deploy time
    must not run it at the same time: it stops at once and says who holds it."""
    seed_items(lab_db, 3000)
    worker = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "100",
                          CHUNKWISE_RESOURCE="shop/bump-items", LAB_ROW_SLEEP="0.001")
    wait_for_batches(lab_db)
    started = time.monotonic()
    deploy = lab_db.manage("migrate", "lab", "0002")
    assert deploy.returncode != 0
    assert "already being run by DataMigration shop/bump-items" in deploy.stderr
    assert time.monotonic() - started < 15
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, output
    after = lab_db.manage("migrate", "lab", "0002")  # finds the checkpoint done: no-op
    assert after.returncode == 0 and "AlreadyDone" in after.stderr
    assert counters(lab_db) == {1: 3000}


def test_ensure_waits_for_the_runner_then_finds_it_done(lab_db: LabDb) -> None:
    """later.0001 ensures lab.0002 with wait=60: while a DataMigration's worker runs it,
    a deploy's migrate waits for it instead of failing, then goes on."""
    seed_items(lab_db, 3000)
    worker = lab_db.popen("chunkwise_run", "lab", "0002", "--batch-size", "100",
                          CHUNKWISE_RESOURCE="shop/bump-items", LAB_ROW_SLEEP="0.001")
    wait_for_batches(lab_db)
    deploy = lab_db.manage("migrate", "later", CHUNKWISE_DEFER="1")
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, output
    assert deploy.returncode == 0, deploy.stderr
    assert "deferred lab.0002_bump_items[0] (under way: " in deploy.stdout
    assert "ensuring lab.0002_bump_items[0] forward is complete: finishing it here" in deploy.stdout
    assert "already being run by DataMigration shop/bump-items" in deploy.stderr
    assert counters(lab_db) == {1: 3000}
    assert checkpoint(lab_db, "0002_bump_items")["rows_processed"] == 3000


def test_four_shards_in_parallel_do_every_row_once_and_resume_after_kill_9(
        lab_db: LabDb) -> None:
    """`chunkwise_run --shards 4`: one thread per shard, each with its own checkpoint; a
    SIGKILL of the whole process mid-run, then a second run: every row exactly once."""
    seed_items(lab_db, 20_000, gap=3)
    first = lab_db.popen("chunkwise_run", "lab", "0002", "--shards", "4", "--batch-size",
                         "200", LAB_ROW_SLEEP="0.0002")
    wait_until(lambda: int(lab_db.query(  # type: ignore[call-overload]
        "SELECT coalesce(sum(rows_processed), 0) FROM chunkwise_checkpoint")[0][0]) >= 2000,
        "the shards committed 2000 rows", timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    shards = lab_db.query("SELECT shard, shard_count, rows_estimated, lower_key, "
                          "high_water_key FROM chunkwise_checkpoint ORDER BY shard")
    assert [(s[0], s[1], s[2]) for s in shards] == [(i, 4, 5000) for i in range(4)]
    assert [s[3] for s in shards] == [None, "15000", "30000", "45000"]
    busy = [int(str(n)) for (n,) in lab_db.query(
        "SELECT rows_processed FROM chunkwise_checkpoint ORDER BY shard")]
    assert sum(1 for n in busy if n > 0) >= 2, busy  # they ran side by side
    second = lab_db.manage("chunkwise_run", "lab", "0002", "--shards", "4")
    assert second.returncode == 0, second.stderr
    assert counters(lab_db) == {1: 20_000}
    assert lab_db.query("SELECT sum(rows_processed), bool_and(state = 'done') "
                        "FROM chunkwise_checkpoint") == [(20_000, True)]
    refused = lab_db.manage("chunkwise_run", "lab", "0002", "--shards", "2")
    assert refused.returncode == 0 and "AlreadyDone" in refused.stderr  # done: any split


def test_a_split_cannot_change_mid_run(lab_db: LabDb) -> None:
    seed_items(lab_db, 3000)
    lab_db.manage("chunkwise_run", "lab", "0002", "--shards", "3", "--shard", "1")
    refused = lab_db.manage("chunkwise_run", "lab", "0002", "--shards", "2")
    assert refused.returncode == 64
    assert ("parallelism: lab.0002_bump_items[0] forward was split into 3 shard(s) when its "
            "run was planned and is not done; run it with 3") in refused.stderr
    finished = lab_db.manage("chunkwise_run", "lab", "0002", "--shards", "3")
    assert finished.returncode == 0, finished.stderr
    assert counters(lab_db) == {1: 3000}


def test_shards_balance_a_skewed_key_distribution_by_row_count(lab_db: LabDb) -> None:
    """90% of the keys packed in 1..18000, the rest spread up to 10^9: split by key value
    one shard would hold nearly everything; split by row count each holds a quarter."""
    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT g, 0, '', 0 FROM generate_series(1, 18000) g")
    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT 18000 + g * 500000, 0, '', 0 FROM generate_series(1, 2000) g")
    result = lab_db.manage("chunkwise_run", "lab", "0002", "--shards", "4")
    assert result.returncode == 0, result.stderr
    sizes = [int(str(n)) for (n,) in lab_db.query(
        "SELECT rows_processed FROM chunkwise_checkpoint ORDER BY shard")]
    assert sum(sizes) == 20_000 and max(sizes) <= 1.1 * min(sizes), sizes
    assert counters(lab_db) == {1: 20_000}


def test_a_deferred_plan_is_split_into_shards_within_its_mark_and_ensure_finishes_them(
        lab_db: LabDb) -> None:
    """migrate defers lab.0002 (one planned checkpoint, its high-water mark fixed); rows
    the new release inserts afterwards are above it. A 2-shard run splits the plan within
    that mark; shard 1 never runs; later.0001's EnsureBatchedComplete finishes it."""
    seed_items(lab_db, 4000)
    deferred = lab_db.manage("migrate", "lab", "0002", CHUNKWISE_DEFER="1")
    assert deferred.returncode == 0, deferred.stderr
    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT g, 0, '', 0 FROM generate_series(4001, 4100) g")  # the new release
    first = lab_db.manage("chunkwise_run", "lab", "0002", "--shards", "2", "--shard", "0")
    assert first.returncode == 0, first.stderr
    assert lab_db.query("SELECT shard, state, rows_estimated, high_water_key FROM "
                        "chunkwise_checkpoint ORDER BY shard") == [
        (0, "done", 2000, "2000"), (1, "running", 2000, "4000")]
    finalized = lab_db.manage("migrate", "later")
    assert finalized.returncode == 0, finalized.stderr
    assert "shard 1/2" in finalized.stderr and counters(lab_db) == {1: 4000, 0: 100}


def test_a_completed_run_is_verified_failed_rows_apart_from_missed_ones(lab_db: LabDb) -> None:
    """After lab.0007 completes, rows up to the high-water mark that still match its todo
    filter are counted: the two recorded as failed apart from one the application put
    back behind the checkpoint while the run went on (missed)."""
    seed_items(lab_db, 2000, gap=2, payload_at={10: "negative", 1500: "negative"})
    runner = lab_db.popen("chunkwise_run", "lab", "0007", "--batch-size", "100",
                          "--min-batch-size", "100", "--max-batch-size", "100",
                          LAB_ROW_SLEEP="0.1")  # 20 batches: 2 s to insert behind it
    wait_until(lambda: lab_db.query("SELECT 1 FROM chunkwise_checkpoint WHERE last_key::int "
                                    "> 100"), "the run passed key 100")
    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) VALUES (3, 0, '', 0)")
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode == 0, output
    assert "verified: 3 rows up to key 4000 still match todo: 2 recorded as failed, 1 missed" \
        in output
    assert lab_db.query("SELECT rows_remaining, rows_missed, verified_at IS NOT NULL "
                        "FROM chunkwise_checkpoint") == [(3, 1, True)]
    clean = lab_db.manage("chunkwise_run", "lab", "0002")  # no todo filter: nothing to check
    assert clean.returncode == 0 and "verified" not in clean.stderr


def _table_digest(db: LabDb) -> object:
    return db.query("SELECT md5(string_agg(id || ':' || counter || ':' || coalesce(status, '') "
                    "|| ':' || score, ',' ORDER BY id)) FROM lab_item")[0][0]


def test_plan_measures_with_sample_batches_and_writes_nothing(lab_db: LabDb) -> None:
    seed_items(lab_db, 20_000, payload_at={5000: "raise"})
    before = _table_digest(lab_db)
    samples = {"0003": "sample batches     4 (7,500 rows, rolled back)",  # 500, 1k, 2k, 4k
               "0002": "sample batches     3 (3,500 rows, rolled back)"}  # the 4th fails
    for migration, sampled in samples.items():  # set-based, then per-row
        planned = lab_db.manage("chunkwise_plan", "lab", migration, "--batch-size", "500",
                                "--min-batch-size", "500", "--max-locked-fraction", "0",
                                "--samples", "4")
        assert planned.returncode == 0, planned.stderr
        out = planned.stdout
        assert "plan (nothing was written)" in out
        assert "rows to do         20,000 (counted)" in out
        assert sampled in out, out
        for figure in ("rows/s ", "lock wait ", "tuned batch size ", "ETA "):
            assert figure in out, figure
    assert ("sample errors      1 batch(es) failed; the first: ValueError: cannot bump item "
            "5000: payload says raise (a run isolates and records such rows)") in out
    assert _table_digest(lab_db) == before  # not a row changed
    assert lab_db.query("SELECT count(*) FROM chunkwise_checkpoint") == [(0,)]
    assert lab_db.query("SELECT count(*) FROM chunkwise_failedrow") == [(0,)]
    assert lab_db.query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]


def test_plan_estimates_rows_on_a_big_table_from_the_planner(lab_db: LabDb) -> None:
    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT g, 0, '', 0 FROM generate_series(1, 1000200) g")
    lab_db.execute("ANALYZE lab_item")
    planned = lab_db.manage("chunkwise_plan", "lab", "0003", "--samples", "2")
    assert planned.returncode == 0, planned.stderr
    [line] = [x for x in planned.stdout.splitlines() if "rows to do" in x]
    assert line.endswith("(estimated by the planner)")
    estimate = int(line.split()[3].replace(",", ""))
    assert 900_000 < estimate < 1_100_000
    assert lab_db.query("SELECT count(*) FROM lab_item WHERE counter <> 0") == [(0,)]


def test_code_that_fails_every_row_alike_halts_at_once_with_nothing_recorded(
        lab_db: LabDb) -> None:
    """A transform that raises KeyError('price') for every row: one failure of the code,
    named, within the first batch; not 2,000 failed rows, and no row changed."""
    seed_items(lab_db, 2000)
    result = lab_db.manage("chunkwise_run", "lab", "0002", LAB_CODE_ERROR="1")
    assert result.returncode == 65, result.stderr
    assert re.search(r"HALTED \(CodeFailsEveryRow\): the code raised KeyError: 'price' for "
                     r"every row tried alone \(20 of the first failing batch's \d+\)",
                     result.stderr), result.stderr
    assert counters(lab_db) == {0: 2000}
    assert lab_db.query("SELECT count(*) FROM chunkwise_failedrow") == [(0,)]
    cp = checkpoint(lab_db, "0002_bump_items")
    assert cp["rows_processed"] == 0 and cp["state"] == "halted" and cp["last_key"] is None
    fixed = lab_db.manage("chunkwise_run", "lab", "0002")
    assert fixed.returncode == 0, fixed.stderr
    assert counters(lab_db) == {1: 2000}


def test_allow_failed_rows_accepts_that_many_recorded_failures_and_no_more(
        lab_db: LabDb, capsys: pytest.CaptureFixture[str]) -> None:
    from chunkwise.contract import Direction
    from chunkwise.django import BatchedMigrationStopped, BatchedRunPython
    from chunkwise.django.operation_ref import OperationRef

    seed_items(lab_db, 50, payload_at={7: "raise", 40: "raise"})
    assert lab_db.manage("chunkwise_run", "lab", "0002").returncode == 0
    ref = OperationRef("lab", "0002_bump_items", 0, Direction.FORWARD)
    BatchedRunPython("lab.Item", transform=print, fields=["counter"],
                     allow_failed_rows=2).refuse_failed_rows(ref, "default")
    assert "lab.0002_bump_items[0] forward: 2 rows failed and are recorded, unchanged; " \
           "accepted by allow_failed_rows=2" in capsys.readouterr().out  # said, not silent
    with pytest.raises(BatchedMigrationStopped) as refused:
        BatchedRunPython("lab.Item", transform=print, fields=["counter"],
                         allow_failed_rows=1).refuse_failed_rows(ref, "default")
    assert refused.value.exit_code == 65
    assert "FailedRowsLeft: 2 rows failed and are recorded, more than its " \
           "allow_failed_rows=1" in str(refused.value)


def test_a_todo_across_a_relation_bounds_its_semi_join_by_the_batch_range(
        lab_db: LabDb) -> None:
    """Issue 37, item 6: the semi-join of a todo across a relation was bounded only outside
    (`id > a AND id <= b AND id IN (SELECT ... every flagged row ...)`), so a planner misled
    by stale statistics scanned the whole related table for each batch. Inside too, now,
    and a set-based run over windows of the key's index does every flagged item once."""
    from django.apps import apps
    from django.db import connection
    from django.db.models import Q

    from chunkwise.contract import Direction
    from chunkwise.django import BatchedRunPython
    from chunkwise.django.execute import rows_to_do, target_for
    from chunkwise.django.operation_ref import OperationRef

    operation = BatchedRunPython("lab.Item", lambda apps, editor, batch: None,
                                 todo=Q(stamped__flag=True, counter=0))
    ref = OperationRef("lab", "0010_backfill_across_a_relation", 0, Direction.FORWARD)
    state_apps: Any = apps  # the installed models stand in for a migration's state here
    todo, key = rows_to_do(operation, ref, state_apps, "default")
    with connection.schema_editor(atomic=False) as editor:
        target = target_for(operation, ref, state_apps, editor, todo, key)
        sql = str(target._range(100, 200).query)
    # the subquery's own alias, U0: Django 6 quotes it ("U0"."id"), 5.2 did not (U0."id")
    inner = sql[sql.index("IN (SELECT"):].replace('"U0".', "U0.")
    assert 'U0."id" > 100' in inner and 'U0."id" <= 200' in inner, sql
    seed_items(lab_db, 3000)
    lab_db.execute("INSERT INTO lab_stamped (at, day, amount, ref, ratio, flag, note, "
                   "item_id) SELECT now(), now()::date, 1, gen_random_uuid(), 1, "
                   "(i %% 3 = 0 AND k = 1), '', i FROM generate_series(1, 3000) i, "
                   "generate_series(1, 3) k")
    result = lab_db.manage("chunkwise_run", "lab", "0010", "--batch-size", "200",
                           "--max-locked-fraction", "1")
    assert result.returncode == 0, result.stderr
    assert counters(lab_db) == {1: 1000, 0: 2000}
    assert lab_db.query("SELECT count(*) FROM lab_item WHERE counter = 1 AND id %% 3 <> 0") \
        == [(0,)]


@pytest.mark.parametrize("seed", range(6))
def test_failing_rows_of_a_todo_across_a_relation_are_isolated_exactly(lab_db: LabDb,
                                                                        seed: int) -> None:
    """Windows of the key's index must give the engine `limit` rows to do (or all that are
    left): a window that came short made a split batch's sub-batch take rows that were not
    its own, record a good row as failed and skip others (found in review). Random
    clusters and gaps of rows to do, random failing rows, batches of 20."""
    rng = random.Random(seed)
    flagged = {i for i in range(1, 1501) if rng.random() < (0.6 if i % 200 < 40 else 0.05)}
    bad = sorted(rng.sample(sorted(flagged), 6))
    seed_items(lab_db, 1500)
    lab_db.execute("INSERT INTO lab_stamped (at, day, amount, ref, ratio, flag, note, "
                   "item_id) SELECT now(), now()::date, 1, gen_random_uuid(), 1, "
                   "i = ANY(%s), '', i FROM generate_series(1, 1500) i", (sorted(flagged),))
    # overflow on write-back: a row error, isolated and recorded
    lab_db.execute("UPDATE lab_item SET counter = 2147483647 WHERE id = ANY(%s)", (bad,))
    result = lab_db.manage("chunkwise_run", "lab", "0006", "--batch-size", "20",
                           "--min-batch-size", "1", "--max-batch-size", "20",
                           "--max-locked-fraction", "1", "--halt-failed-rows", "100",
                           "--halt-failure-rate", "1", "--halt-consecutive-failed-batches",
                           "100")
    assert result.returncode == 0, result.stderr
    counters_by_id = {int(i): int(c) for i, c in  # type: ignore[call-overload]
                      lab_db.query("SELECT id, counter FROM lab_item")}
    assert {i for i, c in counters_by_id.items() if c == 1} == flagged - set(bad)
    assert {i for i, c in counters_by_id.items() if c == 0} == set(range(1, 1501)) - flagged
    recorded = sorted(int(str(k)) for (k,) in lab_db.query(
        "SELECT key FROM chunkwise_failedrow"))
    assert recorded == bad
