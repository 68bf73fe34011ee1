"""The batch engine and BatchedRunPython on a real MariaDB server (10.11, Debian's): the
guarantees test_batches_pg.py proves on PostgreSQL, on InnoDB."""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chunkwise.contract import ExitCode
from tests.django.test_batches_pg import checkpoint, counters, wait_for_batches, wait_until
from tests.django.test_throttle_pg import Run
from tests.support.mariaserver import INNODB_VIEW_EVERY

pytestmark = pytest.mark.mariadb


def seed_items(db: Any, count: int, gap: int = 1,
               payload_at: dict[int, str] | None = None) -> None:
    # MariaDB's sequence engine: seq_1_to_N is a table of 1..N
    db.execute(f"INSERT INTO lab_item (id, counter, payload, score) "
               f"SELECT seq * %s, 0, '', 0 FROM seq_1_to_{int(count)}", (gap,))
    for key, payload in (payload_at or {}).items():
        db.execute("UPDATE lab_item SET payload = %s WHERE id = %s", (payload, key))


def innodb_view(db: Any, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """A query of InnoDB's information_schema views (INNODB_TRX, INNODB_LOCK_WAITS),
    read at most every INNODB_VIEW_EVERY s (see there)."""
    time.sleep(INNODB_VIEW_EVERY)
    return [tuple(row) for row in db.query(sql, params)]


def other_sessions(db: Any) -> int:
    """Sessions of other clients on the lab database: a killed runner's lingers until the
    server notices the closed socket, holding its runner lock until then."""
    return int(db.query("SELECT count(*) FROM information_schema.PROCESSLIST "
                        "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()")[0][0])


@pytest.mark.every_leg
def test_transform_and_set_based_forward_and_reverse_change_every_row_once(
        maria_lab_db: Any) -> None:
    db = maria_lab_db
    seed_items(db, 3000, gap=7)
    result = db.manage("chunkwise_run", "lab", "0002", "--batch-size", "500")
    assert result.returncode == 0, result.stderr
    assert "MariaDB 10.11" in result.stderr and "through mysqlclient" in result.stderr
    assert counters(db) == {1: 3000}
    assert db.manage("chunkwise_run", "lab", "0003").returncode == 0
    assert counters(db) == {2: 3000}
    backward = db.manage("chunkwise_run", "lab", "0003", "--direction", "backward")
    assert backward.returncode == 0, backward.stderr
    assert counters(db) == {1: 3000}
    cp = checkpoint(db, "0002_bump_items")
    assert (cp["state"], cp["rows_processed"], cp["failed_rows"]) == ("done", 3000, 0)


def test_a_server_in_another_time_zone_gets_the_checkpoints_times_in_utc(
        maria_lab_db: Any) -> None:
    """Django keeps times in UTC on MySQL and MariaDB (USE_TZ), but CURRENT_TIMESTAMP,
    which Django's Now() is there, is the server's local time: on a server at +05:00 a
    run's heartbeat and completion (and verification) were stored five hours ahead of its
    start, so its heartbeat looked fresh for hours after the runner died. Every time on
    the checkpoint is now the runner's UTC clock, as the start's always was."""
    import datetime

    db = maria_lab_db
    seed_items(db, 300)
    db.execute("SET GLOBAL time_zone = '+05:00'")  # the runner's new sessions take it
    try:
        assert db.manage("chunkwise_run", "lab", "0002").returncode == 0
        [(zone,)] = db.query("SELECT @@session.time_zone")
        times = db.query("SELECT started_at, heartbeat_at, completed_at "
                         "FROM chunkwise_checkpoint WHERE migration = '0002_bump_items'")
    finally:
        db.execute("SET GLOBAL time_zone = 'SYSTEM'")
    assert zone == "+05:00"
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # stored naive, in UTC
    for name, moment in zip(("started_at", "heartbeat_at", "completed_at"), times[0],
                            strict=True):
        assert moment is not None and abs(now - moment) < datetime.timedelta(minutes=5), \
            (name, moment, now)


@pytest.mark.every_leg
def test_migrate_runs_a_batched_migration_and_its_reverse(maria_lab_db: Any) -> None:
    db = maria_lab_db
    seed_items(db, 2000)
    forward = db.manage("migrate", "lab", "0003")
    assert forward.returncode == 0, forward.stderr
    assert counters(db) == {2: 2000}
    backward = db.manage("migrate", "lab", "0002")
    assert backward.returncode == 0, backward.stderr
    assert counters(db) == {1: 2000}


@pytest.mark.parametrize("migration", ["0002", "0003"])
def test_kill_9_at_random_moments_changes_every_row_exactly_once(maria_lab_db: Any,
                                                                 migration: str) -> None:
    """Runs of a non-idempotent change (counter + 1), each SIGKILLed at a random moment,
    then one run to the end: every row changed exactly once, and the checkpoint, read after
    every kill, never moved backwards."""
    db = maria_lab_db
    rows = 30_000
    seed_items(db, rows, gap=3)
    rng = random.Random(20261207)
    targets = sorted(rng.randrange(0, rows - 3000) for _ in range(15))
    name = "0002_bump_items" if migration == "0002" else "0003_setbased_items"
    kills, after_kill = 0, []
    for target in targets:
        runner = db.popen("chunkwise_run", "lab", migration, "--batch-size", "1000")
        while runner.poll() is None:
            found = db.query("SELECT coalesce(max(rows_processed), -1) FROM chunkwise_checkpoint")
            if int(found[0][0]) >= target:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.02))
        if runner.poll() is None:
            runner.send_signal(signal.SIGKILL)
            kills += 1
        runner.wait(timeout=30)
        if db.query("SELECT 1 FROM chunkwise_checkpoint"):
            after_kill.append(int(checkpoint(db, name)["last_key"]))  # type: ignore[call-overload]
        wait_until(lambda: other_sessions(db) == 0, "the killed runner's session is gone")
    final = db.manage("chunkwise_run", "lab", migration)
    assert final.returncode == 0, final.stderr
    assert kills >= 10, "most runners should have been killed mid-run"
    assert after_kill == sorted(after_kill), "the checkpoint moved backwards after a kill"
    assert counters(db) == {1: rows}
    cp = checkpoint(db, name)
    assert (cp["rows_processed"], cp["failed_rows"]) == (rows, 0)


