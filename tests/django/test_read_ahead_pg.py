"""A per-row transform's next batch, read and transformed ahead on a connection and
thread of its own while the current batch commits (chunkwise/django/prefetch.py): the
exactly-once protocol holds as before, under a kill between the two batches in flight
and under application writes to the rows read ahead."""

from __future__ import annotations

import functools
import random
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.conftest import LabDb
from tests.django.test_batches_pg import checkpoint, counters, seed_items, wait_until

pytestmark = pytest.mark.postgres

FIXED_100 = ("--batch-size", "100", "--min-batch-size", "100", "--max-batch-size", "100")


def held_at_key_150(lab_db: LabDb, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """A transform's run over 300 rows in batches of 100, held while key 150 (batch 2's,
    read ahead) is transformed: the runner, and the mark its transform wrote there (the
    thread's name), which ``<mark>.go`` lets go on."""
    seed_items(lab_db, 300)
    pause = tmp_path / "paused"
    runner = lab_db.popen("chunkwise_run", "lab", "0002", *FIXED_100,
                          "--max-locked-fraction", "0",
                          LAB_PAUSE_AT="150", LAB_PAUSE_MARK=str(pause))
    mark = Path(f"{pause}.150")
    try:
        wait_until(mark.exists, "the transform reached key 150", 60)
    except BaseException:
        runner.kill()
        raise
    return runner, mark


def test_a_kill_while_the_next_batch_is_transformed_ahead_loses_nothing(
        lab_db: LabDb, tmp_path: Path) -> None:
    """Batch 3 (keys 201-300) is transformed on the read-ahead thread while batch 2
    commits on the run's connection; the runner is killed there, batch 3 half
    transformed. Batch 2's rows and checkpoint are committed, nothing of batch 3 is, and
    the next run resumes after key 200 with every row changed once."""
    seed_items(lab_db, 1000)
    pause = tmp_path / "paused"
    mark = Path(f"{pause}.250")
    runner = lab_db.popen("chunkwise_run", "lab", "0002", *FIXED_100,
                          "--max-locked-fraction", "0",
                          LAB_PAUSE_AT="250", LAB_PAUSE_MARK=str(pause))
    try:
        wait_until(mark.exists, "the transform reached key 250", 60)
        # batch 2 commits while batch 3 waits in the transform on the other thread
        wait_until(lambda: checkpoint(lab_db, "0002_bump_items")["rows_processed"] == 200,
                   "batch 2 committed", 30)
        assert mark.read_text().startswith("chunkwise-ahead"), mark.read_text()
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    finally:
        runner.kill()
    assert counters(lab_db) == {1: 200, 0: 800}
    resumed = lab_db.manage("chunkwise_run", "lab", "0002", *FIXED_100)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after key 200" in resumed.stderr
    assert counters(lab_db) == {1: 1000}
    assert checkpoint(lab_db, "0002_bump_items")["rows_processed"] == 1000


def test_a_row_changed_after_it_was_read_ahead_is_not_overwritten(
        lab_db: LabDb, tmp_path: Path) -> None:
    """Batch 2 (keys 101-200) is read ahead and transformed on the read-ahead thread
    while batch 1 commits; an application adds 100 to row 160 after that read. Batch 2's
    write-back does not overwrite it with the value transformed from the old row (the
    row's version no longer matches, or, if batch 2's transaction began first,
    PostgreSQL refuses the write), the batch is redone reading its rows itself, and row
    160 keeps the application's 100 and gets the run's 1."""
    runner, mark = held_at_key_150(lab_db, tmp_path)
    try:
        assert mark.read_text().startswith("chunkwise-ahead")
        lab_db.execute("UPDATE lab_item SET counter = counter + 100 WHERE id = 160")
        Path(f"{mark}.go").touch()
        output, _ = runner.communicate(timeout=120)
    finally:
        runner.kill()
    assert runner.returncode == 0, output
    assert counters(lab_db) == {1: 299, 101: 1}
    assert "serialization, retry 1" in output, output


def test_application_writes_to_rows_read_ahead_are_never_lost(lab_db: LabDb) -> None:
    """An application adds 100 to random rows all through a transform's run, the rows
    of the batch read ahead among them: a row it changed after the read ahead is not
    overwritten with a value computed from the old one (the write-back compares each
    row's version; the batch is redone reading its rows itself), and the run adds its 1
    to every row once."""
    seed_items(lab_db, 3000)
    bumped = dict.fromkeys(range(1, 3001), 0)
    stop = threading.Event()

    def application() -> None:
        with psycopg.connect(lab_db.server.dsn(lab_db.name), autocommit=True) as writer:
            while not stop.is_set():
                key = random.randint(1, 3000)
                writer.execute("UPDATE lab_item SET counter = counter + 100 WHERE id = %s",
                               (key,))
                bumped[key] += 1

    app = threading.Thread(target=application)
    app.start()
    try:
        result = lab_db.manage("chunkwise_run", "lab", "0002", *FIXED_100,
                               "--max-rows-per-second", "1500", "--max-attempts", "30")
    finally:
        stop.set()
        app.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert sum(bumped.values()) > 100  # the application wrote all through the run
    found = {int(key): int(counter) for key, counter in  # type: ignore[call-overload]
             lab_db.query("SELECT id, counter FROM lab_item")}
    assert found == {key: 1 + 100 * times for key, times in bumped.items()}
    # some rows the application changed had been read ahead: their batches were redone
    assert "serialization, retry" in result.stderr, result.stderr[-2000:]


def test_a_row_inserted_into_a_range_read_ahead_is_not_passed_over(
        lab_db: LabDb, tmp_path: Path) -> None:
    """Batch 2 (keys 202-400, every other key) is read ahead; before batch 2's
    transaction begins (the run is held in its health reading by a throttle query on a
    locked table), the application inserts key 301 into that range. Batch 2's rows are
    still as read, but its range now holds one more row to do: the batch is refused and
    redone reading its rows itself, and row 301 is changed too."""
    seed_items(lab_db, 300, gap=2)
    lab_db.execute("CREATE TABLE hold_runs (reason text)")
    pause = tmp_path / "paused"
    with psycopg.connect(lab_db.server.dsn(lab_db.name)) as holder:
        runner = lab_db.popen("chunkwise_run", "lab", "0002", *FIXED_100,
                              "--max-locked-fraction", "0",
                              "--throttle-query", "SELECT count(*) FROM hold_runs",
                              "--throttle-check-interval", "1ms",
                              LAB_PAUSE_AT="50,250", LAB_PAUSE_MARK=str(pause))
        try:
            # batch 1 is in its transform, its health reading done: the next one waits
            wait_until(Path(f"{pause}.50").exists, "batch 1 is transformed", 60)
            holder.execute("LOCK TABLE hold_runs IN ACCESS EXCLUSIVE MODE")
            Path(f"{pause}.50.go").touch()
            wait_until(Path(f"{pause}.250").exists, "batch 2 was read ahead", 60)
            wait_until(lambda: checkpoint(lab_db, "0002_bump_items")["rows_processed"]
                       == 100, "batch 1 committed", 30)
            lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                           "VALUES (301, 0, '', 0)")
            Path(f"{pause}.250.go").touch()
            holder.rollback()  # the run's health reading, and batch 2, go on
            output, _ = runner.communicate(timeout=120)
        finally:
            runner.kill()
    assert runner.returncode == 0, output
    assert counters(lab_db) == {1: 301}
    assert "serialization, retry 1" in output, output


