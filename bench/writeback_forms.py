"""Two ways to write a transformed batch back, side by side: arrays bound to one UPDATE
(what chunkwise did, and still does with psycopg2, for ``batch.write`` and where a column
is not binary-safe) against a binary COPY into a temporary table and one UPDATE ... FROM
it (what a transform's batch does now with psycopg 3: chunkwise/django/backends/staging.py).

    .venv/bin/python bench/writeback_forms.py                 # 300k rows: ~1 minute
    .venv/bin/python bench/writeback_forms.py --rows 600000 --topology shared

The runner reads each 5k-row batch of the bench table (keys, the transformed column and
each row's version, ``xmin``, as the read-ahead does) and writes it back in one of the
forms, in a transaction of its own that it commits: the time of the write-back and the
commit is what is measured, per batch, on the wall clock. The forms take turns in a new
random order in each round, and the arrays form runs twice under two names (A/A), whose
ratio is the run's noise floor. Each row is written with its version checked, as a batch
read ahead is, so every write-back changes all 5k rows.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]  # the repository (tests.support) and bench/

from tests.support.pgserver import running_server  # noqa: E402

sys.path.insert(0, str(BENCH.parent / "operator"))  # chunkwise, for its xid dumper
from chunkwise.django.backends.staging import register_xid  # noqa: E402
from databases import TABLE, PostgreSQL  # noqa: E402
from run import Copies, Topology, seed  # noqa: E402

BATCH = 5000
STATUS = ("active", "inactive")

#: the arrays form (backends/postgresql.py: update_from_values with versions): one array
#: per column, binary where psycopg can, the versions as text parsed to xid
ARRAYS = (f"UPDATE {TABLE} SET status = v.status FROM (SELECT unnest(%b::bigint[]) AS id, "
          "unnest(%b::text[]) AS status, unnest(%s::xid[]) AS version) AS v "
          f"WHERE {TABLE}.id = v.id AND {TABLE}.xmin = v.version "
          f"AND {TABLE}.id > %s AND {TABLE}.id <= %s")
#: the staged form (backends/staging.py): the rows copied in binary into a temporary
#: table emptied at each commit
STAGE = ("CREATE TEMPORARY TABLE IF NOT EXISTS writeback (id bigint, status text, "
         "version xid) ON COMMIT DELETE ROWS")
COPY_IN = "COPY writeback (id, status, version) FROM STDIN (FORMAT BINARY)"
FROM_STAGE = (f"UPDATE {TABLE} SET status = w.status FROM writeback w "
              f"WHERE {TABLE}.id = w.id AND {TABLE}.xmin = w.version "
              f"AND {TABLE}.id > %s AND {TABLE}.id <= %s")

Rows = list[tuple[int, str, str]]
Form = Callable[[Any, Rows, int, int], int]


def with_arrays(conn: Any, rows: Rows, after: int, last: int) -> int:
    keys, statuses, versions = (list(column) for column in zip(*rows, strict=True))
    return int(conn.execute(ARRAYS, (keys, statuses, versions, after, last)).rowcount)


def with_copy(conn: Any, rows: Rows, after: int, last: int) -> int:
    conn.execute(STAGE)
    with conn.cursor() as cursor:
        with cursor.copy(COPY_IN) as copy:
            copy.set_types(["int8", "text", "xid"])
            for row in rows:
                copy.write_row(row)
        return int(cursor.execute(FROM_STAGE, (after, last)).rowcount)


FORMS: dict[str, Form] = {
    "arrays bound to one UPDATE": with_arrays,
    "arrays bound to one UPDATE (twin)": with_arrays,
    "binary COPY into a temp table + UPDATE ... FROM": with_copy,
}


def read_batch(conn: Any, after: int) -> Rows:
    """The batch after ``after``, transformed (the status flipped), with each row's version."""
    rows = conn.execute(f"SELECT id, status, xmin::text FROM {TABLE} WHERE id > %s "
                        f"ORDER BY id LIMIT {BATCH}", (after,)).fetchall()
    conn.commit()
    return [(key, STATUS[(status == STATUS[0])], version) for key, status, version in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000, help="table size (default 300k)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the table")
    parser.add_argument("--topology", choices=("pinned", "shared"), default="pinned")
    parser.add_argument("--seed", type=int, default=None, help="the order's seed")
    args = parser.parse_args()
    order_seed = args.seed if args.seed is not None else random.randrange(10**6)
    shuffle = random.Random(order_seed)
    times: dict[str, list[float]] = {name: [] for name in FORMS}
    with running_server() as server:
        postgresql = PostgreSQL(server)
        seed(postgresql, "seed", args.rows)
        database = Copies(postgresql, "seed").make()
        topology = Topology.of(args.topology)
        topology.apply(postgresql)
        print(f"the write-back of a transformed 5k-row batch: {args.rows:,} rows, "
              f"{args.rounds} passes, order seed {order_seed}")
        print(topology.describe(postgresql))
        with postgresql.connect(database) as conn:
            conn.execute(STAGE)  # once per session, outside the timing
            register_xid(conn)  # chunkwise's own, as it stages
            conn.commit()
            for _ in range(args.rounds):
                after, names = 0, []
                while True:
                    if not names:
                        names = list(FORMS)
                        shuffle.shuffle(names)
                    rows = read_batch(conn, after)
                    if not rows:
                        break
                    name = names.pop()
                    last = rows[-1][0]
                    started = time.perf_counter()
                    written = FORMS[name](conn, rows, after, last)
                    conn.commit()
                    times[name].append(time.perf_counter() - started)
                    assert written == len(rows), (name, written, len(rows))
                    after = last
    medians = {name: statistics.median(seconds) * 1000 for name, seconds in times.items()}
    for name, ms in medians.items():
        print(f"  {name}: median {ms:.2f} ms per batch ({len(times[name])} batches)")
    arrays, twin, copy = medians.values()
    floor = max(arrays, twin) / min(arrays, twin)
    print(f"noise floor (A/A, the arrays form twice): {floor:.3f}x")
    ratio = min(arrays, twin) / copy  # against the faster twin: the cautious figure
    verdict = ("faster, beyond the floor" if ratio > floor else
               "slower, beyond the floor" if 1 / ratio > floor else "within the floor")
    print(f"COPY form against the faster arrays twin: {ratio:.2f}x as fast: {verdict}")


if __name__ == "__main__":
    main()