def test_second_runner_exits_with_busy_and_names_the_first(maria_lab_db: Any) -> None:
    db = maria_lab_db
    seed_items(db, 3000)
    first = db.popen("chunkwise_run", "lab", "0002", "--batch-size", "100",
                     LAB_ROW_SLEEP="0.001")
    wait_for_batches(db)
    second = db.manage("chunkwise_run", "lab", "0002")
    assert second.returncode == 69, second.stderr
    assert "already being run by" in second.stderr and "pid" in second.stderr
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0, output
    assert counters(db) == {1: 3000}


def _holder(db: Any) -> Any:
    import MySQLdb

    server = db.server
    holder = MySQLdb.connect(host=server.host, port=server.port, user=server.user,
                             database=db.name)
    holder.autocommit(False)
    return holder


@pytest.mark.parametrize("migration", ["0003_setbased_items", "0002_bump_items"])
def test_lock_contention_waits_retries_and_reports_lock_wait(maria_lab_db: Any,
                                                             migration: str) -> None:
    """A session holds some of the rows; the runner's batch waits timeouts.lock (whole
    seconds: innodb_lock_wait_timeout), times out (1205), retries, and counts the wait."""
    db = maria_lab_db
    seed_items(db, 1000)
    holder = _holder(db)
    holder.cursor().execute("SELECT id FROM lab_item WHERE id BETWEEN 400 AND 600 FOR UPDATE")

    def waiting() -> set[str]:
        return {str(trx) for (trx,) in innodb_view(
            db, "SELECT requesting_trx_id FROM information_schema.INNODB_LOCK_WAITS")}

    def release_after_a_timed_out_wait() -> None:
        """Hold the rows until a batch's wait has timed out and its retry waits again (a
        transaction of its own, so another waiting transaction id), then let it through."""
        first: set[str] = set()

        def a_batch_waits() -> bool:
            first.update(waiting())
            return bool(first)

        wait_until(a_batch_waits, "a batch waits", 120)
        wait_until(lambda: bool(waiting() - first), "a retried batch waits again", 120)
        holder.rollback()

    release = threading.Thread(target=release_after_a_timed_out_wait)
    release.start()
    try:
        result = db.manage("chunkwise_run", "lab", migration[:4], "--batch-size", "100",
                           "--lock-timeout", "1s", "--max-attempts", "30",
                           "--backoff", "100ms")
    finally:
        release.join()
        holder.close()
    assert result.returncode == 0, result.stderr
    assert "lock_timeout, retry" in result.stderr
    assert counters(db) == {1: 1000}
    assert float(checkpoint(db, migration)["lock_wait_seconds"]) >= 1.0, result.stderr  # type: ignore[arg-type]


def test_application_writes_during_set_based_batches_are_never_lost(maria_lab_db: Any) -> None:
    """Set-based batches skip the lock step while nothing contends: their UPDATE locks the
    rows and changes each one's latest version. An application bumping random rows by 100
    in transactions of its own, all through the run, loses none of its writes, and the
    migration adds its 1 to every row once."""
    import random

    db = maria_lab_db
    seed_items(db, 3000)
    bumped = dict.fromkeys(range(1, 3001), 0)
    stop = threading.Event()

    def application() -> None:
        writer = _holder(db)
        writer.autocommit(True)
        try:
            while not stop.is_set():
                key = random.randint(1, 3000)
                writer.cursor().execute(
                    "UPDATE lab_item SET counter = counter + 100 WHERE id = %s", (key,))
                bumped[key] += 1
        finally:
            writer.close()

    app = threading.Thread(target=application)
    app.start()
    try:
        result = db.manage("chunkwise_run", "lab", "0003", "--batch-size", "100",
                           "--max-rows-per-second", "1500")
    finally:
        stop.set()
        app.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert sum(bumped.values()) > 100  # the application wrote all through the run
    found = {int(key): int(counter) for key, counter in db.query(
        "SELECT id, counter FROM lab_item")}
    assert found == {key: 1 + 100 * times for key, times in bumped.items()}


