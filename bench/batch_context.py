"""Per-row code with its batch's context (issue 37, item 7), side by side in one run.

    .venv/bin/python bench/batch_context.py                       # about 3 minutes
    .venv/bin/python bench/batch_context.py --ports 5000 --orders 10000 --rounds 1

Two shapes, each contender on a fresh copy of one seeded database (the lab project's
models), in a random order each round; medians of the rounds:

- **A new table filled from a column** (``Port.mac_address`` -> ``PortMac``): lab 0013
  inserts a PortMac per port with ``batch.insert`` (one INSERT per batch, the new ids
  returned) and points each port at its new row with ``batch.write`` (one UPDATE), as
  NetBox's MACAddress migration does; its baseline is the same work as plain
  ``RunPython`` writes it, ``bulk_create`` then ``bulk_update`` per 1,000 ports in one
  transaction, and as NetBox ships it (an UPDATE per port). lab 0012 copies without the
  back-reference with ``batch.insert_select`` (an ``INSERT ... SELECT`` per batch, no row
  through Python; ``todo`` an anti-join on the new table), against ``bulk_create`` alone
  and against one ``INSERT ... SELECT`` of the whole table (no batches, no Python: the
  server's own work). Target: >= 5x.
- **Per-batch lookups** (an order's total from its product's price, UUID keys): lab 0014
  loads the batch's prices once with ``prepare=`` and the transform reads them from its
  context; lab 0015 reads the price through ``annotate={"price": F("product__price")}``;
  lab 0016, the plain transform, reads a copy of the price on the order itself. Target:
  lookups within 1.3x the plain transform.

chunkwise runs with ``chunkwise_run`` at 5k rows a batch, timed from its checkpoint
(start to completion: the run, not Python's start-up); plain RunPython is timed around
the function inside its transaction, as ``migrate`` runs it. The noise floor is the
plain transform run twice per round as two contenders: the ratio of their medians, and
the slowest over the fastest round of either.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO)]

from tests.support.pgserver import PgServer, running_server  # noqa: E402

LAB = REPO / "tests" / "labproject"
TEMPLATE = "context_template"
BATCH = "5000"
#: batches of BATCH rows indeed: batch.maxLockedFraction (0.5% of the rows to do, a cap
#: for tables that writers share) would make them 225 to 950 rows here
UNCAPPED = ("--max-locked-fraction", "1")

#: name -> (shape, how it runs: a lab migration for chunkwise_run, or plain RunPython code)
CONTENDERS: dict[str, tuple[str, str]] = {
    "plain RunPython as NetBox: bulk_create + UPDATE per row": ("new table, back-referenced",
                                                                "link_netbox"),
    "plain RunPython: bulk_create + bulk_update": ("new table, back-referenced", "link_plain"),
    "chunkwise: batch.insert + batch.write (lab 0013)": ("new table, back-referenced", "0013"),
    "plain RunPython: bulk_create": ("new table", "copy_plain"),
    "one INSERT ... SELECT, no Python (the server's floor)": ("new table", "copy_sql"),
    "chunkwise: batch.insert_select (lab 0012)": ("new table", "0012"),
    "plain transform (lab 0016)": ("lookups", "0016"),
    "plain transform again (lab 0016)": ("lookups", "0016"),
    "transform + prepare= lookups (lab 0014)": ("lookups", "0014"),
    "transform + annotate= join (lab 0015)": ("lookups", "0015"),
}
PLAIN = {"link_plain": "link_macs_plain", "copy_plain": "copy_macs_plain",
         "link_netbox": "link_macs_as_netbox_does"}
#: (contender, baseline, target: the contender's speed-up at least, or its slowdown at most)
TARGETS = [
    ("chunkwise: batch.insert + batch.write (lab 0013)",
     "plain RunPython: bulk_create + bulk_update", ">= 5x"),
    ("chunkwise: batch.insert + batch.write (lab 0013)",
     "plain RunPython as NetBox: bulk_create + UPDATE per row", ">= 5x"),
    ("chunkwise: batch.insert_select (lab 0012)", "plain RunPython: bulk_create", ">= 5x"),
    ("transform + prepare= lookups (lab 0014)", "plain transform (lab 0016)", "<= 1.3x"),
    ("transform + annotate= join (lab 0015)", "plain transform (lab 0016)", "<= 1.3x"),
]


def lab_env(server: PgServer, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKWISE_")}
    return {**env, **server.env(database), "DJANGO_SETTINGS_MODULE": "labsite.settings",
            "PYTHONPATH": os.pathsep.join([str(LAB), str(REPO / "operator")])}


def run(server: PgServer, database: str, *args: str) -> str:
    done = subprocess.run([sys.executable, *args], env=lab_env(server, database), cwd=LAB,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def seed(server: PgServer, ports: int, orders: int) -> None:
    """Ports (every 10th without a MAC), 1,000 products, orders with random UUID keys
    (every 20th without a product) and the product's price copied onto them."""
    server.sql(f"CREATE DATABASE {TEMPLATE}")
    for target in (["lab", "0001"], ["chunkwise"]):
        run(server, TEMPLATE, "manage.py", "migrate", *target, "-v0")
    with psycopg.connect(server.dsn(TEMPLATE), autocommit=True) as conn:
        conn.execute("INSERT INTO lab_port (id, mac_address) SELECT g, CASE WHEN g %% 10 = 0 "
                     "THEN NULL ELSE lpad(to_hex(g), 12, '0') END "
                     "FROM generate_series(1, %s) g", (ports,))
        conn.execute("INSERT INTO lab_product (id, name, price) SELECT g, 'product ' || g, "
                     "(g % 97) * 1.25 + 1 FROM generate_series(1, 1000) g")
        conn.execute("INSERT INTO lab_order (id, product_id, quantity, unit_price, note) "
                     "SELECT gen_random_uuid(), p.id, g %% 7 + 1, p.price, '' "
                     "FROM generate_series(1, %s) g LEFT JOIN lab_product p "
                     "ON p.id = g %% 1000 + 1 AND g %% 20 <> 0", (orders,))
        conn.execute("VACUUM ANALYZE")


