"""A todo across a relation against the same migration with a todo on the table alone,
on tables changed since their last ANALYZE (issue 37, item 6).

    .venv/bin/python bench/joined_todo.py                 # 200k items, 600k related rows
    .venv/bin/python bench/joined_todo.py --items 50000 --rounds 1

lab 0010 bumps the items that have a flagged Stamped row (``todo=Q(stamped__flag=True,
counter=0)``, a join); lab 0011 bumps the same items, marked on the table
(``todo=Q(payload="flagged", counter=0)``). Both run with chunkwise_run at 5k rows a
batch on a fresh copy of one database whose statistics were taken when its tables were
empty, as a table loaded or changed since its last ANALYZE has: the planner's estimates
are wrong by orders of magnitude. Target: the joined todo within 1.5x the plain one.
Each round runs both, in a random order; the median of the rounds is reported, and the
run's noise floor is the spread between rounds of the plain contender.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO)]

from tests.support.pgserver import PgServer, running_server  # noqa: E402

LAB = REPO / "tests" / "labproject"
#: 5k rows a batch indeed: batch.maxLockedFraction (0.5% of the rows to do, a cap for
#: tables that writers share) would make them 500 rows here
BATCHES = ("--batch-size", "5000", "--min-batch-size", "5000", "--max-batch-size", "5000",
           "--max-locked-fraction", "1")
CONTENDERS = {"todo across a relation (lab 0010)": "0010",
              "todo on the table (lab 0011)": "0011"}


def lab_env(server: PgServer, database: str) -> dict[str, str]:
    return {**os.environ, **server.env(database), "DJANGO_SETTINGS_MODULE": "labsite.settings",
            "PYTHONPATH": os.pathsep.join([str(LAB), str(REPO / "operator")])}


def manage(server: PgServer, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LAB / "manage.py"), *args],
                          env=lab_env(server, database), capture_output=True, text=True,
                          check=False)


def seed(server: PgServer, items: int) -> None:
    """The template: lab's tables, ANALYZEd empty, then filled; half the items flagged
    (one flagged and two unflagged Stamped rows each), the others with three unflagged."""
    server.sql("CREATE DATABASE joined_template")
    for target in (["lab", "0001"], ["chunkwise"]):
        done = manage(server, "joined_template", "migrate", *target, "-v0")
        assert done.returncode == 0, done.stderr
    server.sql("ANALYZE", "joined_template")  # statistics of empty tables
    server.sql(f"INSERT INTO lab_item (id, counter, payload, score) SELECT g, 0, "
               f"CASE WHEN g % 2 = 0 THEN 'flagged' ELSE '' END, 0 "
               f"FROM generate_series(1, {items}) g", "joined_template")
    server.sql(f"INSERT INTO lab_stamped (at, day, amount, ref, ratio, flag, note, item_id) "
               f"SELECT now(), now()::date, 1, gen_random_uuid(), 1, "
               f"(i % 2 = 0 AND k = 1), '', i FROM generate_series(1, {items}) i, "
               f"generate_series(1, 3) k", "joined_template")


def run_once(server: PgServer, migration: str, copy: str) -> float:
    server.sql(f"CREATE DATABASE {copy} TEMPLATE joined_template")
    started = time.perf_counter()
    done = manage(server, copy, "chunkwise_run", "lab", migration, *BATCHES)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    server.sql(f"DROP DATABASE {copy}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    with running_server() as server:
        seed(server, args.items)
        for round_number in range(args.rounds):
            order = list(CONTENDERS.items())
            random.shuffle(order)
            for name, migration in order:
                times[name].append(run_once(server, migration, f"run_{round_number}_"
                                                                f"{migration}"))
    plain, joined = (statistics.median(times[name]) for name in
                     ("todo on the table (lab 0011)", "todo across a relation (lab 0010)"))
    spread = max(times["todo on the table (lab 0011)"]) / min(
        times["todo on the table (lab 0011)"])
    print(f"{args.items:,} items, {3 * args.items:,} related rows, statistics of empty "
          f"tables; {args.rounds} rounds, random order each")
    for name, seconds in times.items():
        print(f"  {name:<36} median {statistics.median(seconds):6.2f} s   "
              f"({', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"joined / plain: {joined / plain:.2f}x (target <= 1.5x: "
          f"{'met' if joined / plain <= 1.5 else 'missed'}); noise floor (plain's "
          f"slowest / fastest round): {spread:.2f}x")


if __name__ == "__main__":
    main()