def test_a_lock_held_past_the_retry_budget_stops_naming_the_holder(maria_lab_db: Any) -> None:
    db = maria_lab_db
    seed_items(db, 1000)
    holder = _holder(db)
    try:
        cursor = holder.cursor()
        cursor.execute("SELECT id FROM lab_item WHERE id BETWEEN 400 AND 600 FOR UPDATE")
        cursor.execute("SELECT CONNECTION_ID()")
        (thread,) = cursor.fetchone()
        stopped = db.manage("chunkwise_run", "lab", "0003", "--batch-size", "100",
                            "--lock-timeout", "500ms", "--max-attempts", "2",
                            "--backoff", "50ms")
    finally:
        holder.rollback()
        holder.close()
    assert stopped.returncode == 1, stopped.stderr  # retryable: a Job would run it again
    message = stopped.stderr
    assert "note: --lock-timeout 0.5s waits 1s on MariaDB/MySQL, which counts lock waits in " \
        "whole seconds (innodb_lock_wait_timeout)" in message
    assert "lock waits: all 2 attempts of a batch timed out waiting 1s (timeouts.lock)" \
        in message
    assert f"thread {thread} (user root, host 127.0.0.1:" in message
    assert "Sleep) has held 202 row lock(s) in a transaction for" in message
    assert "Traceback" not in message
    assert checkpoint(db, "0003_setbased_items")["rows_processed"] == 300
    resumed = db.manage("chunkwise_run", "lab", "0003")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after key 300" in resumed.stderr
    assert counters(db) == {1: 1000}


def test_statement_timeout_on_an_oversized_batch_halves_it_and_completes(
        maria_lab_db: Any) -> None:
    """max_statement_time (1969) is a statement timeout: the batch is split and retried."""
    db = maria_lab_db
    seed_items(db, 1000)
    # every updated row costs 2 ms inside the UPDATE: 800 rows take 1.6 s, 100 take 0.2 s
    db.execute("CREATE TRIGGER lab_slow BEFORE UPDATE ON lab_item FOR EACH ROW "
               "SET @slept = SLEEP(0.002)")
    result = db.manage("chunkwise_run", "lab", "0003", "--batch-size", "800",
                       "--max-batch-size", "800", "--max-locked-fraction", "0",
                       "--statement-timeout", "1s")
    assert result.returncode == 0, result.stderr
    assert "statement_timeout" in result.stderr
    assert counters(db) == {1: 1000}


def test_failing_rows_are_isolated_recorded_and_skipped(maria_lab_db: Any) -> None:
    db = maria_lab_db
    bad = {137: "raise", 1500: "raise", 2999: "raise"}
    seed_items(db, 3000, payload_at=bad)
    result = db.manage("chunkwise_run", "lab", "0002", "--batch-size", "500")
    assert result.returncode == 0, result.stderr
    assert counters(db) == {1: 2997, 0: 3}
    failures = db.query("SELECT `key`, error_class FROM chunkwise_failedrow ORDER BY id")
    assert [tuple(row) for row in failures] == [("137", "ValueError"), ("1500", "ValueError"),
                                                ("2999", "ValueError")]
    cp = checkpoint(db, "0002_bump_items")
    assert cp["rows_processed"] == 2997 and cp["failed_rows"] == 3


def test_a_constraint_violation_in_set_based_work_is_isolated(maria_lab_db: Any) -> None:
    db = maria_lab_db
    seed_items(db, 1000, payload_at={10: "negative", 777: "negative"})
    result = db.manage("chunkwise_run", "lab", "0003", "--batch-size", "200")
    assert result.returncode == 0, result.stderr
    assert counters(db) == {1: 998, 0: 2}
    failures = db.query("SELECT `key`, error_class FROM chunkwise_failedrow ORDER BY id")
    assert [tuple(row) for row in failures] == [("10", "IntegrityError"),
                                                ("777", "IntegrityError")]


