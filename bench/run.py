"""chunkwise against the alternatives, side by side in one run, on one throwaway PostgreSQL.

    .venv/bin/python bench/run.py                  # 1M rows, memory check at 10M: ~13 minutes
    .venv/bin/python bench/run.py --rows 100000 --memory-rows 0   # a quick look

Every contender makes the same change (classify customers by last login) on a
fresh copy of the same seeded database. Phase 1 measures speed alone (median of
``--repeat`` runs); phase 2 runs each contender ``--repeat`` times more, interleaved,
while simulated application traffic (bench/traffic.py) does single-row writes and
reads, against an idle baseline taken in the same run, and reports the run with the
median writers' p99. Ratios, not absolute numbers, are the result:
these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from math import nan
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "bench" / "benchproject"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(PROJECT))

from tests.support.pgserver import PgServer, free_port, running_server  # noqa: E402

from traffic import APPLICATION_NAME as TRAFFIC  # noqa: E402

TABLE = "benchapp_customer"
BATCH = 5000
CUTOFF_SQL = "timestamptz '2025-01-01 00:00:00+00'"  # benchapp.logic.CUTOFF
CASE = (f"CASE WHEN last_login IS NULL OR last_login < {CUTOFF_SQL} THEN 'inactive' "
        "ELSE 'active' END")


@dataclass
class Result:
    name: str
    rows: int
    seconds: float
    sample: bool = False
    rss_mb: float | None = None
    runs: list[float] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


@dataclass
class Impact:
    name: str
    write_p50_ms: float
    write_p99_ms: float
    write_max_ms: float
    read_p99_ms: float
    ops_per_second: float
    writes: int = 0
    #: writes that waited over 1 ms for a row lock (PostgreSQL's log_lock_waits): what the
    #: migration's locks cost the writers, apart from the CPU they share with it
    lock_waits: int = 0
    #: over every run of the contender, not just this one: the p99 of all their writes
    #: together (a steadier figure than one run's 1% tail of ~600 writes), and all their
    #: writes and lock waits
    pooled_write_p99_ms: float | None = None
    pooled_writes: int = 0
    pooled_lock_waits: int = 0
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (offset s, write ms)


def project_env(server: PgServer, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKWISE_")}
    env.update(server.env(database), DJANGO_SETTINGS_MODULE="benchsite.settings",
               PYTHONPATH=os.pathsep.join([str(PROJECT), str(REPO / "operator")]))
    return env


def manage(server: PgServer, database: str, *args: str) -> tuple[float, float]:
    """Run manage.py; returns (wall seconds, peak RSS MB of that process)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(PROJECT / "manage.py"), *args],
                            env=project_env(server, database), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{stderr[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024


def seed(server: PgServer, database: str, rows: int) -> None:
    server.sql(f"CREATE DATABASE {database}")
    manage(server, database, "migrate", "-v0", "benchapp", "0001")
    manage(server, database, "migrate", "-v0", "chunkwise")
    with psycopg.connect(server.dsn(database), autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {TABLE} (id, email, last_login, status, touched) "
            "SELECT g, 'customer' || g || '@example.com', "
            "timestamptz '2026-01-01 00:00:00+00' - (g::bigint * 7919 %% 1095) * interval '1 day', "
            "NULL, 0 FROM generate_series(1, %s) g", (rows,))
        conn.execute(f"VACUUM ANALYZE {TABLE}")


class Copies:
    """A fresh copy of the seeded database for every run."""

    def __init__(self, server: PgServer, template: str) -> None:
        self.server, self.template, self.n = server, template, 0

    def make(self) -> str:
        self.n += 1
        name = f"run_{self.n}"
        self.server.sql(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        with psycopg.connect(self.server.dsn(name), autocommit=True) as conn:
            conn.execute(f"SELECT count(*) FROM {TABLE}")  # warm the cache like every other run
        return name

    def drop(self, name: str) -> None:
        self.server.sql(f"DROP DATABASE {name} WITH (FORCE)")


# -- contenders: each returns (rows changed, seconds, peak RSS MB or None) --------------

def single_update(server: PgServer, db: str, rows: int) -> tuple[int, float, float | None]:
    with psycopg.connect(server.dsn(db), autocommit=True) as conn:
        started = time.perf_counter()
        cursor = conn.execute(f"UPDATE {TABLE} SET status = {CASE}")
        return cursor.rowcount, time.perf_counter() - started, None


def keyset_loop(server: PgServer, db: str, rows: int, checkpoint: bool = False
                ) -> tuple[int, float, float | None]:
    """The hand-written loop. With ``checkpoint``, each batch also does by hand what makes
    chunkwise's batches resumable and bounded: the timeouts for this transaction, set in
    the statement that locks and reads the progress row (as chunkwise does), and the row
    advanced in the same transaction as the work."""
    done, last = 0, 0
    with psycopg.connect(server.dsn(db)) as conn:
        if checkpoint:
            conn.execute("CREATE TABLE bench_progress (id int PRIMARY KEY, last_id bigint, "
                         "rows bigint)")
            conn.execute("INSERT INTO bench_progress VALUES (1, 0, 0)")
            conn.commit()
        started = time.perf_counter()
        while True:
            if checkpoint:
                last = conn.execute("SELECT set_config('lock_timeout', '5000ms', true), "
                                    "set_config('statement_timeout', '600000ms', true), "
                                    "last_id FROM bench_progress WHERE id = 1 FOR UPDATE"
                                    ).fetchone()[2]  # type: ignore[index]
            upper = conn.execute(f"SELECT id FROM {TABLE} WHERE id > %s ORDER BY id "
                                 f"OFFSET {BATCH - 1} LIMIT 1", (last,)).fetchone()
            if upper is None:
                upper = conn.execute(f"SELECT max(id) FROM {TABLE} WHERE id > %s",
                                     (last,)).fetchone()
                if upper is None or upper[0] is None:
                    conn.commit()
                    break
            changed = conn.execute(f"UPDATE {TABLE} SET status = {CASE} WHERE id > %s AND "
                                   "id <= %s", (last, upper[0])).rowcount
            if checkpoint:
                conn.execute("UPDATE bench_progress SET last_id = %s, rows = rows + %s "
                             "WHERE id = 1", (upper[0], changed))
            conn.commit()
            done += changed
            last = upper[0]
        return done, time.perf_counter() - started, None


def resumable_keyset_loop(server: PgServer, db: str, rows: int
                          ) -> tuple[int, float, float | None]:
    return keyset_loop(server, db, rows, checkpoint=True)


def chunkwise(migration: str, fixed: bool, metrics: bool = False, shards: int = 1,
              yield_cpu: bool = False
              ) -> Callable[[PgServer, str, int], tuple[int, float, float | None]]:
    def run(server: PgServer, db: str, rows: int) -> tuple[int, float, float | None]:
        args = ["chunkwise_run", "benchapp", migration, "--shards", str(shards)]
        if metrics:  # serving /metrics, every batch counted into the histograms
            args += ["--metrics-port", str(free_port())]
        if yield_cpu:  # the runner at idle CPU priority (batch.yieldCpu)
            args += ["--yield-cpu", "true"]
        if fixed:
            args += ["--batch-size", str(BATCH), "--min-batch-size", str(BATCH),
                     "--max-batch-size", str(BATCH)]
        # connected before the run, as the hand-written loops are: a backend started after
        # it would compete with the traffic inside its window for the bench's bookkeeping
        with psycopg.connect(server.dsn(db)) as conn:
            _, rss = manage(server, db, *args)
            done, seconds = conn.execute(  # every shard: first start to last end
                "SELECT sum(rows_processed), extract(epoch FROM max(completed_at) - "
                "min(started_at)) FROM chunkwise_checkpoint").fetchone()  # type: ignore[misc]
        return int(done), float(seconds), rss  # the run itself, without interpreter start-up
    return run


def django_code(kind: str) -> Callable[[PgServer, str, int], tuple[int, float, float | None]]:
    """bulk_update in 1k batches, or save() per row over .iterator() (the blog recipe)."""
    def run(server: PgServer, db: str, rows: int) -> tuple[int, float, float | None]:
        code = f"""
import time
from django.db import transaction
from benchapp.logic import classify
from benchapp.models import Customer
started = time.perf_counter()
done = 0
if {kind!r} == "bulk_update":
    last = 0
    while done < {rows}:
        with transaction.atomic():
            batch = list(Customer.objects.filter(id__gt=last).order_by("id")[:1000])
            if not batch:
                break
            for c in batch:
                c.status = classify(c.last_login)
            Customer.objects.bulk_update(batch, ["status"])
        done += len(batch)
        last = batch[-1].id
else:
    for c in Customer.objects.filter(id__lte={rows}).order_by("id").iterator():
        c.status = classify(c.last_login)
        c.save()
        done += 1
print(done, time.perf_counter() - started)
"""
        out = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code],
                             env=project_env(server, db), capture_output=True, text=True,
                             check=True, cwd=PROJECT)
        done, seconds = out.stdout.split()
        return int(done), float(seconds), None
    return run


# -- traffic -----------------------------------------------------------------------------

class Traffic:
    def __init__(self, server: PgServer, db: str, max_id: int, connections: int,
                 rate: float) -> None:
        self._out = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False)
        self._proc = subprocess.Popen([
            sys.executable, str(REPO / "bench" / "traffic.py"), "--dsn", server.dsn(db),
            "--max-id", str(max_id), "--connections", str(connections), "--rate", str(rate),
            "--out", self._out.name])

    def stop(self) -> list[tuple[float, str, float]]:
        self._proc.terminate()
        self._proc.wait(timeout=60)
        with open(self._out.name) as lines:
            ops = [tuple(json.loads(line)) for line in lines]
        os.unlink(self._out.name)
        return ops  # type: ignore[return-value]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def impact_of(name: str, ops: list[tuple[float, str, float]], start: float,
              end: float, lock_waits: int = 0) -> Impact:
    window = [op for op in ops if start <= op[0] <= end]
    writes = [latency * 1000 for _, kind, latency in window if kind == "write"]
    reads = [latency * 1000 for _, kind, latency in window if kind == "read"]
    timeline = [(round(t - start, 3), latency * 1000)
                for t, kind, latency in window if kind == "write"]
    return Impact(name, percentile(writes, 0.5), percentile(writes, 0.99),
                  max(writes, default=float("nan")), percentile(reads, 0.99),
                  len(window) / max(end - start, 1e-9), len(writes), lock_waits, timeline=timeline)