def sessions_opened(db: LabDb, run: Callable[[], None]) -> int:
    """How many sessions ``run`` opened on the database, as PostgreSQL counts them
    (``pg_stat_database.sessions``, flushed when each session ends); the reading's own
    session is taken off."""
    def count() -> int:
        [(sessions,)] = db.query(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        assert isinstance(sessions, int)
        return sessions

    before = count()
    run()
    return count() - before - 1  # the session that read ``before``


def test_a_paced_run_opens_no_read_ahead_per_batch(lab_db: LabDb) -> None:
    """Batches 2.5 s apart (``--pause``): a batch read ahead is two batches' time old at
    its turn, older than it is used for (FRESH_FOR, 4 s), so the run stops reading ahead
    after the first; it used to start a thread and open a connection for every batch,
    and drop each. Counted against a set-based run of the same batches, which never
    reads ahead."""
    def run(migration: str, *args: str) -> Callable[[], None]:
        def go() -> None:
            result = lab_db.manage("chunkwise_run", "lab", migration, *FIXED_100,
                                   "--max-locked-fraction", "0", *args)
            assert result.returncode == 0, result.stderr
        return go

    seed_items(lab_db, 400)
    set_based = sessions_opened(lab_db, run("0003"))
    lab_db.execute("UPDATE lab_item SET counter = 0")
    lab_db.execute("DELETE FROM chunkwise_checkpoint")
    transform = sessions_opened(lab_db, run("0002", "--pause", "2.5s"))
    assert counters(lab_db) == {1: 400}
    assert transform - set_based <= 1, (transform, set_based)


def test_an_isolated_batch_reads_no_batch_ahead(lab_db: LabDb) -> None:
    """A batch with a failing row is split in halves until the row is found; each part
    ends at its own last key, so nothing lies beyond it to read ahead, and no part
    starts a read-ahead (each one used to start a thread and a connection, to find an
    empty range). Counted against the same run without the failing row."""
    def run() -> None:
        result = lab_db.manage("chunkwise_run", "lab", "0002", *FIXED_100)
        assert result.returncode == 0, result.stderr

    seed_items(lab_db, 200)
    clean = sessions_opened(lab_db, run)
    lab_db.execute("DELETE FROM lab_item")
    lab_db.execute("DELETE FROM chunkwise_checkpoint")
    seed_items(lab_db, 200, payload_at={42: "raise"})
    isolated = sessions_opened(lab_db, run)
    assert counters(lab_db) == {1: 199, 0: 1}
    assert isolated - clean <= 1, (isolated, clean)


def test_the_read_ahead_is_named_after_its_run_and_not_counted_as_load(
        lab_db: LabDb, tmp_path: Path) -> None:
    """While the read-ahead thread transforms batch 2, its connection shows in
    pg_stat_activity as ``chunkwise read-ahead of <host>:<the runner's pid>``; a health
    reading leaves a session with its own process's read-ahead name out of active
    backends and of the oldest transaction, while one named for another process, or
    not named, counts."""
    from django.db import connections

    from chunkwise.django.health import PostgresHealthProbe
    from chunkwise.django.prefetch import helper_name
    from chunkwise.engine import RunSettings, ThrottleSettings

    runner, mark = held_at_key_150(lab_db, tmp_path)
    try:
        named = lab_db.query("SELECT application_name FROM pg_stat_activity "
                             "WHERE application_name LIKE 'chunkwise read-ahead of %%'")
        Path(f"{mark}.go").touch()
        output, _ = runner.communicate(timeout=120)
    finally:
        runner.kill()
    assert runner.returncode == 0, output
    assert named == [(f"chunkwise read-ahead of {socket.gethostname()}:{runner.pid}",)]

    settings = RunSettings(throttle=ThrottleSettings(active_backends=5, transaction_age=60))
    probe = PostgresHealthProbe("default", "lab_item")
    connections["default"].ensure_connection()
    lab_db.execute("SELECT 1")  # a session of the test's own, not busy
    for name, counted in ((helper_name(), 0), ("chunkwise read-ahead of elsewhere:1", 1),
                          ("", 1)):
        with psycopg.connect(lab_db.server.dsn(lab_db.name), autocommit=True) as holder, \
                psycopg.connect(lab_db.server.dsn(lab_db.name)) as helper:
            holder.execute("SELECT pg_advisory_lock(42)")
            helper.execute("SELECT set_config('application_name', %s, false)", (name,))
            busy = threading.Thread(target=helper.execute,
                                    args=("SELECT pg_advisory_lock(42)",))
            busy.start()  # waits on the lock: active, in a transaction, until released
            wait_until(functools.partial(
                lab_db.query, "SELECT 1 FROM pg_stat_activity WHERE pid = %s "
                "AND wait_event_type = 'Lock'", (helper.info.backend_pid,)),
                "the helper waits", 10)
            reading = probe.read(settings)
            holder.execute("SELECT pg_advisory_unlock(42)")
            busy.join()
        assert (reading.active_backends, reading.transaction_age is not None
                and reading.transaction_age > 0) == (counted, bool(counted)), name


def test_reading_ahead_stops_while_batches_come_far_apart_and_resumes_after(
        django_setup: None) -> None:
    """On a clock the test moves: batches more than half of FRESH_FOR apart (a batch read
    ahead is two batches' time old at its turn) start no read-ahead; once one follows
    the last closely, the next is read ahead again; a read-ahead older than FRESH_FOR is
    dropped."""
    from chunkwise.django.prefetch import FRESH_FOR, Ahead, ReadAhead

    now = [100.0]
    reads: list[int] = []
    read_once = threading.Event()

    def read(after: int, limit: int, cancelled: threading.Event) -> Ahead:
        reads.append(after)
        read_once.set()
        return Ahead((after, 10_000), [object()] * limit, ["1"] * limit, after + limit,
                     full=False, read_at=now[0])  # one batch, then the thread ends

    ahead = ReadAhead("default", clock=lambda: now[0])
    ahead.limit = 100

    def start(after: int, reads_now: bool) -> None:
        read_once.clear()
        ahead.start(after, read)
        if reads_now:  # the read is stamped before the clock moves on
            assert read_once.wait(10)

    def batch(after: int, gap: float) -> Ahead | None:
        now[0] += gap
        taken = ahead.take((after, 10_000))
        ahead.discard()
        return taken

    start(0, reads_now=True)
    assert batch(0, FRESH_FOR * 0.3) is not None  # fresh: used
    start(100, reads_now=True)
    assert batch(100, FRESH_FOR * 0.6) is not None  # 0.6 apart: used, but no more
    start(200, reads_now=False)
    assert batch(200, FRESH_FOR * 0.3) is None  # closer again: the next is read ahead
    start(300, reads_now=True)
    assert batch(300, FRESH_FOR * 1.2) is None  # older than FRESH_FOR: dropped
    start(400, reads_now=False)
    assert reads == [0, 100, 300]
    ahead.close()


def test_a_running_read_ahead_stops_once_batches_come_far_apart(django_setup: None) -> None:
    """A read-ahead under way when the batches start coming more than half of FRESH_FOR
    apart (a run paced from the start: its first gap is seen only at the second batch)
    hands over the batch it has, still fresh, and reads no more."""
    from chunkwise.django.prefetch import FRESH_FOR, Ahead, ReadAhead

    now = [100.0]

    def read(after: int, limit: int, cancelled: threading.Event) -> Ahead:
        return Ahead((after, 10_000), [object()] * limit, ["1"] * limit, after + limit,
                     full=True, read_at=now[0])  # more follow: the thread reads on

    ahead = ReadAhead("default", clock=lambda: now[0])
    ahead.limit = 100
    ahead.start(0, read)
    assert ahead.take((0, 10_000)) is not None  # the first: no gap seen yet
    now[0] += FRESH_FOR * 0.6
    assert ahead.take((100, 10_000)) is not None  # read at once: still fresh, used
    assert not ahead.pending  # and nothing more is read
    ahead.close()