def test_uuid_and_text_keys_follow_the_database(maria_lab_db: Any) -> None:
    """UUID keys (MariaDB's uuid type) and text keys in the column's collation
    (utf8mb4_general_ci: accents and case compare as the database says, never Python)."""
    db = maria_lab_db
    db.execute("INSERT INTO lab_uuiditem (id, counter) SELECT UUID(), 0 FROM seq_1_to_1234")
    db.execute("INSERT INTO lab_textitem (slug, counter) "
               "SELECT CONCAT(MD5(seq), '-é-', seq), 0 FROM seq_1_to_987")
    db.execute("INSERT INTO lab_textitem (slug, counter) VALUES ('Zebra', 0), ('apple', 0), "
               "('Éclair', 0), ('eclairs', 0)")
    for operation in ("0", "1", "2"):
        result = db.manage("chunkwise_run", "lab", "0004", "--operation", operation,
                           "--batch-size", "100")
        assert result.returncode == 0, result.stderr
    assert counters(db, "lab_uuiditem") == {2: 1234}  # set-based + transform
    assert counters(db, "lab_textitem") == {1: 991}


def test_uuid_keys_kept_as_32_hex_characters_are_bound_as_the_column_holds_them(
        maria_lab_db: Any) -> None:
    """The char(32) UUID column of MySQL and of MariaDB before 10.7, through the field
    Django's release notes give for it: keys are compared as the hex the column holds
    (a hyphenated UUID would sort after every hex key that starts with the same digit)."""
    db = maria_lab_db
    assert db.query("SELECT DATA_TYPE, CHARACTER_MAXIMUM_LENGTH FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'lab_hexuuiditem' "
                    "AND COLUMN_NAME = 'id'") == [("char", 32)]
    db.execute("INSERT INTO lab_hexuuiditem (id, counter) "
               "SELECT REPLACE(UUID(), '-', ''), 0 FROM seq_1_to_1234")
    for operation in ("0", "1"):
        result = db.manage("chunkwise_run", "lab", "0017", "--operation", operation,
                           "--batch-size", "100")
        assert result.returncode == 0, result.stderr
    assert counters(db, "lab_hexuuiditem") == {2: 1234}  # set-based + transform


def test_a_table_that_cannot_roll_back_is_refused_before_any_row(maria_lab_db: Any) -> None:
    db = maria_lab_db
    db.execute("INSERT INTO lab_uuiditem (id, counter) SELECT UUID(), 0 FROM seq_1_to_100")
    db.execute("ALTER TABLE lab_uuiditem ENGINE=MyISAM")
    checked = db.manage("check", "--database", "default")
    assert checked.returncode == 1, checked.stderr
    assert "(chunkwise.E010) table lab_uuiditem of database 'default' is MyISAM, which " \
        "cannot roll back a transaction" in checked.stderr
    refused = db.manage("chunkwise_run", "lab", "0004", "--operation", "0")
    assert refused.returncode == 64, refused.stderr
    assert "table lab_uuiditem (MyISAM) of database 'default' cannot roll back a " \
        "transaction" in refused.stderr
    assert counters(db, "lab_uuiditem") == {0: 100}


def test_a_killed_connection_is_retried_on_a_new_one_and_loses_nothing(
        maria_lab_db: Any) -> None:
    db = maria_lab_db
    seed_items(db, 4000)
    runner = db.popen("chunkwise_run", "lab", "0002", "--batch-size", "100",
                      "--backoff", "50ms", LAB_ROW_SLEEP="0.001")
    killed = 0
    deadline = time.monotonic() + 60
    while runner.poll() is None and killed < 3 and time.monotonic() < deadline:
        if db.query("SELECT 1 FROM chunkwise_checkpoint WHERE batches > %s",
                    (5 * (killed + 1),)):
            for (thread,) in db.query("SELECT ID FROM information_schema.PROCESSLIST "
                                      "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"):
                try:
                    db.execute(f"KILL CONNECTION {int(thread)}")
                    killed += 1
                except Exception:  # it ended meanwhile
                    pass
        time.sleep(0.05)
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode == 0, output
    assert killed >= 1
    assert re.search(r"connection, retry 1 in", output), output
    assert counters(db) == {1: 4000}
    cp = checkpoint(db, "0002_bump_items")
    assert (cp["state"], cp["rows_processed"]) == ("done", 4000)


