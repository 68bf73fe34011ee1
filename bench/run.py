"""chunkwise against the alternatives, side by side in one run, on one throwaway PostgreSQL
(or, with ``--database mariadb``, MariaDB).

    .venv/bin/python bench/run.py                  # 1M rows, 5 runs each, memory at 10M
    .venv/bin/python bench/run.py --rows 100000 --memory-rows 0 --repeat 2   # a quick look
    .venv/bin/python bench/run.py --topology both  # pinned, then shared, reported side by side
    .venv/bin/python bench/run.py --database mariadb   # the same on MariaDB (results/mariadb.*)

Every contender makes the same change (classify customers by last login) on a
fresh copy of the same seeded database. Phase 1 measures speed alone (median of
``--repeat`` interleaved runs) and the database's CPU time per million rows; phase 2
runs each contender ``--repeat`` times more, interleaved, while simulated application
traffic (bench/traffic.py) does single-row writes and reads, with an idle baseline in
every round, and reports the writers' latencies pooled over all of a contender's runs,
with the spread between its runs. Ratios, not absolute numbers, are the result: these
machines are noisy.

The run measures its own noise. The contenders run in a new random order in every
round (``--seed`` repeats one), so that no contender always follows the same one, and
chunkwise set-based 5k runs twice under two names (the A/A twins): how far apart the
twins land is the run's noise floor, for speed, database CPU and the writers' p99
alike. A target counts as met or missed only beyond that floor; within it the verdict
says "within noise".

Topology (``--topology``): by default ``pinned``, as users deploy it: the migration
runner (every contender's client: the hand-written loops in this process, manage.py,
the Django scripts) on a CPU of its own, the database (PostgreSQL's postmaster, so every
backend it forks; every thread of mariadbd, so every thread it starts) and the
application traffic on the others. ``shared`` leaves every process free to run on every
CPU, as before; ``both`` measures one and then the other.

What differs between the databases (the server, seeding and copies, the hand-written
SQL, the traffic's connection, the lock waits, the server's processes) is in
bench/databases.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "bench" / "benchproject"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(PROJECT))

from tests.support.pgserver import free_port  # noqa: E402

from databases import BATCH, DATABASES, TABLE, BenchDatabase, cpu_list  # noqa: E402


@dataclass
class Result:
    name: str
    rows: int
    seconds: float
    sample: bool = False
    rss_mb: float | None = None
    runs: list[float] = field(default_factory=list)
    #: the database server's CPU seconds during each run (BenchDatabase.server_cpu_seconds)
    db_cpu: list[float] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def db_cpu_per_mrows(self) -> float:
        """The database's CPU seconds per million rows changed, median of the runs."""
        return statistics.median(self.db_cpu) / self.rows * 1e6 if self.rows else 0.0


@dataclass
class Impact:
    """The application's latencies while one contender ran: one run's, or (pooled) all of
    its runs' operations together, a steadier tail than one run's 1% of ~600 writes."""

    name: str
    write_p50_ms: float
    write_p99_ms: float
    write_max_ms: float
    read_p99_ms: float
    ops_per_second: float
    writes: int = 0
    #: writes that waited over 1 ms for a row lock (PostgreSQL's log_lock_waits; on MariaDB
    #: InnoDB's row lock waits of every session, see databases.MariaDB): what the
    #: migration's locks cost the writers, apart from the CPU they share with it
    lock_waits: int = 0
    runs: int = 1
    #: pooled: each run's own writers' p99, for the spread between runs
    run_write_p99_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (offset s, write ms)
    read_ms: list[float] = field(default_factory=list)


