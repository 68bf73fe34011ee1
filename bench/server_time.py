"""Where a batch's time goes: PostgreSQL's own statement log against the wall clock.

    .venv/bin/python bench/server_time.py                # 1M rows: ~1 minute
    .venv/bin/python bench/server_time.py --rows 200000

The contenders of bench/run.py that decide the speed targets (one UPDATE, the bare keyset
loop, chunkwise set-based and per-row transform at 5k rows a batch) each run once on a
fresh copy of one seeded database, on a server that logs every statement's duration
(``log_min_duration_statement = 0``; parse, bind and execute are summed per statement).
For each: the wall time, the time PostgreSQL spent in statements, and the statements
that cost most, with their count and median. What the server did not spend is the
client's: round trips, Python, the driver. Ratios and medians; one run each, so quote
them as an explanation of bench/run.py's figures, not instead of them.

For the batched contenders also the statements one batch sends (its transaction, BEGIN
to COMMIT, as the server logged it), each a round trip: what chunkwise's bookkeeping
costs over the hand-written loops, with and without a checkpoint row.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # the repository (tests.support) and bench/

from tests.support.pgserver import running_server  # noqa: E402
from tests.support.statement_log import SETTINGS, statement_times, transactions  # noqa: E402

from databases import TABLE, PostgreSQL  # noqa: E402
from run import (  # noqa: E402
    Copies,
    Run,
    Topology,
    chunkwise,
    keyset_loop,
    project_env,
    resumable_keyset_loop,
    seed,
    single_update,
)

CONTENDERS: dict[str, Run] = {
    "single UPDATE": single_update,
    "bare keyset loop (SQL, 5k)": keyset_loop,
    "keyset loop + checkpoint row (SQL, 5k)": resumable_keyset_loop,
    "chunkwise set-based (5k fixed)": chunkwise("0002", fixed=True),
    "chunkwise transform (5k fixed)": chunkwise("0003", fixed=True),
}
def per_batch(batches: list[list[str]]) -> tuple[int, list[str]]:
    """The statement count most batches send, and one such batch's statements, shortened."""
    counts = [len(b) for b in batches]
    usual = statistics.mode(counts)
    sample = next(b for b in batches if len(b) == usual)
    return usual, [s if len(s) <= 90 else s[:87] + "..." for s in sample]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="table size (default 1M)")
    parser.add_argument("--top", type=int, default=6, help="statements shown per contender")
    parser.add_argument("--topology", choices=("pinned", "shared"), default="pinned",
                        help="as bench/run.py: the runner on a CPU of its own, PostgreSQL on "
                             "the others (pinned, the default), or unpinned (shared)")
    args = parser.parse_args()
    sent: dict[str, int] = {}
    with running_server(SETTINGS) as server:
        postgresql = PostgreSQL(server)
        seed(postgresql, "seed", args.rows)
        copies = Copies(postgresql, "seed")
        log = server.datadir.parent / "postgres.log"
        topology = Topology.of(args.topology)
        topology.apply(postgresql)
        print(f"where the time goes: {args.rows:,} rows, PostgreSQL's statement log")
        print(topology.describe(postgresql) + "\n")
        for name, run in CONTENDERS.items():
            database = copies.make()
            done, seconds, _ = run(postgresql, database, args.rows)
            copies.drop(database)
            times = statement_times(log, database)
            server_ms = sum(sum(ms) for ms in times.values())
            line = (f"{name}: {done:,} rows in {seconds:.2f}s wall, "
                    f"{server_ms / 1000:.2f}s in statements "
                    f"({100 * server_ms / 1000 / seconds:.0f}%)")
            if "5k" in name:  # the batched contenders: what one batch costs
                batches = max(1, round(done / 5000))
                line += (f"; per 5k-row batch {1000 * seconds / batches:.2f} ms wall, "
                         f"{server_ms / batches:.2f} ms in statements")
            print(line)
            ranked = sorted(times.items(), key=lambda item: -sum(item[1]))[:args.top]
            for text, ms in ranked:
                print(f"  {len(ms):6,} x {statistics.median(ms):8.3f} ms median  {text}")
            if "5k" in name:
                sent[name], sample = per_batch(transactions(log, database, TABLE))
                print(f"  a batch sends {sent[name]} statements, one round trip each:")
                for text in sample:
                    print(f"    {text}")
            print()
        database = copies.make()
        per_batch_seconds = orm_update_seconds(postgresql, database)
        copies.drop(database)
        print(f"client side: Django turns the set-based migration's batch.update(...) into SQL "
              f"in {per_batch_seconds * 1000:.3f} ms per batch (median; the migration's own "
              "function, its statement compiled but not run)")
    bare = sent["bare keyset loop (SQL, 5k)"]
    by_hand = sent["keyset loop + checkpoint row (SQL, 5k)"]
    chunk = sent["chunkwise set-based (5k fixed)"]
    # a loop with a checkpoint row needs at least one statement more than the bare loop: the
    # row's UPDATE (bench/run.py's re-reads the row, as chunkwise does, for resuming safely)
    least = bare + 1
    print(f"\nstatements per 5k-row batch: chunkwise set-based {chunk}, the bare keyset loop "
          f"{bare}, the loop + checkpoint row {by_hand} (at least {least} by hand: the bare loop "
          f"and the row's UPDATE); target: at most one more than that, "
          f"{'met' if chunk <= least + 1 else 'MISSED'} ({chunk} <= {least + 1})")


def orm_update_seconds(postgresql: PostgreSQL, database: str, batches: int = 2000) -> float:
    """What Django alone costs the set-based migration per batch: its classify_batch()
    called on a batch's queryset, with the UPDATE compiled to SQL but not sent."""
    env = project_env(postgresql, database)
    os.environ.update(env)
    sys.path[:0] = env["PYTHONPATH"].split(os.pathsep)  # the project and chunkwise, as manage.py
    import django

    django.setup()
    from benchapp.models import Customer  # type: ignore[import-not-found]
    from django.db import connection
    from django.db.models.sql.compiler import SQLUpdateCompiler

    setbased = importlib.import_module("benchapp.migrations.0002_setbased")
    compiled: list[str] = []

    def compile_only(compiler: SQLUpdateCompiler, result_type: object) -> int:
        compiled.append(compiler.as_sql()[0])
        return 0

    connection.ensure_connection()  # its first use reads the server's version
    SQLUpdateCompiler.execute_sql = compile_only  # type: ignore[method-assign,assignment]
    times = []
    for start in range(0, batches * 5000, 5000):
        batch = Customer.objects.filter(id__gt=start, id__lte=start + 5000)
        started = time.perf_counter()
        setbased.classify_batch(None, None, batch)
        times.append(time.perf_counter() - started)
    assert len(compiled) == batches and compiled[0].startswith("UPDATE"), compiled[:1]
    return statistics.median(times)


if __name__ == "__main__":
    main()