def test_the_batches_session_settings_end_with_the_run(maria_lab_db: Any) -> None:
    """MariaDB has no SET LOCAL: the batches' timeouts are session variables, put back when
    the run ends (done, or halted) and after a plan's samples, so that what runs after
    them on the same connection (the next migrations of a migrate) is not cut short."""
    db = maria_lab_db
    seed_items(db, 500)
    script = "\n".join([
        "from django.core.management import call_command",
        "from django.db import connection",
        "try:",
        "    call_command('chunkwise_run', 'lab', '0003', '--statement-timeout', '7s',",
        "                 '--lock-timeout', '3s')",
        "except SystemExit:",
        "    pass",
        "def show(after):",
        "    cursor = connection.cursor()",
        "    cursor.execute('SELECT @@SESSION.max_statement_time, "
        "@@SESSION.innodb_lock_wait_timeout')",
        "    print(after, *cursor.fetchone())",
        "show('after the run:')",
        "try:",
        "    call_command('chunkwise_plan', 'lab', '0002', '--statement-timeout', '8s')",
        "except SystemExit:",
        "    pass",
        "show('after a plan:')",
        "try:",
        "    call_command('chunkwise_run', 'lab', '0002', '--statement-timeout', '9s',",
        "                 '--halt-failed-rows', '0')",
        "except SystemExit:",
        "    pass",
        "show('after a halt:')",
    ])
    db.execute("UPDATE lab_item SET payload = 'raise' WHERE id = 7")
    result = db.manage("shell", "-c", script)
    assert result.returncode == 0, result.stderr
    assert "HALTED (FailedRowsExceeded)" in result.stderr, result.stderr
    assert checkpoint(db, "0003_setbased_items")["rows_processed"] == 500
    for line in ("after the run: 0.0 50", "after a plan: 0.0 50", "after a halt: 0.0 50"):
        assert line in result.stdout, result.stdout + result.stderr


def _batches_in_general_log(db: Any) -> dict[int, list[list[str]]]:
    """The statements of each batch transaction (one that advanced a checkpoint) in the
    server's general log, by client thread: from SET autocommit=0 to COMMIT."""
    found: dict[int, list[list[str]]] = {}
    current: dict[int, list[str]] = {}
    for thread, statement in db.query(
            "SELECT thread_id, CONVERT(argument USING utf8mb4) FROM mysql.general_log "
            "WHERE command_type = 'Query' ORDER BY event_time"):
        statement = " ".join(str(statement).split())
        if statement == "SET autocommit=0":
            current[thread] = []
        elif thread in current:
            current[thread].append(statement)
            if statement == "COMMIT":
                statements = current.pop(thread)
                if any("batches = batches + 1" in s for s in statements):
                    found.setdefault(int(thread), []).append(statements)
    return found


@pytest.mark.every_leg
def test_a_batch_sends_as_many_statements_of_work_as_on_postgresql(maria_lab_db: Any) -> None:
    """Counted in the server's general log: a set-based batch locks its checkpoint row,
    finds its last key in one step of the key's index, runs the work (whose UPDATE locks
    the rows itself, as on PostgreSQL, under the short lock timeout of a batch nothing
    contends: 1 s, InnoDB's least), advances the checkpoint; a per-row batch reads and
    locks its rows, writes them all back in one UPDATE joined with their new values,
    advances. Four statements, as on PostgreSQL, in the transaction Django's MySQL backend
    opens with SET autocommit=0 (and closes with COMMIT, SET autocommit=1). The session's
    timeouts are set once, not per batch."""
    db = maria_lab_db
    db.execute("INSERT INTO lab_codeditem (item_code, counter) SELECT seq, 0 FROM seq_1_to_300")
    db.execute("SET GLOBAL log_output = 'TABLE'")
    db.execute("TRUNCATE mysql.general_log")
    db.execute("SET GLOBAL general_log = 1")
    try:
        for operation in ("0", "1"):  # 0008: set-based, then a per-row transform
            result = db.manage("chunkwise_run", "lab", "0008", "--operation", operation,
                               "--batch-size", "100", "--min-batch-size", "100",
                               "--max-batch-size", "100", "--max-locked-fraction", "0")
            assert result.returncode == 0, result.stderr
    finally:
        db.execute("SET GLOBAL general_log = 0")
    runs = list(_batches_in_general_log(db).values())
    db.execute("TRUNCATE mysql.general_log")
    assert [len(batches) for batches in runs] == [3, 3], runs
    set_based, per_row = runs
    for number, statements in enumerate(set_based + per_row):
        if number in (0, 3):  # the first batch of each run sets the session's timeouts
            assert statements[:2] == ["SELECT @@SESSION.innodb_lock_wait_timeout, "
                                      "@@SESSION.max_statement_time",
                                      f"SET SESSION innodb_lock_wait_timeout = "
                                      f"{1 if number < 3 else 2}, "
                                      "max_statement_time = 30.0e0"], statements
            statements = statements[2:]
        shown = "\n  ".join(statements)
        assert len(statements) == 5, f"a batch sent {len(statements)} statements:\n  {shown}"
        lock, rows, work, advance, commit = statements
        assert lock.startswith("SELECT last_key") and lock.endswith("FOR UPDATE"), lock
        assert rows.startswith("SELECT todo.chunkwise_key FROM (SELECT") and \
            rows.endswith("ORDER BY todo.chunkwise_key LIMIT 1 OFFSET 99") \
            if number < 3 else rows.endswith("FOR UPDATE"), rows
        assert work.startswith("UPDATE `lab_codeditem` SET `counter`" if number < 3 else
                               "UPDATE `lab_codeditem` JOIN (SELECT "), work
        assert advance.startswith("UPDATE `chunkwise_checkpoint` SET last_key"), advance
        assert commit == "COMMIT"