def project_env(database: BenchDatabase, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUNKWISE_")}
    env.update(database.env(name), DJANGO_SETTINGS_MODULE="benchsite.settings",
               PYTHONPATH=os.pathsep.join([str(PROJECT), str(REPO / "operator")]))
    return env


def manage(database: BenchDatabase, name: str, *args: str) -> tuple[float, float]:
    """Run manage.py; returns (wall seconds, peak RSS MB of that process)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(PROJECT / "manage.py"), *args],
                            env=project_env(database, name), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{stderr[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024


def seed(database: BenchDatabase, name: str, rows: int) -> None:
    database.create(name)
    manage(database, name, "migrate", "-v0", "benchapp", "0001")
    manage(database, name, "migrate", "-v0", "chunkwise")
    database.fill(name, rows)


class Copies:
    """A fresh copy of the seeded database for every run."""

    def __init__(self, database: BenchDatabase, template: str) -> None:
        self.database, self.template, self.n = database, template, 0

    def make(self) -> str:
        self.n += 1
        name = f"run_{self.n}"
        self.database.copy(self.template, name)
        with self.database.connect(name, autocommit=True) as conn:  # warm the cache like
            conn.cursor().execute(f"SELECT count(*) FROM {TABLE}")  # every other run
        return name

    def drop(self, name: str) -> None:
        self.database.drop(name)


# -- contenders: each returns (rows changed, seconds, peak RSS MB or None) --------------

Run = Callable[[BenchDatabase, str, int], tuple[int, float, float | None]]


def single_update(database: BenchDatabase, db: str, rows: int
                  ) -> tuple[int, float, float | None]:
    with database.connect(db, autocommit=True) as conn:
        cursor = conn.cursor()
        started = time.perf_counter()
        cursor.execute(database.single_update)
        return int(cursor.rowcount), time.perf_counter() - started, None


def keyset_loop(database: BenchDatabase, db: str, rows: int, checkpoint: bool = False
                ) -> tuple[int, float, float | None]:
    """The hand-written loop. With ``checkpoint``, each batch also does by hand what makes
    chunkwise's batches resumable and bounded: the timeouts for this transaction, set in
    the statement that locks and reads the progress row (as chunkwise does; MariaDB, which
    has no SET LOCAL, bounds each of the batch's statements in the statement itself), and
    the row advanced in the same transaction as the work."""
    sql = database.keyset_sql(checkpoint)
    done, last = 0, 0
    with database.connect(db) as conn:
        cursor = conn.cursor()
        for statement in sql.create_progress:
            cursor.execute(statement)
        conn.commit()
        started = time.perf_counter()
        while True:
            if checkpoint:
                cursor.execute(sql.lock_progress)
                last = cursor.fetchone()[-1]
            cursor.execute(sql.next_upper, (last,))
            upper = cursor.fetchone()
            if upper is None:
                cursor.execute(sql.last_upper, (last,))
                upper = cursor.fetchone()
                if upper is None or upper[0] is None:
                    conn.commit()
                    break
            cursor.execute(sql.update, (last, upper[0]))
            changed = int(cursor.rowcount)
            if checkpoint:
                cursor.execute(sql.advance_progress, (upper[0], changed))
            conn.commit()
            done += changed
            last = upper[0]
        return done, time.perf_counter() - started, None


def resumable_keyset_loop(database: BenchDatabase, db: str, rows: int
                          ) -> tuple[int, float, float | None]:
    return keyset_loop(database, db, rows, checkpoint=True)


def chunkwise(migration: str, fixed: bool, metrics: bool = False, shards: int = 1,
              yield_cpu: bool = False) -> Run:
    def run(database: BenchDatabase, db: str, rows: int) -> tuple[int, float, float | None]:
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
        with database.connect(db) as conn:
            _, rss = manage(database, db, *args)
            # every shard: first start to last end
            done, seconds = database.chunkwise_figures(conn)
        return done, seconds, rss  # the run itself, without interpreter start-up
    return run


def django_code(kind: str) -> Run:
    """bulk_update in 1k batches, or save() per row over .iterator() (the blog recipe)."""
    def run(database: BenchDatabase, db: str, rows: int) -> tuple[int, float, float | None]:
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
                             env=project_env(database, db), capture_output=True, text=True,
                             check=True, cwd=PROJECT)
        done, seconds = out.stdout.split()
        return int(done), float(seconds), None
    return run


# -- topology ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Topology:
    """Which CPUs the migration runner, and the database with the application, run on."""

    name: str
    runner: frozenset[int]
    server: frozenset[int]

    @staticmethod
    def of(name: str) -> Topology:
        cpus = sorted(ALL_CPUS)
        if name == "shared":
            return Topology(name, frozenset(cpus), frozenset(cpus))
        if len(cpus) < 2:
            raise SystemExit("--topology pinned needs 2 CPUs or more (see nproc); "
                             "use --topology shared")
        return Topology(name, frozenset(cpus[:1]), frozenset(cpus[1:]))

    def apply(self, database: BenchDatabase) -> None:
        """Pin the database's processes (or threads), and this process with the contenders
        it starts. The ones the server starts later inherit their starter's CPUs."""
        for task in database.server_tasks():
            try:
                os.sched_setaffinity(task, self.server)
            except ProcessLookupError:
                pass
        os.sched_setaffinity(0, self.runner)

    def describe(self, database: BenchDatabase) -> str:
        """What the processes run on now, as the kernel says (a new session asked)."""
        server = database.new_session_cpus()
        runner = cpu_list(frozenset(os.sched_getaffinity(0)))
        if self.name == "shared":
            return (f"topology: shared (unpinned) - the migration runner, {database.label} "
                    f"and the application traffic all free to run on CPUs {runner}")
        return (f"topology: pinned, as deployed - the migration runner (the hand-written "
                f"loops, manage.py, the Django scripts) on CPU {runner}; {server} and the "
                f"application traffic on CPU {cpu_list(self.server)}")


ALL_CPUS = frozenset(os.sched_getaffinity(0))


# -- traffic -----------------------------------------------------------------------------

class Traffic:
    def __init__(self, database: BenchDatabase, db: str, max_id: int, connections: int,
                 rate: float, cpus: frozenset[int]) -> None:
        self._out = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False)
        self._proc = subprocess.Popen([
            sys.executable, str(REPO / "bench" / "traffic.py"), *database.traffic_args(db),
            "--max-id", str(max_id), "--connections", str(connections), "--rate", str(rate),
            "--out", self._out.name], preexec_fn=lambda: os.sched_setaffinity(0, cpus))

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
    p99 = percentile(writes, 0.99)
    return Impact(name, percentile(writes, 0.5), p99, max(writes, default=float("nan")),
                  percentile(reads, 0.99), len(window) / max(end - start, 1e-9), len(writes),
                  lock_waits, 1, [p99], timeline, reads)


def pooled(runs: list[Impact]) -> Impact:
    """All of a contender's runs as one: percentiles over every write and read."""
    writes = [ms for i in runs for _, ms in i.timeline]
    reads = [ms for i in runs for ms in i.read_ms]
    return Impact(runs[0].name, percentile(writes, 0.5), percentile(writes, 0.99),
                  max(writes, default=float("nan")), percentile(reads, 0.99),
                  statistics.mean(i.ops_per_second for i in runs), len(writes),
                  sum(i.lock_waits for i in runs), len(runs),
                  [i.write_p99_ms for i in runs], [t for i in runs for t in i.timeline], reads)


# -- the run -----------------------------------------------------------------------------

Contender = tuple[str, Run, bool]
IDLE = "idle (no migration)"
BARE = "bare keyset loop (SQL, 5k)"
SET_BASED = "chunkwise set-based (5k fixed)"
#: the A/A control: SET_BASED again under another name
TWIN = "chunkwise set-based (5k fixed, A/A twin)"
SHARDS = "chunkwise set-based (5k, 2 shards)"


@dataclass
class Measured:
    """One topology's figures."""

    database: type[BenchDatabase]
    topology: Topology
    described: str
    results: dict[str, Result]
    impacts: dict[str, Impact]  # pooled over each contender's runs

    @property
    def noise(self) -> Noise:
        return Noise.of(self)


def _apart(a: float, b: float) -> float:
    """How far apart two measures of the same thing are, as a ratio >= 1."""
    return max(a, b) / min(a, b) if min(a, b) > 0 else float("inf")


@dataclass(frozen=True)
class Noise:
    """The run's noise floor: how far apart the A/A twins (identical work under two
    names) landed, per measure, as a ratio >= 1."""

    speed: float
    db_cpu: float
    writers_p99: float

    @staticmethod
    def of(m: Measured) -> Noise:
        a, b = m.results[SET_BASED], m.results[TWIN]
        return Noise(_apart(a.seconds, b.seconds),
                     _apart(a.db_cpu_per_mrows, b.db_cpu_per_mrows),
                     _apart(m.impacts[SET_BASED].write_p99_ms, m.impacts[TWIN].write_p99_ms))


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, database: BenchDatabase, copies: Copies,
            contenders: list[Contender], topology: Topology, order: random.Random) -> Measured:
    topology.apply(database)
    described = topology.describe(database)
    log(described)
    # speed alone: every contender once per round, rounds interleaved, so that a slow
    # minute of a shared machine costs every contender alike, and in a new order each
    # round, so that none always runs after the same one
    runs: dict[str, list[tuple[float, int, float | None, float]]] = {}
    for round_ in range(args.repeat):
        for name, run, sampled in order.sample(contenders, len(contenders)):
            if sampled and round_:
                continue  # minutes per million rows: one run of a sample
            rows = args.sample // (2 if "save" in name else 1) if sampled else args.rows
            db = copies.make()
            cpu = database.server_cpu_seconds()
            done, seconds, rss = run(database, db, min(rows, args.rows))
            cpu = database.server_cpu_seconds() - cpu
            copies.drop(db)
            runs.setdefault(name, []).append((seconds, done, rss, cpu))
            log(f"[{topology.name} {round_ + 1}/{args.repeat}] {name}: {done:,} rows in "
                f"{seconds:.2f}s, database CPU {cpu:.2f}s")
    results: dict[str, Result] = {}
    sampled_names = {name for name, _, sampled in contenders if sampled}
    for name, _, _ in contenders:  # the table in the contenders' own order
        measured = runs[name]
        rss_values = [r[2] for r in measured if r[2] is not None]
        results[name] = Result(name, measured[0][1], statistics.median(r[0] for r in measured),
                               name in sampled_names, max(rss_values) if rss_values else None,
                               [round(r[0], 3) for r in measured],
                               [round(r[3], 3) for r in measured])
    # under traffic: an idle window and every contender once per round, in a new order
    tries: dict[str, list[Impact]] = {}
    for round_ in range(args.repeat):
        window: list[tuple[str, Callable[..., object] | None, bool]] = [(IDLE, None, False),
                                                                          *contenders]
        for name, work, sampled in order.sample(window, len(window)):
            if sampled:
                continue  # their impact is not the question
            db = copies.make()
            mark = database.lock_wait_mark()
            traffic = Traffic(database, db, args.rows, args.connections, args.rate,
                              topology.server)
            time.sleep(1.0)
            start = time.time()
            if work is None:
                time.sleep(args.idle_seconds)
            else:
                work(database, db, args.rows)
            end = time.time()
            ops = traffic.stop()
            tries.setdefault(name, []).append(impact_of(name, ops, start, end,
                                                        database.writer_lock_waits(db, mark)))
            copies.drop(db)
            log(f"[{topology.name} {round_ + 1}/{args.repeat}] {name} under traffic: "
                f"writers p99 {tries[name][-1].write_p99_ms:.1f} ms")
    return Measured(type(database), topology, described, results,
                    {name: pooled(tries[name]) for name in [IDLE, *(n for n, _, _ in contenders)]
                     if name in tries})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="table size (default 1M)")
    parser.add_argument("--sample", type=int, default=50_000,
                        help="rows for the slow Django contenders (bulk_update; save() gets "
                             "half); their rows/s is measured on this sample and labelled so")
    parser.add_argument("--repeat", type=int, default=5,
                        help="interleaved runs per contender, alone and under traffic each "
                             "(default 5)")
    parser.add_argument("--database", choices=sorted(DATABASES), default="postgresql",
                        help="the database measured (default postgresql); each has a throwaway "
                             "server of its own (bench/databases.py)")
    parser.add_argument("--topology", choices=("pinned", "shared", "both"), default="pinned",
                        help="pinned (default): the runner on a CPU of its own, the database "
                             "and the traffic on the others; shared: unpinned; both: one, "
                             "then the other, reported side by side")
    parser.add_argument("--memory-rows", type=int, default=10_000_000,
                        help="second table size for the runner's peak RSS (0 = skip)")
    parser.add_argument("--connections", type=int, default=4, help="traffic connections")
    parser.add_argument("--rate", type=float, default=100.0, help="traffic ops/s per connection")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path,
                        help="the figures as JSON (default bench/results/latest.json; "
                             "mariadb.json with --database mariadb)")
    parser.add_argument("--plot", type=Path,
                        help="the plot (default bench/results/latest.png; mariadb.png with "
                             "--database mariadb)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak-RSS check (prints no speed table)")
    parser.add_argument("--seed", type=int,
                        help="the seed of the contenders' order in each round (default: a "
                             "new one, printed, so that a run's order can be repeated)")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    kind = DATABASES[args.database]
    results = REPO / "bench" / "results"
    args.out = args.out or results / f"{kind.results_name}.json"
    args.plot = args.plot or results / f"{kind.results_name}.png"

    contenders: list[Contender] = [
        ("single UPDATE", single_update, False),
        (BARE, keyset_loop, False),
        ("keyset loop + checkpoint row (SQL, 5k)", resumable_keyset_loop, False),
        (SET_BASED, chunkwise("0002", fixed=True), False),
        (TWIN, chunkwise("0002", fixed=True), False),
        ("chunkwise set-based (5k, metrics)", chunkwise("0002", fixed=True, metrics=True),
         False),
        ("chunkwise set-based (5k, yield CPU)", chunkwise("0002", fixed=True, yield_cpu=True),
         False),
        ("chunkwise set-based (auto-tuned)", chunkwise("0002", fixed=False), False),
        (SHARDS, chunkwise("0002", fixed=True, shards=2), False),
        ("chunkwise transform (5k fixed)", chunkwise("0003", fixed=True), False),
        ("chunkwise transform (auto-tuned)", chunkwise("0003", fixed=False), False),
        ("chunkwise transform (5k, 2 shards)", chunkwise("0003", fixed=True, shards=2), False),
        ("Django bulk_update (1k)", django_code("bulk_update"), True),
        ("Django save() per row", django_code("save"), True),
    ]
    names = ["pinned", "shared"] if args.topology == "both" else [args.topology]
    topologies = [Topology.of(name) for name in names]
    measured: list[Measured] = []
    memory: list[dict[str, Any]] = []
    order = random.Random(args.seed)
    log(f"contenders in a new order each round, seed {args.seed}")
    with kind.running() as database:
        log(f"seeding {args.rows:,} rows on {database.label}")
        seed(database, "seed", args.rows)
        copies = Copies(database, "seed")
        for topology in ([] if args.memory_only else topologies):
            measured.append(measure(args, database, copies, contenders, topology, order))
        if args.memory_rows:
            topologies[0].apply(database)
            memory = memory_check(args, database)
    if args.memory_only:
        for m in memory:
            print(f"{m['path']:10} {int(m['rows']):>12,} rows  peak RSS {m['rss_mb']:7.1f} MB")
        return
    report(args, measured, memory)