def run_once(server: PgServer, how: str, copy: str) -> float:
    """Seconds of one contender's work on a fresh copy of the template."""
    server.sql(f"CREATE DATABASE {copy} TEMPLATE {TEMPLATE}")
    try:
        if how == "copy_sql":
            with psycopg.connect(server.dsn(copy)) as conn:
                started = time.perf_counter()
                conn.execute("INSERT INTO lab_portmac (port_id, address, added) SELECT id, "
                             "upper(mac_address), now() FROM lab_port "
                             "WHERE mac_address IS NOT NULL")
                conn.commit()
                return time.perf_counter() - started
        if how in PLAIN:
            code = ("import time, django\ndjango.setup()\n"
                    "from django.apps import apps\nfrom django.db import transaction\n"
                    f"from lab.macs import {PLAIN[how]}\n"
                    "started = time.perf_counter()\n"
                    f"with transaction.atomic():\n    {PLAIN[how]}(apps, None)\n"
                    "print(time.perf_counter() - started)\n")
            return float(run(server, copy, "-c", code).split()[-1])
        run(server, copy, "manage.py", "chunkwise_run", "lab", how, "--batch-size", BATCH,
            "--min-batch-size", BATCH, "--max-batch-size", BATCH, *UNCAPPED)
        with psycopg.connect(server.dsn(copy)) as conn:
            found = conn.execute("SELECT extract(epoch FROM completed_at - started_at), "
                                 "state FROM chunkwise_checkpoint").fetchone()
        assert found is not None and found[1] == "done", found
        return float(found[0])
    finally:
        server.sql(f"DROP DATABASE {copy} WITH (FORCE)")


def ratio_text(name: str, baseline: str, target: str, median: Callable[[str], float]) -> str:
    if target.startswith(">="):
        speedup = median(baseline) / median(name)
        met = speedup >= float(target[2:].strip(" x"))
        return f"{speedup:.2f}x faster (target {target}: {'met' if met else 'missed'})"
    slowdown = median(name) / median(baseline)
    met = slowdown <= float(target[2:].strip(" x"))
    return f"{slowdown:.2f}x the time (target {target}: {'met' if met else 'missed'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ports", type=int, default=50_000)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    load_before = os.getloadavg()
    with running_server() as server:
        seed(server, args.ports, args.orders)
        for round_number in range(args.rounds):
            order = list(CONTENDERS.items())
            random.shuffle(order)  # drift on a shared machine hits every contender alike
            for index, (name, (_, how)) in enumerate(order):
                times[name].append(run_once(server, how, f"run_{round_number}_{index}"))
    load_after = os.getloadavg()

    def median(name: str) -> float:
        return statistics.median(times[name])

    rows = {"new table, back-referenced": args.ports * 9 // 10,
            "new table": args.ports * 9 // 10, "lookups": args.orders * 19 // 20}
    print(f"{args.ports:,} ports ({rows['new table']:,} with a MAC), {args.orders:,} orders "
          f"({rows['lookups']:,} with a product), 5k-row batches; {args.rounds} rounds, random "
          f"order each; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"(2 cores, shared)")
    for name, (shape, _) in CONTENDERS.items():
        seconds = times[name]
        print(f"  {name:<56} {shape:<27} median {median(name):6.2f} s "
              f"{rows[shape] / median(name):>9,.0f} rows/s   "
              f"({', '.join(f'{s:.2f}' for s in seconds)})")
    for name, baseline, target in TARGETS:
        print(f"{name} vs {baseline}: {ratio_text(name, baseline, target, median)}")
    first, again = "plain transform (lab 0016)", "plain transform again (lab 0016)"
    plain = times[first] + times[again]
    print(f"noise floor: plain transform again / plain transform "
          f"{median(again) / median(first):.2f}x; its slowest / fastest run "
          f"{max(plain) / min(plain):.2f}x")


if __name__ == "__main__":
    main()