def test_four_shards_in_parallel_do_every_row_once_and_resume_after_kill_9(
        maria_lab_db: Any) -> None:
    """MariaDB has many writers: `--shards 4` runs the shards side by side, each with its
    own checkpoint and runner lock; a SIGKILL of the whole process, then a second run:
    every row exactly once."""
    db = maria_lab_db
    seed_items(db, 20_000, gap=3)
    first = db.popen("chunkwise_run", "lab", "0002", "--shards", "4", "--batch-size",
                     "200", LAB_ROW_SLEEP="0.0002")
    wait_until(lambda: int(db.query(
        "SELECT coalesce(sum(rows_processed), 0) FROM chunkwise_checkpoint")[0][0]) >= 2000,
        "the shards committed 2000 rows", timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    shards = db.query("SELECT shard, shard_count, rows_estimated, lower_key "
                      "FROM chunkwise_checkpoint ORDER BY shard")
    assert [tuple(s) for s in shards] == [(0, 4, 5000, None), (1, 4, 5000, "15000"),
                                          (2, 4, 5000, "30000"), (3, 4, 5000, "45000")]
    busy = [int(str(n)) for (n,) in db.query(
        "SELECT rows_processed FROM chunkwise_checkpoint ORDER BY shard")]
    assert sum(1 for n in busy if n > 0) >= 2, busy  # they ran side by side
    wait_until(lambda: other_sessions(db) == 0, "the killed runner's sessions are gone")
    second = db.manage("chunkwise_run", "lab", "0002", "--shards", "4")
    assert second.returncode == 0, second.stderr
    assert counters(db) == {1: 20_000}
    assert [tuple(row) for row in db.query(
        "SELECT sum(rows_processed), min(state = 'done') FROM chunkwise_checkpoint")] == \
        [(20_000, 1)]


def test_throttles_on_running_threads_an_old_transaction_and_a_throttle_query(
        maria_lab_db: Any, tmp_path: Path) -> None:
    """MariaDB's health figures: Threads_running (gh-ost's max-load), the oldest InnoDB
    transaction of another session, the throttle query (read-only, under the statement
    timeout). Each time the run waits while the signal holds, commits nothing meanwhile,
    and goes on when it clears."""
    db = maria_lab_db
    seed_items(db, 3000)
    sleepers = [_holder(db) for _ in range(3)]
    ids = [connection.thread_id() for connection in sleepers]  # before they are busy
    threads = [threading.Thread(target=lambda c=c: _ignore_kill(c, "SELECT SLEEP(60)"))
               for c in sleepers]
    for thread in threads:
        thread.start()
    try:
        run = Run(db, tmp_path, "0002", "--batch-size", "300",
                  "--throttle-active-backends", "2", "--throttle-check-interval", "100ms")
        run.wait_for(r"throttled: active backends [3-9] > 2 \(throttle\.activeBackends\)")
        assert checkpoint(db, "0002_bump_items")["rows_processed"] == 0
    finally:
        for thread_id in ids:
            db.execute(f"KILL QUERY {thread_id}")
        for thread in threads:
            thread.join(timeout=30)
        for connection in sleepers:
            connection.close()
    code, output = run.finish()
    assert code == ExitCode.DONE and counters(db) == {1: 3000}, output

    holder = _holder(db)
    try:
        holder.cursor().execute("SELECT count(*) FROM lab_item")  # a transaction left open
        wait_until(lambda: innodb_view(
            db, "SELECT 1 FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = %s "
            "AND trx_started < NOW() - INTERVAL 1 SECOND", (holder.thread_id(),)),
            "the transaction is more than 1 s old")
        run = Run(db, tmp_path, "0003", "--batch-size", "300",
                  "--throttle-transaction-age", "1s", "--throttle-check-interval", "100ms")
        run.wait_for(r"throttled: oldest transaction \d+(\.\d+)?s > 1s "
                     r"\(throttle\.transactionAge\)")
        assert checkpoint(db, "0003_setbased_items")["rows_processed"] == 0
        holder.commit()
        code, output = run.finish()
    finally:
        holder.close()
    assert code == ExitCode.DONE and counters(db) == {2: 3000}, output

    db.execute("CREATE TABLE hold_migrations (reason text)")
    db.execute("INSERT INTO hold_migrations VALUES ('release freeze')")
    run = Run(db, tmp_path, "0003", "--direction", "backward", "--throttle-query",
              "SELECT count(*) FROM hold_migrations", "--throttle-check-interval", "100ms")
    run.wait_for(r"throttled: throttle\.query returned 1 \(> 0 waits\)")
    db.execute("DELETE FROM hold_migrations")
    code, output = run.finish()
    assert code == ExitCode.DONE and counters(db) == {1: 3000}, output

    # the query runs read-only: one that writes halts the run with the database's words
    run = Run(db, tmp_path, "0003", "--throttle-query",
              "INSERT INTO hold_migrations VALUES ('x')")
    code, output = run.finish()
    assert code == ExitCode.HALTED, output
    assert "HealthCheckFailed" in output and "READ ONLY transaction" in output
    assert db.query("SELECT count(*) FROM hold_migrations") == [(0,)]


def _grow_the_history_list(db: Any, snapshot: Any) -> None:
    """A read view opened on ``snapshot``, then 60 commits, each an undo log the view
    keeps from purge: InnoDB's history list is at least 60 long until it ends."""
    snapshot.cursor().execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    for _ in range(60):
        db.execute("UPDATE lab_item SET score = score + 1 WHERE id = 1")
    wait_until(lambda: int(db.query("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
                           [0][1]) >= 60, "the history list grew")


def test_purge_lag_throttles_and_at_a_critical_length_halts(maria_lab_db: Any,
                                                           tmp_path: Path) -> None:
    """InnoDB's history list (undo its purge has not yet removed) grows while a read
    view older than the writes is open: the run waits above throttle.historyListLength
    without committing a batch, goes on once purge has caught up, and halts above the
    critical level, each row once."""
    db = maria_lab_db
    seed_items(db, 3000)
    snapshot = _holder(db)
    try:
        _grow_the_history_list(db, snapshot)
        run = Run(db, tmp_path, "0002", "--batch-size", "300",
                  "--throttle-history-list-length", "40", "--throttle-check-interval", "100ms")
        run.wait_for(r"throttled: InnoDB history list length \d+ > 40 "
                     r"\(throttle\.historyListLength\)")
        assert checkpoint(db, "0002_bump_items")["rows_processed"] == 0
        snapshot.commit()
        code, output = run.finish()
        assert code == ExitCode.DONE and counters(db) == {1: 3000}, output
        assert "no longer throttled, after" in output

        _grow_the_history_list(db, snapshot)
        run = Run(db, tmp_path, "0003", "--batch-size", "300",
                  "--halt-history-list-length", "40", "--throttle-check-interval", "100ms")
        code, output = run.finish()
    finally:
        snapshot.close()
    assert code == ExitCode.HALTED, output
    assert re.search(r"HALTED \(CriticalHistoryListLength\): critical load: InnoDB history "
                     r"list length \d+ > 40 \(--halt-history-list-length\)", output), output
    assert counters(db) == {1: 3000}


def test_a_figure_the_primary_cannot_read_is_refused_before_any_row(maria_lab_db: Any) -> None:
    """A MariaDB primary does not know its replicas' lag, and there is no autovacuum: a
    threshold on them is refused in one line, not left to read as "nothing to wait for"."""
    db = maria_lab_db
    seed_items(db, 300)
    for flag, value in (("--throttle-replication-lag", "5s"), ("--halt-replication-lag", "9s"),
                        ("--throttle-autovacuum", "true")):
        refused = db.manage("chunkwise_run", "lab", "0002", flag, value)
        assert refused.returncode == 64, refused.stderr
        assert refused.stderr.count(f"{flag}: ") == 1, refused.stderr
        assert "unset it for database 'default' (MariaDB/MySQL)" in refused.stderr
        assert "Traceback" not in refused.stderr
    assert counters(db) == {0: 300}


def _ignore_kill(connection: Any, statement: str) -> None:
    """Run ``statement``, which a KILL QUERY ends (MariaDB answers SLEEP's end with 1)."""
    import contextlib

    with contextlib.suppress(Exception):
        connection.cursor().execute(statement)


def test_replication_lag_read_from_a_real_replica_throttles_and_then_halts(
        maria_lab_db: Any, tmp_path: Path) -> None:
    """A second mariadbd replicating with GTID, named in settings.CHUNKWISE_REPLICAS: while
    its SQL thread waits for a table lock taken on the replica, its Seconds_Behind_Master
    grows, the run waits and commits nothing; when the lock goes, the run goes on. A
    critical level halts instead, each row at most once."""
    from tests.support.mariaserver import running_mariadb_replica

    db = maria_lab_db
    seed_items(db, 6000)
    with running_mariadb_replica(db.server) as replica:
        replica.catch_up(db.server, timeout=120)
        port = {"MARIADB_REPLICA_PORT": str(replica.port)}
        blocker = replica.connect(db.name)
        blocker.cursor().execute("LOCK TABLES lab_item READ")  # replay waits for it
        try:
            # Seconds_Behind_Master counts whole seconds: above 1 s takes 2 s of the run
            run = Run(db, tmp_path, "0002", "--batch-size", "200", "--max-batch-size", "200",
                      "--max-rows-per-second", "1000", "--throttle-replication-lag", "1s",
                      "--throttle-check-interval", "200ms", **port)
            found = run.wait_for(r"throttled: replication lag (\d+(\.\d+)?)s > 1s "
                                 r"\(throttle\.replicationLag\); waiting")
            assert float(found.group(1)) > 1.0
            held = checkpoint(db, "0002_bump_items")["rows_processed"]
            wait_until(lambda: int(replica.replica_status()["Seconds_Behind_Master"] or 0) >= 3,
                       "the replica lags 3 s")
            assert checkpoint(db, "0002_bump_items")["rows_processed"] == held
            assert 0 < int(str(held)) < 6000
        finally:
            blocker.cursor().execute("UNLOCK TABLES")
        code, output = run.finish()
        assert code == ExitCode.DONE, output
        assert "no longer throttled, after" in output
        assert counters(db) == {1: 6000}
        replica.catch_up(db.server, timeout=120)

        blocker.cursor().execute("LOCK TABLES lab_item READ")
        try:
            run = Run(db, tmp_path, "0003", "--batch-size", "200", "--max-batch-size", "200",
                      "--max-rows-per-second", "500", "--throttle-replication-lag", "1s",
                      "--halt-replication-lag", "2s", "--throttle-check-interval", "200ms",
                      **port)
            code, output = run.finish()
        finally:
            blocker.cursor().execute("UNLOCK TABLES")
            blocker.close()
    assert code == ExitCode.HALTED, output
    assert "HALTED (CriticalReplicationLag): critical load: replication lag" in output
    state = checkpoint(db, "0003_setbased_items")
    done = int(str(state["rows_processed"]))
    assert state["state"] == "halted" and 0 < done < 6000
    assert counters(db) == {2: done, 1: 6000 - done}  # each row at most once


def test_a_replica_whose_replication_is_stopped_halts_the_run_naming_it(
        maria_lab_db: Any, tmp_path: Path) -> None:
    from tests.support.mariaserver import running_mariadb_replica

    db = maria_lab_db
    seed_items(db, 600)
    with running_mariadb_replica(db.server) as replica:
        replica.catch_up(db.server, timeout=120)  # the lab's database is there
        replica.sql("STOP SLAVE SQL_THREAD")
        result = db.manage("chunkwise_run", "lab", "0002", "--throttle-replication-lag", "5s",
                           MARIADB_REPLICA_PORT=str(replica.port))
    assert result.returncode == 65, result.stderr
    assert "HealthCheckFailed" in result.stderr
    assert "replica 'replica' (settings.CHUNKWISE_REPLICAS) has no replication lag to tell: " \
        "Slave_IO_Running=Yes, Slave_SQL_Running=No" in result.stderr
    assert counters(db) == {0: 600}


def test_a_server_restart_and_a_crash_mid_run_lose_nothing() -> None:
    """On a server of its own: mariadbd stopped cleanly and started again mid-run, inside
    the retry budget: the run goes on. Then SIGKILLed (InnoDB's crash recovery on the next
    start) and down for longer than the budget: the run exits with the retryable status
    naming the database, and the next run resumes. Every row once."""
    from tests.conftest import MariaLabDb, migrate_lab
    from tests.support.mariaserver import running_mariadb

    with running_mariadb() as server:
        server.sql("CREATE DATABASE lab_faults")
        migrate_lab(server, "lab_faults")
        db = MariaLabDb(server, "lab_faults")
        seed_items(db, 20_000)
        runner = db.popen("chunkwise_run", "lab", "0002", "--batch-size", "200",
                          "--max-rows-per-second", "10000", "--max-attempts", "30",
                          "--backoff", "200ms", "--max-backoff", "1s")
        wait_for_batches(db, more_than=5)
        server.stop()
        server.start()
        output, _ = runner.communicate(timeout=180)
        assert runner.returncode == 0, output
        assert re.search(r"(connection|shutdown), retry \d", output), output
        assert counters(db) == {1: 20_000}

        runner = db.popen("chunkwise_run", "lab", "0003", "--batch-size", "200",
                          "--max-rows-per-second", "10000", "--max-attempts", "3",
                          "--backoff", "100ms", "--max-backoff", "100ms")
        wait_until(lambda: db.query("SELECT 1 FROM chunkwise_checkpoint "
                                    "WHERE migration = '0003_setbased_items' AND batches > 5"),
                   "the set-based run committed batches")
        server.kill()
        try:
            output, _ = runner.communicate(timeout=120)
        finally:
            server.start()
        assert runner.returncode == 1, output  # retryable: a Job would run it again
        assert "database unreachable: all 3 attempts of a batch lost or could not open " \
            "their connection" in output
        assert f"database 'default' is mysql 'lab_faults' at 127.0.0.1:{server.port}" in output
        assert "Traceback" not in output
        resumed = db.manage("chunkwise_run", "lab", "0003")
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming after key" in resumed.stderr
        assert counters(db) == {2: 20_000}