def memory_check(args: argparse.Namespace, database: BenchDatabase) -> list[dict[str, Any]]:
    """The runner's peak RSS at --rows and at --memory-rows, fixed 5k batches: memory
    must not grow with the table (the auto-tuner may pick bigger batches on bigger
    tables, which is a different question)."""
    memory: list[dict[str, Any]] = []
    for rows in (args.rows, args.memory_rows):
        if rows != args.rows:
            log(f"seeding {rows:,} rows for the memory check")
            database.drop("memseed")
            seed(database, "memseed", rows)
        template = "seed" if rows == args.rows else "memseed"
        for migration in ("0002", "0003"):
            mem_copies = Copies(database, template)
            mem_copies.n = 1000 + len(memory)
            db = mem_copies.make()
            _, _, rss = chunkwise(migration, fixed=True)(database, db, rows)
            mem_copies.drop(db)
            memory.append({"rows": rows, "path": "set-based" if migration == "0002"
                           else "transform", "rss_mb": round(rss or 0, 1)})
            log(f"memory: {rows:,} rows {memory[-1]['path']}: peak RSS {rss:.0f} MB")
    return memory


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


@dataclass(frozen=True)
class Target:
    text: str
    #: measured / needed: met at >= 1
    ratio: float
    shown: str
    #: the measure whose noise floor judges it (a field of Noise), None: judged as it is
    noisy_in: str | None = None

    def verdict(self, noise: Noise) -> str:
        """met or MISSED beyond the run's noise floor for its measure, else "within noise"
        (with the side it fell on)."""
        floor = getattr(noise, self.noisy_in) if self.noisy_in else 1.0
        if self.ratio >= floor:
            return "met"
        if self.ratio < 1 / floor:
            return "MISSED"
        return "~met" if self.ratio >= 1.0 else "~missed"

