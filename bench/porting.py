"""The four worked examples of docs/how-to/port-runpython.md, each against its plain
RunPython form, side by side in one run (issue 37, "For users").

    .venv/bin/python bench/porting.py                  # about 3 minutes
    .venv/bin/python bench/porting.py --scale 1 --rounds 1

The shapes are the porting test app's (tests/labproject/porting, seeded with the messy
data of tests/django/test_porting_pg.py, times --scale): a JSON text field normalised
per row, a column backfilled from the latest related row, a new table filled from an old
column (NetBox's MACAddress migration), order lines' totals from their product's price
with a UUID key. Each contender runs on a fresh copy of one seeded database, in a random
order each round. Plain RunPython is timed around its function, with the historical
models of the migration it would sit in, as migrate runs it; the ported migration with
`migrate` at chunkwise's defaults, timed by its checkpoint, start to completion. The
noise floor is the first shape's plain form run twice per round as two contenders.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO)]

from tests.conftest import LabDb  # noqa: E402
from tests.django import test_porting_pg as porting  # noqa: E402
from tests.support.pgserver import PgServer, running_server  # noqa: E402

TEMPLATE = "porting_template"
SCALED = ("PROFILES", "CUSTOMERS", "INTERFACES", "LINE_ITEMS")
A_A = "per-row JSON normalisation, plain again"


def seed(server: PgServer, scale: int) -> dict[str, int]:
    """The template at porting 0001, seeded; how many rows each shape's data step has."""
    for name in SCALED:
        setattr(porting, name, getattr(porting, name) * scale)
    server.sql(f"CREATE DATABASE {TEMPLATE}")
    db = LabDb(server, TEMPLATE)
    for target in (["chunkwise"], ["porting", "0001"]):
        done = db.manage("migrate", *target, "-v0", LAB_PORTING="1")
        assert done.returncode == 0, done.stderr
    porting.seed(db)
    db.execute("VACUUM ANALYZE")
    names = list(porting.SHAPES)
    return dict(zip(names, [porting.PROFILES, porting.CUSTOMERS, porting.INTERFACES,
                            porting.LINE_ITEMS], strict=True))


def plain_seconds(db: LabDb, shape: porting.Shape) -> float:
    code = ("import time; from django.db import connection, transaction; "
            "from django.db.migrations.loader import MigrationLoader; "
            "from porting import plain; "
            f"apps = MigrationLoader(connection).project_state(('porting', {shape.after!r}))"
            ".apps; started = time.perf_counter()\n"
            f"with transaction.atomic(): plain.{shape.plain}(apps, connection.schema_editor())"
            "\nprint(time.perf_counter() - started)")
    done = db.manage("shell", "-c", code, LAB_PORTING="1", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return float(done.stdout.split()[-1])


def ported_seconds(db: LabDb, shape: porting.Shape) -> float:
    env = {k: v for k, v in os.environ.items() if k.startswith("CHUNKWISE_")}
    assert not env, f"unset {sorted(env)}: the ported form runs at chunkwise's defaults"
    porting.migrate(db, shape.through, "-v0")
    with psycopg.connect(db.server.dsn(db.name)) as conn:
        found = conn.execute("SELECT extract(epoch FROM completed_at - started_at), state "
                             "FROM chunkwise_checkpoint WHERE migration = %s",
                             (shape.data_step,)).fetchone()
    assert found is not None and found[1] == "done", found
    return float(found[0])


def run_once(server: PgServer, name: str, copy: str) -> float:
    shape_name, _, side = name.rpartition(", ")
    shape = porting.SHAPES[shape_name.removesuffix(", plain")]
    server.sql(f"CREATE DATABASE {copy} TEMPLATE {TEMPLATE}")
    db = LabDb(server, copy)
    try:
        porting.up_to_the_data_step(db, shape)
        return ported_seconds(db, shape) if side == "ported" else plain_seconds(db, shape)
    finally:
        server.sql(f"DROP DATABASE {copy} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=2, help="times the tests' row counts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    contenders = [f"{shape}, {side}" for shape in porting.SHAPES for side in ("plain",
                                                                            "ported")]
    first_plain = contenders[0]
    contenders.append(A_A)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    load_before = os.getloadavg()
    with running_server() as server:
        rows = seed(server, args.scale)
        for round_number in range(args.rounds):
            order = list(contenders)
            random.shuffle(order)  # drift on a shared machine hits every contender alike
            for index, name in enumerate(order):
                times[name].append(run_once(server, first_plain if name == A_A else name,
                                            f"run_{round_number}_{index}"))
    load_after = os.getloadavg()
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(f"scale {args.scale}; {args.rounds} rounds, random order each; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (2 cores)")
    print("| shape | rows | plain RunPython | ported | speed-up |\n|---|---:|---:|---:|---:|")
    for shape, count in rows.items():
        plain, ported = median[f"{shape}, plain"], median[f"{shape}, ported"]
        print(f"| {shape} | {count:,} | {plain:.2f} s | {ported:.2f} s | {plain / ported:.1f}x |")
    for name, seconds in times.items():
        print(f"  {name:<62} {', '.join(f'{s:.2f}' for s in seconds)}")
    print(f"noise floor: the first plain form against itself "
          f"{median[A_A] / median[first_plain]:.2f}x")


if __name__ == "__main__":
    main()
