"""What a local user is told (issue 31): a stop names the knob the caller can turn and
what to change, in the caller's own terms, in one line, with the documented exit code."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import LAB, REPO
from tests.django.test_commands_bad_input import lab_on_sqlite
from tests.django.test_sqlite import shop

Lab = Callable[..., subprocess.CompletedProcess[str]]


def lab_items(db: Path, count: int, failing_every: int = 0, **env: str) -> Lab:
    """The lab project on SQLite at ``db``, chunkwise's and lab 0001's tables migrated and
    ``count`` items in them; with ``failing_every`` N, every Nth item makes lab 0002's
    transform raise (a row that fails)."""
    lab = lab_on_sqlite(db, **env)
    for target in (["chunkwise"], ["lab", "0001"]):
        assert lab("migrate", "--database", "lite", *target, "-v0").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_item (counter, payload, score) VALUES (0, ?, 0)",
                         [("raise" if failing_every and key % failing_every == 0 else "",)
                          for key in range(1, count + 1)])
    return lab


def test_a_halt_names_the_threshold_as_the_caller_sets_it_and_what_to_change(
        tmp_path: Path) -> None:
    """Running again as it is halts again at once: the message says which knob to turn,
    under migrate its environment variable, under chunkwise_run its flag."""
    lab = lab_items(tmp_path / "lab.sqlite3", 1000, failing_every=20)  # 5% fail
    migrate = lab("migrate", "--database", "lite", "lab", "0002")
    assert migrate.returncode == 65, migrate.stderr
    last = migrate.stderr.strip().splitlines()[-1]
    assert last.startswith("BatchedMigrationStopped: lab.0002_bump_items[0] forward: "
                           "FailureRateExceeded: failure rate 0.0500"), migrate.stderr
    assert ("is above CHUNKWISE_HALT_FAILURE_RATE=0.01; fix the code or the data that make "
            "rows fail, or raise CHUNKWISE_HALT_FAILURE_RATE; then run migrate again: it "
            "resumes from the checkpoint.") in last, last
    assert "haltOn" not in migrate.stderr and "continue" not in last
    run = lab("chunkwise_run", "lab", "0002", "--database", "lite")
    assert run.returncode == 65, run.stderr
    assert ("HALTED (FailureRateExceeded): failure rate 0.0500 (50/1000 rows) is above "
            "--halt-failure-rate=0.01; fix the code or the data that make rows fail, or "
            "raise --halt-failure-rate; then run chunkwise_run again") in run.stderr, run.stderr
    # the advice works: the threshold raised, the run goes on to the end
    raised = lab("chunkwise_run", "lab", "0002", "--database", "lite",
                 "--halt-failure-rate", "0.1")
    assert raised.returncode == 0, raised.stderr


def status_rows(lab: Lab) -> dict[str, dict[str, str]]:
    """chunkwise_status's table: each checkpoint's cells by column, by migration."""
    result = lab("chunkwise_status", "--database", "lite")
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.split("\n\n")[0].splitlines()
    starts = [found.start() for found in re.finditer(r"\S+( \S+)*", header)]
    cells = [[line[start:end].strip() for start, end in
              zip(starts, [*starts[1:], None], strict=True)] for line in [header, *lines]]
    return {row[0]: dict(zip(cells[0], row, strict=True)) for row in cells[1:]}


def test_a_run_that_recorded_failed_rows_says_how_many_how_to_list_and_retry_them(
        tmp_path: Path) -> None:
    """`done (Completed): all rows processed` read as if nothing had failed; chunkwise_status
    showed neither the verification a run kept nor a last key other than `None`."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_items(db, 1000)
    with sqlite3.connect(db) as conn:  # lab 0007 records these as failed (CHECK score >= 0)
        conn.execute("UPDATE lab_item SET payload = 'negative' WHERE id % 100 = 7")
    assert lab("migrate", "--database", "lite", "--fake", "lab", "0006", "-v0").returncode == 0
    deferred = lab_on_sqlite(db, CHUNKWISE_DEFER="1")("migrate", "--database", "lite", "lab",
                                                     "0007")
    assert deferred.returncode == 0, deferred.stderr
    planned = status_rows(lab)["lab.0007_mark_items_done"]
    assert (planned["STATE"], planned["LAST KEY"], planned["REMAINING"], planned["MISSED"],
            planned["VERIFIED"]) == ("deferred", "-", "-", "-", "-"), planned

    run = lab("chunkwise_run", "lab", "0007", "--database", "lite",
              "--halt-consecutive-failed-batches", "100")
    assert run.returncode == 0, run.stderr
    assert ("done (Completed): all rows processed, but 10 of them failed: recorded with their "
            "error, not changed") in run.stderr, run.stderr
    assert ("lab.0007_mark_items_done[0] forward: 10 failed rows are recorded: manage.py "
            "chunkwise_status lab --failed lists them; once the code or the data is fixed, "
            "manage.py chunkwise_run lab 0007_mark_items_done --retry-failed runs them again "
            "(https://chunkwise.github.io/chunkwise/how-to/operate/)") in run.stderr
    done = status_rows(lab)["lab.0007_mark_items_done"]
    assert (done["STATE"], done["FAILED"], done["REMAINING"], done["MISSED"], done["LAST KEY"]
            ) == ("done", "10", "10", "0", "1000"), done
    assert re.fullmatch(r"\d+s ago", done["VERIFIED"]), done
    [record] = json.loads(lab("chunkwise_status", "lab", "--database", "lite",
                              "--json").stdout)
    assert (record["rows_remaining"], record["rows_missed"]) == (10, 0)
    assert record["verified_at"] is not None