#: how much more the runner's peak RSS may be at --memory-rows than at --rows: "flat"
RSS_GROWTH = 1.1


def targets(m: Measured, memory: list[dict[str, Any]], reporter_seconds: float
            ) -> list[Target]:
    results, impacts = m.results, m.impacts
    pinned = m.topology.name == "pinned"
    rate = {name: r.rows_per_second for name, r in results.items()}
    cpu = {name: r.db_cpu_per_mrows for name, r in results.items()}
    update, keyset, bulk = rate["single UPDATE"], rate[BARE], rate["Django bulk_update (1k)"]
    transform = max(rate["chunkwise transform (5k fixed)"],
                    rate["chunkwise transform (auto-tuned)"])
    idle = impacts[IDLE].write_p99_ms
    worst_p99 = max(i.write_p99_ms for n, i in impacts.items() if n.startswith("chunkwise"))
    batch_seconds = BATCH / rate[SET_BASED]

    def faster(text: str, ratio: float, needed: float) -> Target:
        return Target(text, ratio / needed, f"{ratio:.2f}x", "speed")

    def cheaper(text: str, name: str, than: str, most: float) -> Target:
        """The database CPU per million rows of ``name`` at most ``most`` x ``than``'s."""
        ratio = cpu[name] / cpu[than]
        return Target(text, most / ratio, f"{ratio:.2f}x ({cpu[name]:.2f} s against "
                      f"{cpu[than]:.2f} s per million rows)", "db_cpu")

    def writers_vs_keyset(text: str, name: str) -> Target:
        """The writers' p99 under ``name`` over the bare loop's, all runs' writes pooled."""
        ratio = impacts[name].write_p99_ms / impacts[BARE].write_p99_ms
        return Target(text, 1.2 / ratio, f"{ratio:.2f}x ({impacts[name].write_p99_ms:.2f} ms "
                      f"against {impacts[BARE].write_p99_ms:.2f} ms)", "writers_p99")

    found: list[Target] = [
        faster("set-based (5k fixed) >= 0.9x bare keyset loop", rate[SET_BASED] / keyset, 0.9),
        writers_vs_keyset("writers' p99, set-based 5k <= 1.2x the bare loop's", SET_BASED),
        cheaper("database CPU, set-based 5k <= 1.15x single UPDATE's", SET_BASED,
                "single UPDATE", 1.15),
        cheaper("database CPU, set-based 5k <= the bare loop's", SET_BASED, BARE, 1.0),
        faster(f"transform >= {0.6 if pinned else 0.7}x single UPDATE", transform / update,
               0.6 if pinned else 0.7),
        faster("transform >= 15x bulk_update", transform / bulk, 15.0),
        # pinned, the database has one CPU, which one UPDATE already keeps busy: a second
        # shard cannot add CPU there, only must not cost any; unpinned it can
        faster("set-based, 2 shards >= 1.0x 1 shard", rate[SHARDS] / rate[SET_BASED], 1.0)
        if pinned else
        faster("set-based, 2 shards >= 1.3x single UPDATE", rate[SHARDS] / update, 1.3),
    ]
    by_path = {(m["path"], m["rows"]): m["rss_mb"] for m in memory}
    growth = [by_path[(path, big)] / by_path[(path, small)]
              for path in ("set-based", "transform")
              for small, big in [sorted({rows for p, rows in by_path if p == path})]
              if small != big] if memory else []
    if growth:
        sizes = sorted({int(m["rows"]) for m in memory})
        found.append(Target(
            f"runner's peak RSS flat from {sizes[0]:,} to {sizes[-1]:,} rows "
            f"(<= {RSS_GROWTH}x)", RSS_GROWTH / max(growth),
            f"{max(growth):.2f}x at most ("
            + ", ".join(f"{m['path']} {int(m['rows']):,}: {m['rss_mb']:.0f} MB"
                        for m in memory) + ")"))
    found += [
        faster("set-based (5k, yield CPU) >= 0.9x bare keyset loop",
               rate["chunkwise set-based (5k, yield CPU)"] / keyset, 0.9),
        faster("set-based (auto-tuned) >= 1.0x single UPDATE",
               rate["chunkwise set-based (auto-tuned)"] / update, 1.0),
        writers_vs_keyset("writers' p99, set-based 5k, yield CPU <= 1.2x the bare loop's",
                          "chunkwise set-based (5k, yield CPU)"),
        Target("writers' p99 while chunkwise runs <= 5x idle", 5.0 / (worst_p99 / idle),
               f"{worst_p99 / idle:.1f}x idle", "writers_p99"),
        Target("metrics cost <= 2% of a set-based batch",
               0.02 / max(reporter_seconds / batch_seconds, 1e-12),
               f"{100 * reporter_seconds / batch_seconds:.3f}%"),
    ]
    return found


