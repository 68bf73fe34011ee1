"""What watching the database's health costs a run, side by side in one run.

    .venv/bin/python bench/throttle_cost.py              # 1M rows, 5 runs each: ~2 minutes

The set-based migration of bench/run.py (5k-row batches) on fresh copies of one seeded
database, with no throttle (the baseline), with one figure watched (replication lag), and
with every figure watched (replication lag, oldest transaction, active backends,
autovacuum): each read at the default ``throttle.checkInterval`` (1 s), and before every
batch (1 ms) to show what one reading costs. Nothing is throttled: the thresholds are far
above this idle server's readings, so the difference is the reading alone. Medians and
ratios to the baseline; this machine's noise shows in the spread of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # the repository (tests.support) and bench/

from tests.support.pgserver import running_server  # noqa: E402

from databases import BATCH, PostgreSQL  # noqa: E402
from run import Copies, manage, seed  # noqa: E402

LAG = ["--throttle-replication-lag", "10s"]
EVERY = [*LAG, "--throttle-transaction-age", "1h", "--throttle-active-backends", "1000",
         "--throttle-autovacuum", "true"]
BEFORE_EACH_BATCH = ["--throttle-check-interval", "1ms"]
VARIANTS = {
    "no throttle": [],
    "replication lag, every 1s": LAG,
    "replication lag, every batch": LAG + BEFORE_EACH_BATCH,
    "all four, every 1s": EVERY,
    "all four, every batch": EVERY + BEFORE_EACH_BATCH,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="table size (default 1M)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per variant (default 5)")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    batches = 0
    with running_server() as server:
        postgresql = PostgreSQL(server)
        seed(postgresql, "seed", args.rows)
        copies = Copies(postgresql, "seed")
        for _ in range(args.repeat):
            for name, flags in VARIANTS.items():  # interleaved: drift hits every variant
                db = copies.make()
                manage(postgresql, db, "chunkwise_run", "benchapp", "0002", "--batch-size",
                       str(BATCH), "--min-batch-size", str(BATCH), "--max-batch-size",
                       str(BATCH), *flags)
                with psycopg.connect(server.dsn(db)) as conn:
                    row = conn.execute(
                        "SELECT extract(epoch FROM completed_at - started_at), batches "
                        "FROM chunkwise_checkpoint").fetchone()
                assert row is not None
                copies.drop(db)
                seconds[name].append(float(row[0]))
                batches = int(row[1])
    base = statistics.median(seconds["no throttle"])
    print(f"{args.rows:,} rows in {batches} batches of {BATCH:,}; median of {args.repeat} "
          "runs each")
    print(f"{'variant':32} {'median s':>9} {'rows/s':>10} {'vs none':>8} {'per batch':>10}"
          f" {'spread':>14}")
    for name, runs in seconds.items():
        median = statistics.median(runs)
        extra_ms = (median - base) / batches * 1000
        print(f"{name:32} {median:9.3f} {args.rows / median:10,.0f} {base / median:7.3f}x "
              f"{extra_ms:+8.2f}ms {min(runs):6.2f}-{max(runs):.2f}s")


if __name__ == "__main__":
    main()
