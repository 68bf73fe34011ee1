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
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # the repository (tests.support) and bench/

from tests.support.pgserver import PgServer, running_server  # noqa: E402

from run import (  # noqa: E402
    Copies,
    chunkwise,
    keyset_loop,
    project_env,
    seed,
    single_update,
)

CONTENDERS: dict[str, Callable[[PgServer, str, int], tuple[int, float, float | None]]] = {
    "single UPDATE": single_update,
    "bare keyset loop (SQL, 5k)": keyset_loop,
    "chunkwise set-based (5k fixed)": chunkwise("0002", fixed=True),
    "chunkwise transform (5k fixed)": chunkwise("0003", fixed=True),
}
#: "run_3 LOG:  duration: 0.081 ms  bind <unnamed>: SELECT ..." (log_line_prefix '%d ')
_LINE = re.compile(r"^(\S+) LOG:  duration: ([0-9.]+) ms  (?:statement|(?:parse|bind|execute) "
                   r"[^:]*): (.*)$")


def statement_times(log: Path, database: str) -> dict[str, list[float]]:
    """Milliseconds per statement (by its first 60 characters), phases summed in order."""
    times: dict[str, list[float]] = defaultdict(list)
    pending: dict[str, float] = defaultdict(float)
    for line in log.read_text(errors="replace").splitlines():
        found = _LINE.match(line)
        if not found or found[1] != database:
            continue
        text = " ".join(found[3].split())[:60]
        if " execute " in line or " statement: " in line:
            times[text].append(pending.pop(text, 0.0) + float(found[2]))
        else:  # parse and bind come before the execute they belong to
            pending[text] += float(found[2])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="table size (default 1M)")
    parser.add_argument("--top", type=int, default=6, help="statements shown per contender")
    args = parser.parse_args()
    settings = {"log_min_duration_statement": "0", "log_line_prefix": "%d "}
    with running_server(settings) as server:
        seed(server, "seed", args.rows)
        copies = Copies(server, "seed")
        log = server.datadir.parent / "postgres.log"
        print(f"where the time goes: {args.rows:,} rows, PostgreSQL's statement log\n")
        for name, run in CONTENDERS.items():
            database = copies.make()
            done, seconds, _ = run(server, database, args.rows)
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
            print()
        database = copies.make()
        per_batch = orm_update_seconds(server, database)
        copies.drop(database)
        print(f"client side: Django turns the set-based migration's batch.update(...) into SQL "
              f"in {per_batch * 1000:.3f} ms per batch (median; the migration's own function, "
              "its statement compiled but not run)")


def orm_update_seconds(server: PgServer, database: str, batches: int = 2000) -> float:
    """What Django alone costs the set-based migration per batch: its classify_batch()
    called on a batch's queryset, with the UPDATE compiled to SQL but not sent."""
    env = project_env(server, database)
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
