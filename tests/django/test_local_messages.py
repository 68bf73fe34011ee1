"""What a local user is told (issue 31): a stop names the knob the caller can turn and
what to change, in the caller's own terms, in one line, with the documented exit code."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.django.test_commands_bad_input import lab_on_sqlite

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