def report(args: argparse.Namespace, measured: list[Measured],
           memory: list[dict[str, Any]]) -> None:
    reporter_seconds = metrics_cost_per_batch()
    judged: dict[str, list[Target]] = {}
    for m in measured:
        judged[m.topology.name] = report_one(args, m, memory, reporter_seconds)
    if len(measured) > 1:
        names = list(judged)
        noises = [m.noise for m in measured]
        print("\ntargets side by side: " + " | ".join(names))
        for row in zip(*judged.values(), strict=True):
            texts = dict.fromkeys(t.text for t in row)  # one text where they agree
            print(f"  {' / '.join(texts):64} " + " | ".join(
                f"{t.verdict(noise)} {t.shown.split(' (')[0]}"
                for t, noise in zip(row, noises, strict=True)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = [as_json(args, m, memory, judged[m.topology.name]) for m in measured]
    args.out.write_text(json.dumps({**data[0], "other_topologies": data[1:]}, indent=2))
    if not args.no_plot:
        for m in measured:
            path = args.plot if m is measured[0] else \
                args.plot.with_name(f"{args.plot.stem}-{m.topology.name}{args.plot.suffix}")
            plot(path, m)


def as_json(args: argparse.Namespace, m: Measured, memory: list[dict[str, Any]],
            judged: list[Target]) -> dict[str, object]:
    return {
        "database": m.database.label, "rows": args.rows, "repeat": args.repeat,
        "cores": os.cpu_count(),
        "topology": {"name": m.topology.name, "runner_cpus": sorted(m.topology.runner),
                     "server_cpus": sorted(m.topology.server), "described": m.described},
        "results": [asdict(r) | {"rows_per_second": r.rows_per_second}
                    for r in m.results.values()],
        "impact": [{k: v for k, v in asdict(i).items() if k not in ("timeline", "read_ms")}
                   for i in m.impacts.values()],
        "memory": memory,
        "seed": args.seed,
        "noise_floor": asdict(m.noise),
        "targets": [{"target": t.text, "met": t.ratio >= 1.0, "verdict": t.verdict(m.noise),
                     "shown": t.shown, "judged_against": t.noisy_in} for t in judged],
    }


def report_one(args: argparse.Namespace, m: Measured, memory: list[dict[str, Any]],
               reporter_seconds: float) -> list[Target]:
    results, impacts = m.results, m.impacts
    update = results["single UPDATE"].rows_per_second
    keyset = results[BARE].rows_per_second
    print(f"\nchunkwise benchmark: {args.rows:,} rows, {m.database.label}, "
          f"{os.cpu_count()} cores, median of {args.repeat} interleaved runs (samples: 1 run)")
    print(m.described + "\n")
    print(f"contenders in a new random order each round (seed {args.seed}; --seed "
          f"{args.seed} repeats it)")
    update_cpu = results["single UPDATE"].db_cpu_per_mrows
    print(f"{'contender':42} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'vs UPDATE':>9} "
          f"{'vs keyset':>9} {'runs: min-max s':>16} {'DB CPU s/Mrows':>14} "
          f"{'vs UPDATE':>9} {'RSS MB':>7}")
    for r in results.values():
        label = r.name + (" [sample]" if r.sample else "")
        rss = f"{r.rss_mb:7.0f}" if r.rss_mb else f"{'':7}"
        spread = f"{min(r.runs):.2f}-{max(r.runs):.2f}"
        print(f"{label:42} {r.rows:>10,} {r.seconds:8.2f} {r.rows_per_second:10,.0f} "
              f"{r.rows_per_second / update:8.2f}x {r.rows_per_second / keyset:8.2f}x "
              f"{spread:>16} {r.db_cpu_per_mrows:14.2f} "
              f"{r.db_cpu_per_mrows / update_cpu:8.2f}x {rss}")
    noise = m.noise
    print(f"\nnoise floor of this run (the A/A twins, identical work under two names): speed "
          f"{noise.speed:.3f}x, database CPU {noise.db_cpu:.3f}x, writers' p99 "
          f"{noise.writers_p99:.3f}x apart")
    print(f"\nlive traffic: {args.connections} connections x {args.rate:.0f} ops/s, "
          "half single-row UPDATEs, half reads, on random rows; each contender's "
          f"{args.repeat} runs' operations pooled (an idle window in every round)")
    print(f"{'while running':42} {'write p50':>9} {'write p99':>9} {'runs p99 min-max':>16} "
          f"{'write max':>9} {'read p99':>8} {'ops/s':>6} {'p99/idle':>8} {'p99/loop':>8} "
          f"{m.database.lock_waits_heading:>17}")
    idle, loop = impacts[IDLE].write_p99_ms, impacts[BARE].write_p99_ms
    for i in impacts.values():
        spread = f"{min(i.run_write_p99_ms):.2f}-{max(i.run_write_p99_ms):.2f}"
        print(f"{i.name:42} {i.write_p50_ms:8.2f}m {i.write_p99_ms:8.2f}m {spread:>15}m "
              f"{i.write_max_ms:8.1f}m {i.read_p99_ms:7.2f}m {i.ops_per_second:6.0f} "
              f"{i.write_p99_ms / idle:7.2f}x {i.write_p99_ms / loop:7.2f}x "
              f"{i.lock_waits:>6} of {i.writes:>6}")
    if memory:
        print("\nchunkwise runner peak RSS (5k-row batches)")
        for mem in memory:
            print(f"  {mem['path']:10} {int(mem['rows']):>12,} rows  {mem['rss_mb']:7.1f} MB")
    set_based = results[SET_BASED].rows_per_second
    batch_seconds = BATCH / set_based
    with_metrics = results["chunkwise set-based (5k, metrics)"].rows_per_second
    print(f"\nmetrics: the reporter costs {reporter_seconds * 1e6:.1f} us per batch, "
          f"{100 * reporter_seconds / batch_seconds:.3f}% of a {batch_seconds * 1e3:.1f} ms "
          f"set-based batch; end to end with /metrics served: {with_metrics / set_based:.3f}x")
    found = targets(m, memory, reporter_seconds)
    print(f"\ntargets ({m.topology.name} topology, this run; ~: within the noise floor of "
          "the target's measure, so neither met nor missed beyond it)")
    for target in found:
        print(f"  {target.verdict(noise):8} {target.text}: {target.shown}")
    resumable = results["keyset loop + checkpoint row (SQL, 5k)"].rows_per_second
    print(f"  (what resuming costs by hand: the keyset loop with a checkpoint row runs at "
          f"{resumable / keyset:.2f}x the bare loop; set-based 5k runs at "
          f"{set_based / resumable:.2f}x the loop with a checkpoint row)")
    transform_shards = results["chunkwise transform (5k, 2 shards)"].rows_per_second
    print(f"  (the transform targets count one shard; with 2 shards the transform runs at "
          f"{transform_shards / update:.2f}x single UPDATE)")
    return found


#: a style per contender: colours that differ from one another and from the black and grey
#: of the references (idle, the bare loop), and a line style on top
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#000080", "#e6ab02", "#637939"]
_LINES = ["-", "--", "-.", ":"]


def plot(path: Path, m: Measured) -> None:
    """Speed bars, and the writers' latency per contender as an empirical CDF (log x;
    the y axis stretched at the tail, so p99 and p99.9 are read off at a glance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    results, impacts = m.results, m.impacts
    fig, (bars, cdf) = plt.subplots(2, 1, figsize=(13, 12),
                                    gridspec_kw={"height_ratios": [1, 1.6]})
    names = list(results)
    bars.barh(names, [results[n].rows_per_second for n in names],
              color=["#1f77b4" if n.startswith("chunkwise") else "#999999" for n in names])
    for y, n in enumerate(names):
        bars.text(results[n].rows_per_second, y, f" {results[n].rows_per_second:,.0f}",
                  va="center", fontsize=7)
    bars.set_xlabel("rows/s (higher is better); median of the runs")
    bars.invert_yaxis()
    bars.tick_params(axis="y", labelsize=8)
    bars.set_title(f"Speed, same change on the same data ({m.topology.name} topology)")
    others = sorted((n for n in impacts if n not in (IDLE, BARE)),
                    key=lambda n: impacts[n].write_p99_ms)
    styles = {IDLE: ("black", "-", 2.6), BARE: ("#555555", "--", 2.6)}
    for index, name in enumerate(others):
        styles[name] = (_COLOURS[index % len(_COLOURS)], _LINES[index % len(_LINES)], 1.4)
    for name in [IDLE, BARE, *others]:
        writes = sorted(ms for _, ms in impacts[name].timeline)
        if not writes:
            continue
        colour, line, width = styles[name]
        share = [(k + 0.5) / len(writes) for k in range(len(writes))]
        cdf.plot(writes, share, color=colour, linestyle=line, linewidth=width,
                 label=f"{name}: p99 {impacts[name].write_p99_ms:.2f} ms")
    cdf.set_xscale("log")
    cdf.set_xlim(left=0.8 * min(ms for i in impacts.values() for _, ms in i.timeline))
    cdf.set_yscale("logit")
    cdf.set_ylim(0.3, 0.9995)
    shares = [0.5, 0.9, 0.99, 0.999]
    cdf.set_yticks(shares, ["p50", "p90", "p99", "p99.9"])
    cdf.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    cdf.axhline(0.99, color="#aaaaaa", linewidth=0.8, linestyle=":")
    cdf.set_xlabel("application write (single-row UPDATE) latency, ms, log scale")
    cdf.set_ylabel("percentile of the writes (stretched at the tail)")
    cdf.set_title(f"Writers' latency while each contender runs, all {impacts[IDLE].runs} "
                  "runs' writes pooled (further right = slower)")
    cdf.grid(True, which="both", alpha=0.25)
    cdf.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), handlelength=3.5,
               title="idle and the bare loop, then by p99", title_fontsize=8)
    fig.text(0.01, 0.005, m.described, fontsize=7.5)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
