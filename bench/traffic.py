"""Simulated application traffic: single-row writes and reads on random rows.

Runs as its own process (so it does not share a GIL with the contender), with
``--connections`` threads, each paced at ``--rate`` operations per second (open
loop: a slow operation delays that thread's next one, it does not queue more).
Writes one JSON line per operation to ``--out``: start (unix time), kind, latency (s).
Stops on SIGTERM or after ``--seconds``. ``--database mariadb`` talks to MariaDB through
mysqlclient (MySQLdb) instead of PostgreSQL through psycopg, with the same ``--dsn``
form (``host=... port=... user=... dbname=...``).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager

#: the traffic's connections say so, so the server log tells their lock waits apart
APPLICATION_NAME = "bench-traffic"
WRITE = "UPDATE benchapp_customer SET touched = touched + 1 WHERE id = %s"
READ = "SELECT status FROM benchapp_customer WHERE id = %s"
#: one operation on a row, by key: the write or the read
Operation = Callable[[int], None]


@contextmanager
def postgresql(dsn: str) -> Iterator[tuple[Operation, Operation]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
        def write(key: int) -> None:
            conn.execute(WRITE, (key,))

        def read(key: int) -> None:
            conn.execute(READ, (key,)).fetchone()

        yield write, read


@contextmanager
def mariadb(dsn: str) -> Iterator[tuple[Operation, Operation]]:
    import MySQLdb

    given = dict(item.split("=", 1) for item in dsn.split())
    with closing(MySQLdb.connect(host=given["host"], port=int(given["port"]),
                                 user=given["user"], password="", database=given["dbname"],
                                 charset="utf8mb4", autocommit=True)) as conn:
        cursor = conn.cursor()

        def write(key: int) -> None:
            cursor.execute(WRITE, (key,))

        def read(key: int) -> None:
            cursor.execute(READ, (key,))
            cursor.fetchone()

        yield write, read


CONNECT = {"postgresql": postgresql, "mariadb": mariadb}


def worker(database: str, dsn: str, max_id: int, rate: float, stop: threading.Event,
           started: float, results: list[tuple[float, str, float]], seed: int) -> None:
    rng = random.Random(seed)
    interval = 1.0 / rate
    with CONNECT[database](dsn) as (write, read):
        next_at = time.perf_counter()
        while not stop.is_set():
            key = rng.randint(1, max_id)
            kind = "write" if rng.random() < 0.5 else "read"
            wall = time.time()
            t0 = time.perf_counter()
            (write if kind == "write" else read)(key)
            t1 = time.perf_counter()
            results.append((wall, kind, t1 - t0))
            next_at = max(next_at + interval, t1)
            stop.wait(max(0.0, next_at - time.perf_counter()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=sorted(CONNECT), default="postgresql")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--max-id", type=int, required=True)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="ops/s per connection")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    started = time.perf_counter()
    results: list[tuple[float, str, float]] = []
    threads = [threading.Thread(target=worker, args=(args.database, args.dsn, args.max_id,
                                                     args.rate, stop, started, results, i))
               for i in range(args.connections)]
    for thread in threads:
        thread.start()
    stop.wait(args.seconds)
    stop.set()
    for thread in threads:
        thread.join()
    with open(args.out, "w") as out:
        for offset, kind, latency in results:
            out.write(json.dumps([round(offset, 4), kind, round(latency, 6)]) + "\n")


if __name__ == "__main__":
    main()
