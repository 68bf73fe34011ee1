"""Throttling on database health, on a real PostgreSQL: a real streaming replica whose
replay is paused (replication lag), a real autovacuum on the migrated table, an open
transaction, busy sessions and a throttle query. Each time the run waits while the signal
holds, commits nothing meanwhile, goes on when it clears, and changes every row once."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from chunkwise.contract import Env, ExitCode
from tests.conftest import LAB, LabDb
from tests.django.test_batches_pg import checkpoint, counters, seed_items, wait_until
from tests.django.test_metrics_local import scrape
from tests.support.pgserver import PgServer, free_port, running_replica, running_server

pytestmark = pytest.mark.postgres


class Run:
    """``chunkwise_run`` in the background, its output in a file to wait on."""

    def __init__(self, db: LabDb, tmp: Path, *args: str, **env: str) -> None:
        self.log = tmp / f"run-{time.monotonic_ns()}.log"
        self._out = self.log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, str(LAB / "manage.py"), "chunkwise_run", "lab", *args],
            env=db.env(**env), stdout=self._out, stderr=subprocess.STDOUT, text=True)

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            assert self.process.poll() is None or re.search(pattern, self.output()), \
                f"the run ended before {pattern!r}:\n{self.output()}"
            match = re.search(pattern, self.output())
            found[:] = [match] if match else []
            return bool(match)

        wait_until(seen, f"the run says {pattern!r}", timeout)
        return found[0]

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        self._out.close()
        return code, self.output()


@pytest.fixture(scope="module")
def primary() -> Iterator[PgServer]:
    """A server of its own: a replica streams from it, and autovacuum looks every second."""
    with running_server({"autovacuum_naptime": "1s"}) as server:
        yield server


def lab_on(server: PgServer, name: str) -> LabDb:
    server.sql(f"CREATE DATABASE {name}")
    db = LabDb(server, name)
    for target in (["lab", "0001"], ["chunkwise"]):
        subprocess.run([sys.executable, str(LAB / "manage.py"), "migrate", *target, "-v0"],
                       env=db.env(), check=True)
    return db


def replay_lag(primary: PgServer) -> float:
    with psycopg.connect(primary.dsn("postgres"), autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) "
                           "FROM pg_stat_replication").fetchone()
    return float(row[0]) if row else 0.0


def test_replication_lag_on_a_real_replica_throttles_counts_and_then_halts(
        primary: PgServer, tmp_path: Path) -> None:
    db = lab_on(primary, "lab_lag")
    seed_items(db, 6000)
    with running_replica(primary) as replica:
        replica.sql("SELECT pg_wal_replay_pause()")
        port = free_port()
        run = Run(db, tmp_path, "0002", "--batch-size", "200", "--max-batch-size", "200",
                  "--max-rows-per-second", "4000", "--throttle-replication-lag", "1s",
                  "--throttle-check-interval", "200ms", **{Env.METRICS_PORT: str(port)})
        found = run.wait_for(r"throttled: replication lag (\d+\.\d+)s > 1s "
                             r"\(throttle\.replicationLag\); waiting")
        assert float(found.group(1)) > 1.0
        held = checkpoint(db, "0002_bump_items")["rows_processed"]
        # while replay stays paused the lag only grows, and not one batch commits
        wait_until(lambda: replay_lag(primary) > 3.0, "the replica lags 3 s")
        wait_until(lambda: any(labels["reason"] == "replication_lag" and value >= 1.0
                               for labels, value in
                               scrape(port).get("chunkwise_throttled_seconds_total", [])),
                   "a second of throttling counted under reason=replication_lag")
        assert checkpoint(db, "0002_bump_items")["rows_processed"] == held
        assert 0 < int(str(held)) < 6000
        replica.sql("SELECT pg_wal_replay_resume()")
        code, output = run.finish()
        assert code == ExitCode.DONE, output
        assert re.search(r"no longer throttled, after \d", output), output
        assert counters(db) == {1: 6000}
        # the lag of the first pause is gone before the second: a first reading that still
        # saw it would halt the next run before its first batch
        wait_until(lambda: replay_lag(primary) < 0.5, "the replica caught up", timeout=60)

        # a critical level halts instead: the next operation, replay paused once it has
        # committed a batch (paused before its start, the lag that autovacuum's and the
        # checkpoints' WAL build up while Django starts could halt it before any batch)
        run = Run(db, tmp_path, "0003", "--batch-size", "200", "--max-batch-size", "200",
                  "--max-rows-per-second", "500", "--throttle-replication-lag", "1s",
                  "--halt-replication-lag", "2s", "--throttle-check-interval", "200ms")
        wait_until(lambda: db.query("SELECT 1 FROM chunkwise_checkpoint WHERE migration = "
                                    "'0003_setbased_items' AND rows_processed > 0"),
                   "the run committed a batch")
        replica.sql("SELECT pg_wal_replay_pause()")
        code, output = run.finish()
        replica.sql("SELECT pg_wal_replay_resume()")
    assert code == ExitCode.HALTED, output
    assert re.search(r"HALTED \(CriticalReplicationLag\): critical load: replication lag "
                     r"\d+\.\d+s > 2s \(--halt-replication-lag\); batches stopped, the "
                     r"checkpoint is intact; once the load is down, or with that threshold "
                     r"raised, run chunkwise_run again", output), output
    state = checkpoint(db, "0003_setbased_items")
    assert state["state"] == "halted" and 0 < int(str(state["rows_processed"])) < 6000
    done = int(str(state["rows_processed"]))
    assert counters(db) == {2: done, 1: 6000 - done}  # each row at most once


def test_autovacuum_on_the_table_throttles_until_it_ends(primary: PgServer,
                                                          tmp_path: Path) -> None:
    db = lab_on(primary, "lab_vacuum")
    seed_items(db, 20_000)
    # a real autovacuum, made slow: every page it touches costs a 100 ms nap
    db.execute("ALTER TABLE lab_item SET (autovacuum_vacuum_threshold = 0, "
                "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100, "
                "autovacuum_vacuum_cost_limit = 1)")
    db.execute("DELETE FROM lab_item WHERE id > 19000")
    vacuuming = "SELECT v.pid FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a " \
        "ON a.pid = v.pid WHERE v.relid = 'lab_item'::regclass " \
        "AND a.backend_type = 'autovacuum worker'"
    wait_until(lambda: db.query(vacuuming), "autovacuum works on lab_item", timeout=60)
    run = Run(db, tmp_path, "0002", "--batch-size", "500", "--throttle-autovacuum", "true",
              "--throttle-check-interval", "200ms")
    run.wait_for(r"throttled: autovacuum on lab_item for \d+s \([a-z ]+\) "
                 r"\(throttle\.autovacuum\); waiting")
    assert checkpoint(db, "0002_bump_items")["rows_processed"] == 0
    # turning it off for the table cancels the running one (it yields to the ALTER's lock)
    db.execute("ALTER TABLE lab_item SET (autovacuum_enabled = false)")
    code, output = run.finish()
    assert code == ExitCode.DONE, output
    assert "no longer throttled" in output
    assert counters(db) == {1: 19_000}


@contextlib.contextmanager
def busy_sessions(server: PgServer, database: str, count: int) -> Iterator[None]:
    """``count`` sessions each running a long statement, cancelled on the way out."""
    tag = f"busy-{time.monotonic_ns()}"
    threads = []

    def sleep() -> None:
        with contextlib.suppress(psycopg.errors.QueryCanceled), psycopg.connect(
                server.dsn(database), autocommit=True, application_name=tag) as conn:
            conn.execute("SELECT pg_sleep(120)")

    for _ in range(count):
        thread = threading.Thread(target=sleep)
        thread.start()
        threads.append(thread)
    with psycopg.connect(server.dsn(database), autocommit=True) as watcher:
        def active() -> int:
            row = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                  "application_name = %s AND state = 'active'", (tag,)).fetchone()
            return int(row[0]) if row else 0
        wait_until(lambda: active() == count, f"{count} busy sessions")
        try:
            yield
        finally:
            watcher.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = %s", (tag,))
            for thread in threads:
                thread.join(timeout=30)


def test_active_backends_an_old_transaction_and_a_throttle_query(lab_db: LabDb,
                                                                  tmp_path: Path) -> None:
    seed_items(lab_db, 3000)
    with busy_sessions(lab_db.server, lab_db.name, 3):
        run = Run(lab_db, tmp_path, "0002", "--batch-size", "300",
                  "--throttle-active-backends", "2", "--throttle-check-interval", "100ms")
        run.wait_for(r"throttled: active backends [3-9] > 2 \(throttle\.activeBackends\)")
        assert checkpoint(lab_db, "0002_bump_items")["rows_processed"] == 0
    code, output = run.finish()
    assert code == ExitCode.DONE and counters(lab_db) == {1: 3000}, output

    with psycopg.connect(lab_db.server.dsn(lab_db.name)) as holder:
        holder.execute("SELECT 1")  # a transaction left open, as a forgotten session does
        wait_until(lambda: lab_db.query(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND now() - xact_start > "
            "interval '1.2 seconds'", (holder.info.backend_pid,)), "the transaction is 1 s old")
        run = Run(lab_db, tmp_path, "0003", "--batch-size", "300",
                  "--throttle-transaction-age", "1s", "--throttle-check-interval", "100ms")
        run.wait_for(r"throttled: oldest transaction \d+\.\d+s > 1s "
                     r"\(throttle\.transactionAge\)")
        assert checkpoint(lab_db, "0003_setbased_items")["rows_processed"] == 0
        holder.commit()
        code, output = run.finish()
    assert code == ExitCode.DONE and counters(lab_db) == {2: 3000}, output

    lab_db.execute("CREATE TABLE hold_migrations (reason text)")
    lab_db.execute("INSERT INTO hold_migrations VALUES ('release freeze')")
    query = "SELECT count(*) FROM hold_migrations"
    run = Run(lab_db, tmp_path, "0007", "--throttle-query", query,
              "--throttle-check-interval", "100ms")
    run.wait_for(r"throttled: throttle\.query returned 1 \(> 0 waits\)")
    lab_db.execute("DELETE FROM hold_migrations")
    code, output = run.finish()
    assert code == ExitCode.DONE, output

    # the query runs read-only: one that writes halts the run with the database's words
    run = Run(lab_db, tmp_path, "0003", "--direction", "backward", "--throttle-query",
              "INSERT INTO hold_migrations VALUES ('x') RETURNING 1")
    code, output = run.finish()
    assert code == ExitCode.HALTED, output
    assert "HealthCheckFailed" in output and "read-only transaction" in output
    assert lab_db.query("SELECT count(*) FROM hold_migrations") == [(0,)]


def test_innodb_history_list_thresholds_are_refused_on_postgresql(lab_db: LabDb) -> None:
    """PostgreSQL has no undo history to read: a history list threshold is refused in one
    line naming the flag and what to use instead, not read as "nothing to wait for"."""
    seed_items(lab_db, 300)
    for flag in ("--throttle-history-list-length", "--halt-history-list-length"):
        refused = lab_db.manage("chunkwise_run", "lab", "0002", flag, "1000")
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        assert refused.stderr.count(f"{flag}: ") == 1, refused.stderr
        assert "(throttle.transactionAge)" in refused.stderr
        assert "unset it for database 'default' (PostgreSQL)" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert counters(lab_db) == {0: 300}