def lab_popen(db: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """manage.py of the lab project on SQLite at ``db``, started, its stderr piped."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "labsite.settings",
                   "LAB_SQLITE_PATH": str(db),
                   "PYTHONPATH": f"{LAB}{os.pathsep}{REPO / 'operator'}", **env}
    return subprocess.Popen([sys.executable, str(LAB / "manage.py"), *args], env=environment,
                            cwd=LAB, stderr=subprocess.PIPE, text=True)


def checkpoint_of(db: Path, migration: str) -> dict[str, Any]:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM chunkwise_checkpoint WHERE migration = ?",
                               [migration]).fetchone()
    except sqlite3.OperationalError:  # being written: ask again
        return {}
    return dict(row) if row else {}


def wait_for(condition: Callable[[], bool], what: str, runner: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert runner.poll() is None, f"the runner ended before {what}: {runner.stderr}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def counters(db: Path) -> dict[int, int]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT counter, count(*) FROM lab_item GROUP BY counter"))


def test_a_second_runner_on_sqlite_is_refused_in_one_line_exit_69(tmp_path: Path) -> None:
    """SQLite has no advisory lock: a second runner met `database is locked` in a long
    traceback (exit 1). A checkpoint a live process holds keeps it off, as PostgreSQL's
    lock does; once that process is killed, the next runner goes on at once."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_items(db, 2000)
    first = lab_popen(db, "chunkwise_run", "lab", "0002", "--database", "lite",
                      LAB_ROW_SLEEP="0.005")  # 2.5 s a batch of 500
    try:
        wait_for(lambda: checkpoint_of(db, "0002_bump_items").get("batches", 0) >= 1,
                 "a batch committed", first)
        second = lab("chunkwise_run", "lab", "0002", "--database", "lite")
        assert second.returncode == 69, second.stderr
        assert "Traceback" not in second.stderr and "database is locked" not in second.stderr
        last = second.stderr.strip().splitlines()[-1]
        held = rf"already being run by \S+ pid {first.pid}, last checkpoint \d+s ago; not " \
            r"starting a second runner \(it would wait for the same rows\)"
        assert re.fullmatch(rf"lab\.0002_bump_items\[0\] forward: {held}; wait for it to "
                            r"finish, or stop it", last), last
        # migrate's own words, said once (it said `...or stop it.. wait for it to finish`)
        migrate = lab("migrate", "--database", "lite", "lab", "0002")
        assert migrate.returncode == 69, migrate.stderr
        last = migrate.stderr.strip().splitlines()[-1]
        assert re.fullmatch(rf"BatchedMigrationStopped: lab\.0002_bump_items\[0\] forward: "
                            rf"AnotherRunnerActive: {held}; wait for it to finish and migrate "
                            r"again\.", last), last
    finally:
        first.kill()  # no chance to say so: the checkpoint still says running
        first.communicate(timeout=60)
    assert checkpoint_of(db, "0002_bump_items")["state"] == "running"
    assert "stale" in lab("chunkwise_status", "--database", "lite").stdout
    after = lab("chunkwise_run", "lab", "0002", "--database", "lite")
    assert after.returncode == 0, after.stderr
    assert counters(db) == {1: 2000}  # every row once, across the killed run and this one


def test_a_second_ctrl_c_aborts_in_one_line_exit_75_and_the_checkpoint_says_so(
        tmp_path: Path) -> None:
    """The second Ctrl-C was a KeyboardInterrupt traceback (exit 130), and status then
    showed the run as stale: its open batch rolls back, and the run says so and stops."""
    db = tmp_path / "lab.sqlite3"
    lab_items(db, 2000)
    runner = lab_popen(db, "migrate", "--database", "lite", "lab", "0002",
                       LAB_ROW_SLEEP="0.01")  # 5 s a batch of 500
    try:
        wait_for(lambda: checkpoint_of(db, "0002_bump_items").get("batches", 0) >= 1,
                 "a batch committed", runner)
        runner.send_signal(signal.SIGINT)
        assert runner.stderr is not None
        said = ""
        while "SIGINT: finishing the current batch" not in said:  # the first one was taken
            line = runner.stderr.readline()
            assert line, said
            said += line
        runner.send_signal(signal.SIGINT)
        _, rest = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode == 75, said + rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    assert rest.strip().splitlines()[-1] == (
        "BatchedMigrationStopped: lab.0002_bump_items[0] forward: Interrupted: aborted by a "
        "second Ctrl-C: the open batch was rolled back, the checkpoint is intact; run migrate "
        "again to continue."), rest
    state = checkpoint_of(db, "0002_bump_items")
    assert state["state"] == "interrupted", state
    done = state["rows_processed"]
    assert counters(db) == {1: done, 0: 2000 - done}  # the aborted batch changed no row


def test_a_run_before_its_schema_migrations_is_refused_naming_them(tmp_path: Path) -> None:
    """Every row failed alike (`no such table`), as a traceback or a retryable exit 1, and
    the plan called them rows to isolate: the schema is missing, which no retry fixes."""
    db = tmp_path / "shop.sqlite3"
    assert shop(db, "migrate", "chunkwise").returncode == 0
    expected = ("CommandError: migration_name: shop.0002_customer_status runs on the schema "
                "that earlier migrations make, and these are not applied to database "
                "'default': shop.0001_initial; apply them first (manage.py migrate shop "
                "0001_initial)")
    for command in ("chunkwise_run", "chunkwise_plan"):
        result = shop(db, command, "shop", "0002")
        assert result.returncode == 64, result.stderr
        assert result.stderr.strip().splitlines() == [expected], result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM chunkwise_checkpoint").fetchone() == (0,)
    # an earlier data migration not run yet is no schema: 0003 runs without 0002
    assert shop(db, "migrate", "shop", "0001").returncode == 0
    assert shop(db, "seed_customers", "10").returncode == 0
    result = shop(db, "chunkwise_run", "shop", "0003")
    assert result.returncode == 0, result.stderr


def test_status_of_an_app_that_is_not_installed_names_the_closest(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    assert shop(db, "migrate", "chunkwise").returncode == 0
    typo = shop(db, "chunkwise_status", "shpo")
    assert typo.returncode == 64, typo.stderr
    assert typo.stderr.strip().splitlines() == [
        "CommandError: app_label: no installed app is called 'shpo'; did you mean 'shop'?"]
    nothing_yet = shop(db, "chunkwise_status", "shop")
    assert (nothing_yet.returncode, nothing_yet.stdout.strip()) == (0, "no checkpoints yet")


def test_migrate_says_a_bad_tunable_by_its_environment_variable(tmp_path: Path) -> None:
    lab = lab_items(tmp_path / "lab.sqlite3", 10, CHUNKWISE_BATCH_SIZE="0")
    result = lab("migrate", "--database", "lite", "lab", "0002")
    assert result.returncode == 64, result.stderr
    assert result.stderr.strip().splitlines() == [
        "BatchedMigrationMisconfigured: batch.size (CHUNKWISE_BATCH_SIZE): expected an integer "
        ">= 1, got 0"], result.stderr


def test_a_deferred_misconfiguration_starts_its_own_line_as_every_misconfiguration(
        tmp_path: Path) -> None:
    """Deferred, a mistake was printed on migrate's `Applying ...` line, and a bad
    CHUNKWISE_DEFER as `CommandError:`, not as the `BatchedMigrationMisconfigured:` every
    other mistake in a batched operation is."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    for target in (["chunkwise"], ["mistakes", "0001"]):
        assert lab("migrate", "--database", "lite", "--skip-checks", *target, "-v0"
                   ).returncode == 0
    for defer, said in (("1", "BatchedMigrationMisconfigured: BatchedRunPython key: "
                              "mistakes.Visit.email must be the primary key or a unique field"),
                        ("maybe", "BatchedMigrationMisconfigured: CHUNKWISE_DEFER: expected "
                                  "true or false (1/0, yes/no, on/off), got 'maybe'")):
        result = subprocess.run(
            [sys.executable, str(LAB / "manage.py"), "migrate", "--database", "lite",
             "--skip-checks", "mistakes", "0002"], cwd=LAB, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=300,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "labsite.settings", "LAB_MISTAKES": "1",
                 "LAB_SQLITE_PATH": str(db), "CHUNKWISE_DEFER": defer,
                 "PYTHONPATH": f"{LAB}{os.pathsep}{REPO / 'operator'}"})
        assert result.returncode == 64, result.stdout
        lines = result.stdout.splitlines()
        assert lines[-2:] == ["  Applying mistakes.0002_key_not_unique...", lines[-1]], lines
        assert lines[-1].startswith(said), lines


def test_the_manifest_says_its_image_is_required_and_refuses_none_in_one_line(
        tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    assert shop(db, "migrate", "chunkwise").returncode == 0
    assert "(spec.image); required" in " ".join(shop(db, "chunkwise_manifest", "--help"
                                                     ).stdout.split())
    missing = shop(db, "chunkwise_manifest")
    assert missing.returncode == 64, missing.stderr
    assert missing.stderr.strip().splitlines() == [
        "manage.py chunkwise_manifest: the following arguments are required: --image (see "
        "--help)"], missing.stderr


def test_the_plan_offers_no_flag_that_asks_for_something_else(tmp_path: Path) -> None:
    """chunkwise_plan listed `--dry-run` (default True), which it always is, and
    `--retry-failed`, which a plan refuses."""
    db = tmp_path / "shop.sqlite3"
    plan = shop(db, "chunkwise_plan", "--help").stdout
    run = shop(db, "chunkwise_run", "--help").stdout
    assert "--dry-run" not in plan and "--retry-failed" not in plan, plan
    assert "--dry-run" in run and "--retry-failed" in run and "--samples" in plan


def test_a_plan_with_shards_plans_each_shard_over_its_own_rows(tmp_path: Path) -> None:
    """`chunkwise_plan --shards 2` planned the whole table under the name of shard 0."""
    db = tmp_path / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "1000"]):
        assert shop(db, *args).returncode == 0
    every = shop(db, "chunkwise_plan", "shop", "0002", "--shards", "2")
    assert every.returncode == 0, every.stderr
    lines = every.stdout.strip().splitlines()
    titles = [line for line in lines if line.endswith("plan (nothing was written)")]
    assert titles == [f"shop.0002_customer_status[0] forward shard {shard}/2: plan (nothing "
                      "was written)" for shard in (0, 1)], every.stdout
    assert [" ".join(line.split()) for line in lines if "rows to do " in line] == \
        ["rows to do 500 (counted)"] * 2, every.stdout
    assert re.fullmatch(r"shop\.0002_customer_status\[0\] forward \(2 shards\): 1,000 rows to "
                        r"do, ETA \S+ \(they run one after another\)", lines[-1]), lines[-1]
    one = shop(db, "chunkwise_plan", "shop", "0002", "--shards", "2", "--shard", "1")
    assert one.returncode == 0, one.stderr
    assert [line for line in one.stdout.splitlines() if "plan (nothing" in line] == [
        "shop.0002_customer_status[0] forward shard 1/2: plan (nothing was written)"]
    with sqlite3.connect(db) as conn:  # a plan writes nothing
        assert conn.execute("SELECT count(*) FROM chunkwise_checkpoint").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM shop_customer WHERE status IS NOT NULL"
                            ).fetchone() == (0,)