#: server settings under which every lock wait over 1 ms is logged, with the database and
#: application it came from: what writer_lock_waits() reads
LOCK_WAIT_LOG = {"log_lock_waits": "on", "deadlock_timeout": "1ms", "log_line_prefix": "%d %a "}


def writer_lock_waits(server: PgServer, db: str) -> int:
    """Lock waits of the traffic's writes in ``db`` that outlasted deadlock_timeout (1 ms),
    as a server with LOCK_WAIT_LOG logged them."""
    with open(server.datadir.parent / "postgres.log", errors="replace") as log:
        return sum(1 for line in log if line.startswith(f"{db} {TRAFFIC} ")
                   and "still waiting for" in line)


# -- the run -----------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="table size (default 1M)")
    parser.add_argument("--sample", type=int, default=50_000,
                        help="rows for the slow Django contenders (bulk_update; save() gets "
                             "half); their rows/s is measured on this sample and labelled so")
    parser.add_argument("--repeat", type=int, default=3, help="speed runs per contender")
    parser.add_argument("--memory-rows", type=int, default=10_000_000,
                        help="second table size for the runner's peak RSS (0 = skip)")
    parser.add_argument("--connections", type=int, default=4, help="traffic connections")
    parser.add_argument("--rate", type=float, default=100.0, help="traffic ops/s per connection")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "results" / "latest.png")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak-RSS check (prints no speed table)")
    args = parser.parse_args()

    contenders: list[tuple[str, Callable[[PgServer, str, int], tuple[int, float, float | None]],
                           bool]] = [
        ("single UPDATE", single_update, False),
        ("bare keyset loop (SQL, 5k)", keyset_loop, False),
        ("keyset loop + checkpoint row (SQL, 5k)", resumable_keyset_loop, False),
        ("chunkwise set-based (5k fixed)", chunkwise("0002", fixed=True), False),
        ("chunkwise set-based (5k, metrics)", chunkwise("0002", fixed=True, metrics=True),
         False),
        ("chunkwise set-based (5k, yield CPU)", chunkwise("0002", fixed=True, yield_cpu=True),
         False),
        ("chunkwise set-based (auto-tuned)", chunkwise("0002", fixed=False), False),
        ("chunkwise set-based (5k, 2 shards)", chunkwise("0002", fixed=True, shards=2),
         False),
        ("chunkwise transform (5k fixed)", chunkwise("0003", fixed=True), False),
        ("chunkwise transform (auto-tuned)", chunkwise("0003", fixed=False), False),
        ("chunkwise transform (5k, 2 shards)", chunkwise("0003", fixed=True, shards=2), False),
        ("Django bulk_update (1k)", django_code("bulk_update"), True),
        ("Django save() per row", django_code("save"), True),
    ]
    log = lambda text: print(f"[bench {time.strftime('%H:%M:%S')}] {text}",  # noqa: E731
                             file=sys.stderr, flush=True)
    results: dict[str, Result] = {}
    impacts: dict[str, Impact] = {}
    memory: list[dict[str, float]] = []
    with running_server(LOCK_WAIT_LOG) as server:
        log(f"seeding {args.rows:,} rows")
        seed(server, "seed", args.rows)
        copies = Copies(server, "seed")
        for name, run, sampled in ([] if args.memory_only else contenders):
            rows = args.sample // (2 if "save" in name else 1) if sampled else args.rows
            rows = min(rows, args.rows)
            runs = []
            for _ in range(1 if sampled else args.repeat):
                db = copies.make()
                done, seconds, rss = run(server, db, rows)
                copies.drop(db)
                runs.append((seconds, done, rss))
                log(f"{name}: {done:,} rows in {seconds:.2f}s")
            seconds = statistics.median(r[0] for r in runs)
            rss_values = [r[2] for r in runs if r[2] is not None]
            results[name] = Result(name, runs[0][1], seconds, sampled,
                                   max(rss_values) if rss_values else None,
                                   [round(r[0], 3) for r in runs])
        if args.memory_only:
            contenders = []
        log("live traffic: idle baseline")
        db = copies.make()
        traffic = Traffic(server, db, args.rows, args.connections, args.rate)
        time.sleep(1.0)
        start = time.time()
        time.sleep(args.idle_seconds)
        end = time.time()
        impacts["idle (no migration)"] = impact_of("idle (no migration)", traffic.stop(),
                                                   start, end, writer_lock_waits(server, db))
        copies.drop(db)
        # a 1% tail moves a lot between runs on a shared 2-core machine: every contender
        # runs --repeat times under traffic, interleaved, and the run with the median
        # writers' p99 is the one reported
        tries: dict[str, list[Impact]] = {}
        for _ in range(args.repeat):
            for name, run, sampled in contenders:
                if sampled:
                    continue  # minutes per million rows: their impact is not the question
                db = copies.make()
                traffic = Traffic(server, db, args.rows, args.connections, args.rate)
                time.sleep(1.0)
                start = time.time()
                run(server, db, args.rows)
                end = time.time()
                tries.setdefault(name, []).append(impact_of(name, traffic.stop(), start, end,
                                                            writer_lock_waits(server, db)))
                copies.drop(db)
                log(f"{name} under traffic: writers p99 {tries[name][-1].write_p99_ms:.1f} ms")
        for name, measured in tries.items():
            median_run = sorted(measured, key=lambda i: i.write_p99_ms)[len(measured) // 2]
            impacts[name] = replace(
                median_run,
                pooled_write_p99_ms=percentile([ms for i in measured for _, ms in i.timeline],
                                               0.99),
                pooled_writes=sum(i.writes for i in measured),
                pooled_lock_waits=sum(i.lock_waits for i in measured))
        if args.memory_rows:
            for rows in (args.rows, args.memory_rows):
                name = "memory"
                if rows != args.rows:
                    log(f"seeding {rows:,} rows for the memory check")
                    server.sql("DROP DATABASE IF EXISTS memseed")
                    seed(server, "memseed", rows)
                template = "seed" if rows == args.rows else "memseed"
                for migration in ("0002", "0003"):
                    mem_copies = Copies(server, template)
                    mem_copies.n = 1000 + len(memory)
                    db = mem_copies.make()
                    # fixed 5k batches: memory must not grow with the table (the auto-tuner
                    # may pick bigger batches on bigger tables, which is a different question)
                    _, _, rss = chunkwise(migration, fixed=True)(server, db, rows)
                    mem_copies.drop(db)
                    memory.append({"rows": rows, "path": "set-based" if migration == "0002"
                                   else "transform", "rss_mb": round(rss or 0, 1)})
                    log(f"{name}: {rows:,} rows {memory[-1]['path']}: peak RSS {rss:.0f} MB")
    if args.memory_only:
        for m in memory:
            print(f"{m['path']:10} {int(m['rows']):>12,} rows  peak RSS {m['rss_mb']:7.1f} MB")
        return
    report(args, results, impacts, memory)


def metrics_cost_per_batch(calls: int = 20_000) -> float:
    """Seconds one batch's report costs the metrics reporter (real prometheus_client, its
    histograms and counters), as the median of five timings of ``calls`` reports."""
    from prometheus_client import CollectorRegistry

    from chunkwise.engine import BatchReport, CheckpointState, Tally
    from chunkwise.metrics import MetricsReporter, RunLabels, WorkerMetrics

    reporter = MetricsReporter(WorkerMetrics(CollectorRegistry()), RunLabels("ns", "bench"))
    state = CheckpointState(0, 10**6, 10**6, Tally(0, 0, 0), 0, 0.0, False)
    report = BatchReport(BATCH, 0, 0.025, 0.0004, BATCH, state)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            reporter.batch_committed(report)
        timings.append((time.perf_counter() - started) / calls)
    return statistics.median(timings)


def report(args: argparse.Namespace, results: dict[str, Result], impacts: dict[str, Impact],
           memory: list[dict[str, float]]) -> None:
    update = results["single UPDATE"].rows_per_second
    keyset = results["bare keyset loop (SQL, 5k)"].rows_per_second
    bulk = results["Django bulk_update (1k)"].rows_per_second
    print(f"\nchunkwise benchmark: {args.rows:,} rows, PostgreSQL, {os.cpu_count()} cores, "
          f"median of {args.repeat} runs (samples: 1 run)\n")
    print(f"{'contender':36} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'vs UPDATE':>9} "
          f"{'vs keyset':>9} {'RSS MB':>7}")
    for r in results.values():
        label = r.name + (" [sample]" if r.sample else "")
        rss = f"{r.rss_mb:7.0f}" if r.rss_mb else f"{'':7}"
        print(f"{label:36} {r.rows:>10,} {r.seconds:8.2f} {r.rows_per_second:10,.0f} "
              f"{r.rows_per_second / update:8.2f}x {r.rows_per_second / keyset:8.2f}x {rss}")
    print(f"\nlive traffic: {args.connections} connections x {args.rate:.0f} ops/s, "
          "half single-row UPDATEs, half reads, on random rows; of each contender's "
          f"{args.repeat} runs, the one with the median writers' p99")
    print(f"{'while running':36} {'write p50':>9} {'write p99':>9} {'write max':>9} "
          f"{'read p99':>8} {'ops/s':>7} {'p99 vs idle':>11} {'lock waits >1ms':>15} "
          f"{'all runs: p99':>13} {'lock waits >1ms':>15}")
    idle = impacts["idle (no migration)"].write_p99_ms
    for i in impacts.values():
        print(f"{i.name:36} {i.write_p50_ms:8.2f}m {i.write_p99_ms:8.2f}m {i.write_max_ms:8.1f}m "
              f"{i.read_p99_ms:7.2f}m {i.ops_per_second:7.0f} {i.write_p99_ms / idle:10.1f}x "
              f"{i.lock_waits:>5} of {i.writes:>5} " + (
                  f"{i.pooled_write_p99_ms:12.2f}m {i.pooled_lock_waits:>5} of "
                  f"{i.pooled_writes:>5}" if i.pooled_write_p99_ms is not None else ""))
    if memory:
        print("\nchunkwise runner peak RSS (5k-row batches)")
        for m in memory:
            print(f"  {m['path']:10} {int(m['rows']):>12,} rows  {m['rss_mb']:7.1f} MB")
    set_based = results["chunkwise set-based (5k fixed)"].rows_per_second
    set_tuned = results["chunkwise set-based (auto-tuned)"].rows_per_second
    transform = max(results["chunkwise transform (5k fixed)"].rows_per_second,
                    results["chunkwise transform (auto-tuned)"].rows_per_second)
    worst_p99 = max(i.write_p99_ms for n, i in impacts.items() if n.startswith("chunkwise"))
    keyset_impact = impacts["bare keyset loop (SQL, 5k)"]

    def writers_vs_keyset(name: str) -> tuple[float, str]:
        """The writers' p99 under ``name`` over the keyset loop's, median run (what the
        target judges) and all runs pooled (shown beside it)."""
        impact = impacts[name]
        ratio = impact.write_p99_ms / keyset_impact.write_p99_ms
        pooled = (impact.pooled_write_p99_ms or nan) / (keyset_impact.pooled_write_p99_ms or nan)
        return 1.2 / ratio, f"{ratio:.2f}x the keyset loop's (all runs' writes pooled: " \
            f"{pooled:.2f}x)"

    set_writers = writers_vs_keyset("chunkwise set-based (5k fixed)")
    yield_writers = writers_vs_keyset("chunkwise set-based (5k, yield CPU)")
    two_shards = results["chunkwise set-based (5k, 2 shards)"].rows_per_second
    with_metrics = results["chunkwise set-based (5k, metrics)"].rows_per_second
    batch_seconds = BATCH / set_based
    reporter_seconds = metrics_cost_per_batch()
    print(f"\nmetrics: the reporter costs {reporter_seconds * 1e6:.1f} us per batch, "
          f"{100 * reporter_seconds / batch_seconds:.3f}% of a {batch_seconds * 1e3:.1f} ms "
          f"set-based batch; end to end with /metrics served: {with_metrics / set_based:.3f}x")
    yielding = results["chunkwise set-based (5k, yield CPU)"].rows_per_second

    def at_least(ratio: float, needed: float) -> tuple[float, str]:
        return ratio / needed, f"{ratio:.2f}x"

    # (text, measured/needed: met at >= 1, what to show)
    targets = [
        ("set-based (5k fixed) >= 0.9x bare keyset loop", *at_least(set_based / keyset, 0.9)),
        ("set-based (5k, yield CPU) >= 0.9x bare keyset loop",
         *at_least(yielding / keyset, 0.9)),
        ("set-based (2 shards) >= 1.0x single UPDATE", *at_least(two_shards / update, 1.0)),
        ("set-based (auto-tuned) >= 1.0x single UPDATE", *at_least(set_tuned / update, 1.0)),
        ("transform >= 0.5x single UPDATE", *at_least(transform / update, 0.5)),
        ("transform >= 15x bulk_update", *at_least(transform / bulk, 15.0)),
        ("writers' p99, set-based 5k <= 1.2x the keyset loop's", *set_writers),
        ("writers' p99, set-based 5k, yield CPU <= 1.2x the keyset loop's", *yield_writers),
        ("writers' p99 while chunkwise runs <= 5x idle", 5.0 / (worst_p99 / idle),
         f"{worst_p99 / idle:.1f}x idle"),
        ("metrics cost <= 2% of a set-based batch",
         0.02 / max(reporter_seconds / batch_seconds, 1e-12),
         f"{100 * reporter_seconds / batch_seconds:.3f}%"),
    ]
    print("\ntargets")
    for text, ratio, shown in targets:
        print(f"  {'met ' if ratio >= 1.0 else 'MISS'}  {text}: {shown}")
    resumable = results["keyset loop + checkpoint row (SQL, 5k)"].rows_per_second
    print(f"  (what resuming costs by hand: the keyset loop with a checkpoint row runs at "
          f"{resumable / keyset:.2f}x the bare loop; set-based 5k runs at "
          f"{set_based / resumable:.2f}x the loop with a checkpoint row)")
    transform_shards = results["chunkwise transform (5k, 2 shards)"].rows_per_second
    print(f"  (the transform targets count one shard; with 2 shards the transform runs at "
          f"{transform_shards / update:.2f}x single UPDATE)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "rows": args.rows, "repeat": args.repeat, "cores": os.cpu_count(),
        "results": [asdict(r) | {"rows_per_second": r.rows_per_second}
                    for r in results.values()],
        "impact": [{k: v for k, v in asdict(i).items() if k != "timeline"}
                   for i in impacts.values()],
        "memory": memory,
    }, indent=2))
    if not args.no_plot:
        plot(args.plot, results, impacts)


def plot(path: Path, results: dict[str, Result], impacts: dict[str, Impact]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, lines) = plt.subplots(2, 1, figsize=(10, 9))
    names = list(results)
    bars.barh(names, [results[n].rows_per_second for n in names],
              color=["#1f77b4" if n.startswith("chunkwise") else "#999999" for n in names])
    bars.set_xlabel("rows/s (higher is better)")
    bars.invert_yaxis()
    bars.set_title("Speed, same change on the same data")
    for name, impact in impacts.items():
        if impact.timeline:
            xs, ys = zip(*impact.timeline, strict=True)
            lines.plot(xs, ys, ".", markersize=2, label=name)
    lines.set_yscale("log")
    lines.set_xlabel("seconds since the migration started")
    lines.set_ylabel("single-row UPDATE latency, ms (log)")
    lines.set_title("Application writers' latency while each contender runs")
    lines.legend(fontsize=7, markerscale=4)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
