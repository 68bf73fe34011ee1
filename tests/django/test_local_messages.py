"""What a local user is told (issue 31): a stop names the knob the caller can turn and
what to change, in the caller's own terms, in one line, with the documented exit code."""

from __future__ import annotations

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
