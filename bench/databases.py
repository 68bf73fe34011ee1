"""The databases bench/run.py measures on, each behind the same small interface.

A ``BenchDatabase`` is one running throwaway server and everything bench/run.py needs
from it that differs between databases: how to start it, seed the table and make fresh
copies of the seeded database, the hand-written contenders' SQL in the database's own
dialect, chunkwise's own figures from its checkpoint table, the application traffic's
connection, the writers' lock waits, and the server's processes (or threads) to pin.
Everything else in bench/run.py is the same on every database.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tests.support.mariaserver import MariaDbServer, running_mariadb
from tests.support.pgserver import PgServer, running_server

from traffic import APPLICATION_NAME as TRAFFIC

TABLE = "benchapp_customer"
BATCH = 5000


@dataclass(frozen=True)
class KeysetSql:
    """The hand-written keyset loops' statements in one database's dialect; ``%s`` marks
    a parameter. A batch: ``lock_progress`` (with a checkpoint row only), ``next_upper``
    (or ``last_upper`` for the last, short batch), ``update``, ``advance_progress`` (with
    a checkpoint row only), then a commit."""

    #: the key BATCH rows past the given one: the batch's last key
    next_upper: str
    #: the largest key past the given one: the last batch's last key
    last_upper: str
    #: the change itself, on the keys in (lower, upper]
    update: str
    #: made once, before the clock starts
    create_progress: tuple[str, ...] = ()
    #: the batch's timeouts bounded, and the progress row locked and read (last column)
    lock_progress: str = ""
    #: the progress row advanced (the batch's last key, its rows), in the batch's transaction
    advance_progress: str = ""


class BenchDatabase(ABC):
    """One running throwaway server of a database, as bench/run.py uses it."""

    #: the database's name, as the tables print it
    label: ClassVar[str]
    #: the results' file names under bench/results/ (``latest.json``, ``mariadb.png``)
    results_name: ClassVar[str]
    #: what the traffic table's lock-wait column counts
    lock_waits_heading: ClassVar[str]
    #: the cutoff of benchapp.logic.CUTOFF as a literal of this database
    cutoff: ClassVar[str]

    @classmethod
    @abstractmethod
    def running(cls) -> contextlib.AbstractContextManager[BenchDatabase]:
        """A new server, stopped and removed when the block ends."""

    @property
    def case(self) -> str:
        """The change every contender makes, in SQL (benchapp.logic.classify)."""
        return (f"CASE WHEN last_login IS NULL OR last_login < {self.cutoff} THEN 'inactive' "
                "ELSE 'active' END")

    @property
    def single_update(self) -> str:
        return f"UPDATE {TABLE} SET status = {self.case}"

    # -- the server ------------------------------------------------------------------------

    @abstractmethod
    def env(self, database: str) -> dict[str, str]:
        """What bench/benchproject's settings read to reach ``database``."""

    @abstractmethod
    def connect(self, database: str, autocommit: bool = False
                ) -> contextlib.AbstractContextManager[Any]:
        """A DB-API connection to ``database`` (closed when the block ends), in the
        isolation level Django's backend for the database gives its connections."""

    @abstractmethod
    def create(self, database: str) -> None:
        """An empty database, for manage.py migrate to fill."""

    @abstractmethod
    def fill(self, database: str, rows: int) -> None:
        """``rows`` customers, ids 1..rows, in the migrated ``database``, then statistics."""

    @abstractmethod
    def copy(self, template: str, database: str) -> None:
        """A new ``database`` with ``template``'s tables and rows."""

    @abstractmethod
    def drop(self, database: str) -> None:
        """Drop ``database`` if it exists, ending the sessions still on it."""

    @abstractmethod
    def keyset_sql(self, checkpoint: bool) -> KeysetSql:
        """The hand-written loop's statements; ``checkpoint``: with a progress row."""

    @abstractmethod
    def chunkwise_figures(self, conn: Any) -> tuple[int, float]:
        """From chunkwise's checkpoint table: the rows every shard processed, and the
        seconds from the first shard's start to the last one's end."""

    # -- the traffic -----------------------------------------------------------------------

    @abstractmethod
    def traffic_args(self, database: str) -> list[str]:
        """bench/traffic.py's arguments that say where its connections go."""

    @abstractmethod
    def lock_wait_mark(self) -> int:
        """Taken before the traffic on a copy starts: what writer_lock_waits() counts from."""

    @abstractmethod
    def writer_lock_waits(self, database: str, mark: int) -> int:
        """The lock waits the traffic's writers in ``database`` had since ``mark``."""

    # -- the topology ----------------------------------------------------------------------

    @abstractmethod
    def server_tasks(self) -> list[int]:
        """The server's processes or threads, by id, to pin with sched_setaffinity; the
        ones the server starts later inherit their starter's CPUs."""

    @abstractmethod
    def new_session_cpus(self) -> str:
        """Where a new session of the server runs, as the kernel says: "PostgreSQL (a new
        backend: CPU 1)"."""

    # -- the cost -----------------------------------------------------------------------------

    @abstractmethod
    def server_cpu_seconds(self) -> float:
        """CPU seconds the server has used so far, every process or thread of it (the
        ones gone included), as the kernel counts them: what a contender cost a shared
        database is the difference across its run."""


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command, from the state on (field 3); None
    when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    return stat.rsplit(")", 1)[1].split()


def _parent_of(pid: int) -> int:
    fields = _stat(pid)
    return -1 if fields is None else int(fields[1])


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(fields: list[str], reaped_children: bool) -> float:
    """utime + stime (fields 14, 15), with ``reaped_children`` their cutime + cstime (16,
    17): the CPU of its children that exited and were waited for."""
    ticks = sum(int(fields[i]) for i in ((11, 12, 13, 14) if reaped_children else (11, 12)))
    return ticks / _TICK


def cpu_list(cpus: frozenset[int] | set[int]) -> str:
    return ",".join(map(str, sorted(cpus)))


class PostgreSQL(BenchDatabase):
    """PostgreSQL (tests/support/pgserver.py), through psycopg."""

    label = "PostgreSQL"
    results_name = "latest"
    lock_waits_heading = "lock waits >1ms"
    cutoff = "timestamptz '2025-01-01 00:00:00+00'"

    #: server settings under which every lock wait over 1 ms is logged, with the database
    #: and application it came from: what writer_lock_waits() reads
    LOCK_WAIT_LOG: ClassVar[dict[str, str]] = {"log_lock_waits": "on", "deadlock_timeout": "1ms",
                                               "log_line_prefix": "%d %a "}

    def __init__(self, server: PgServer) -> None:
        self.server = server

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[BenchDatabase]:
        with running_server(cls.LOCK_WAIT_LOG) as server:
            yield cls(server)

    def env(self, database: str) -> dict[str, str]:
        return self.server.env(database)

    def connect(self, database: str, autocommit: bool = False
                ) -> contextlib.AbstractContextManager[Any]:
        import psycopg

        return psycopg.connect(self.server.dsn(database), autocommit=autocommit)

    def create(self, database: str) -> None:
        self.server.sql(f"CREATE DATABASE {database}")

    def fill(self, database: str, rows: int) -> None:
        import psycopg

        with psycopg.connect(self.server.dsn(database), autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO {TABLE} (id, email, last_login, status, touched) "
                "SELECT g, 'customer' || g || '@example.com', "
                "timestamptz '2026-01-01 00:00:00+00' - (g::bigint * 7919 %% 1095) * "
                "interval '1 day', NULL, 0 FROM generate_series(1, %s) g", (rows,))
            conn.execute(f"VACUUM ANALYZE {TABLE}")

    def copy(self, template: str, database: str) -> None:
        self.server.sql(f"CREATE DATABASE {database} TEMPLATE {template}")

    def drop(self, database: str) -> None:
        self.server.sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    def keyset_sql(self, checkpoint: bool) -> KeysetSql:
        statements = KeysetSql(
            next_upper=f"SELECT id FROM {TABLE} WHERE id > %s ORDER BY id "
                       f"OFFSET {BATCH - 1} LIMIT 1",
            last_upper=f"SELECT max(id) FROM {TABLE} WHERE id > %s",
            update=f"UPDATE {TABLE} SET status = {self.case} WHERE id > %s AND id <= %s")
        if not checkpoint:
            return statements
        # the timeouts for this transaction (set_config(..., true) is SET LOCAL), set in
        # the statement that locks and reads the progress row, as chunkwise does
        return KeysetSql(
            statements.next_upper, statements.last_upper, statements.update,
            create_progress=("CREATE TABLE bench_progress (id int PRIMARY KEY, last_id bigint, "
                             "rows bigint)", "INSERT INTO bench_progress VALUES (1, 0, 0)"),
            lock_progress="SELECT set_config('lock_timeout', '5000ms', true), "
                          "set_config('statement_timeout', '600000ms', true), "
                          "last_id FROM bench_progress WHERE id = 1 FOR UPDATE",
            advance_progress="UPDATE bench_progress SET last_id = %s, rows = rows + %s "
                             "WHERE id = 1")

    def chunkwise_figures(self, conn: Any) -> tuple[int, float]:
        done, seconds = conn.execute(
            "SELECT sum(rows_processed), extract(epoch FROM max(completed_at) - "
            "min(started_at)) FROM chunkwise_checkpoint").fetchone()
        return int(done), float(seconds)

    def traffic_args(self, database: str) -> list[str]:
        return ["--dsn", self.server.dsn(database)]

    def lock_wait_mark(self) -> int:
        return 0  # every copy's database has a name of its own in the log

    def writer_lock_waits(self, database: str, mark: int) -> int:
        """Lock waits of the traffic's writes in ``database`` that outlasted
        deadlock_timeout (1 ms), as a server with LOCK_WAIT_LOG logged them."""
        with open(self.server.datadir.parent / "postgres.log", errors="replace") as log:
            return sum(1 for line in log if line.startswith(f"{database} {TRAFFIC} ")
                       and "still waiting for" in line)

    def server_tasks(self) -> list[int]:
        """The postmaster and the processes it has forked (checkpointer, backends, ...);
        new backends are forked by the postmaster and inherit its CPUs."""
        postmaster = int((self.server.datadir / "postmaster.pid").read_text().split()[0])
        return [postmaster, *self._children(postmaster)]

    def server_cpu_seconds(self) -> float:
        """The postmaster's CPU, its reaped children's (backends that exited: cutime), and
        its live children's. Read again until no child exited meanwhile, so that a backend
        reaped between two reads is counted once: a run's own backend holds most of it."""
        postmaster = int((self.server.datadir / "postmaster.pid").read_text().split()[0])
        while True:
            before = self._children(postmaster)
            own = _stat(postmaster)
            children = {pid: _stat(pid) for pid in before}
            if own is None:
                raise RuntimeError("the PostgreSQL server stopped")
            if self._children(postmaster) == before and all(children.values()):
                return _cpu_seconds(own, reaped_children=True) + sum(
                    _cpu_seconds(fields, reaped_children=False)
                    for fields in children.values() if fields)

    @staticmethod
    def _children(postmaster: int) -> set[int]:
        return {int(entry) for entry in os.listdir("/proc")
                if entry.isdigit() and _parent_of(int(entry)) == postmaster}

    def new_session_cpus(self) -> str:
        import psycopg

        with psycopg.connect(self.server.dsn("postgres")) as conn:
            found = conn.execute("SELECT pg_backend_pid()").fetchone()
            backend = int(found[0]) if found else 0
            cpus = cpu_list(frozenset(os.sched_getaffinity(backend)))
        return f"PostgreSQL (a new backend: CPU {cpus})"


class MariaDB(BenchDatabase):
    """MariaDB (tests/support/mariaserver.py), through mysqlclient (MySQLdb): one process,
    mariadbd, with a thread per connection."""

    label = "MariaDB"
    results_name = "mariadb"
    lock_waits_heading = "row lock waits"
    # Django keeps DATETIME columns in UTC on MySQL and MariaDB
    cutoff = "TIMESTAMP '2025-01-01 00:00:00'"

    #: over mariaserver's throwaway settings: the seeded database and a copy in the buffer
    #: pool, and redo room for one UPDATE of the table without a forced checkpoint, as
    #: pgserver's shared_buffers and max_wal_size are for PostgreSQL
    OPTIONS: ClassVar[dict[str, str]] = {"innodb-buffer-pool-size": "512M",
                                         "innodb-log-file-size": "512M"}
    #: the transaction isolation of Django's MySQL backend (its "isolation_level" option's
    #: default), as chunkwise and the Django contenders run: the hand-written SQL too
    ISOLATION = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
    #: MariaDB has no SET LOCAL: the loop with a checkpoint row bounds each statement of
    #: its batch instead, in the statement itself (no round trip of its own)
    TIMEOUTS = "SET STATEMENT innodb_lock_wait_timeout = 5, max_statement_time = 600 FOR "

    def __init__(self, server: MariaDbServer) -> None:
        self.server = server

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[BenchDatabase]:
        with running_mariadb(cls.OPTIONS) as server:
            yield cls(server)

    def env(self, database: str) -> dict[str, str]:
        return {**self.server.env(database), "BENCH_DATABASE": "mariadb"}

    @contextlib.contextmanager
    def connect(self, database: str, autocommit: bool = False) -> Iterator[Any]:
        conn = self.server.connect(database, autocommit=autocommit,
                                   init_command=self.ISOLATION)
        try:
            yield conn
        finally:
            conn.close()

    def create(self, database: str) -> None:
        self.server.sql(f"CREATE DATABASE `{database}`")

    def fill(self, database: str, rows: int) -> None:
        # the Sequence engine's seq_1_to_N, as PostgreSQL's generate_series
        self.server.sql(
            f"INSERT INTO {TABLE} (id, email, last_login, status, touched) "
            "SELECT seq, CONCAT('customer', seq, '@example.com'), "
            "TIMESTAMP '2026-01-01 00:00:00' - INTERVAL (seq * 7919 % 1095) DAY, NULL, 0 "
            f"FROM seq_1_to_{int(rows)}", database)
        self.server.sql(f"ANALYZE TABLE {TABLE}", database)

    def copy(self, template: str, database: str) -> None:
        self.server.clone_database(template, database)  # no CREATE DATABASE ... TEMPLATE

    def drop(self, database: str) -> None:
        self.server.drop_database(database)

    def keyset_sql(self, checkpoint: bool) -> KeysetSql:
        bounded = self.TIMEOUTS if checkpoint else ""
        statements = KeysetSql(
            next_upper=f"{bounded}SELECT id FROM {TABLE} WHERE id > %s ORDER BY id "
                       f"LIMIT 1 OFFSET {BATCH - 1}",
            last_upper=f"{bounded}SELECT MAX(id) FROM {TABLE} WHERE id > %s",
            update=f"{bounded}UPDATE {TABLE} SET status = {self.case} "
                   "WHERE id > %s AND id <= %s")
        if not checkpoint:
            return statements
        return KeysetSql(
            statements.next_upper, statements.last_upper, statements.update,
            create_progress=("CREATE TABLE bench_progress (id int PRIMARY KEY, last_id bigint, "
                             "rows_done bigint) ENGINE=InnoDB",
                             "INSERT INTO bench_progress VALUES (1, 0, 0)"),
            lock_progress=f"{bounded}SELECT last_id FROM bench_progress WHERE id = 1 FOR UPDATE",
            advance_progress=f"{bounded}UPDATE bench_progress SET last_id = %s, "
                             "rows_done = rows_done + %s WHERE id = 1")

    def chunkwise_figures(self, conn: Any) -> tuple[int, float]:
        cursor = conn.cursor()
        cursor.execute("SELECT SUM(rows_processed), TIMESTAMPDIFF(MICROSECOND, "
                       "MIN(started_at), MAX(completed_at)) FROM chunkwise_checkpoint")
        done, microseconds = cursor.fetchone()
        return int(done), int(microseconds) / 1e6

    def traffic_args(self, database: str) -> list[str]:
        return ["--database", "mariadb", "--dsn",
                f"host={self.server.host} port={self.server.port} user={self.server.user} "
                f"dbname={database}"]

    def _row_lock_waits(self) -> int:
        [(_, waits)] = self.server.sql("SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_waits'")
        return int(waits)

    def lock_wait_mark(self) -> int:
        return self._row_lock_waits()

    def writer_lock_waits(self, database: str, mark: int) -> int:
        """InnoDB's row lock waits since ``mark``, of any length: MariaDB counts them for
        the whole server only (Innodb_row_lock_waits; no log of each wait, and no count per
        session), so this is every session's, the migration's own waits for a writer's row
        included. One copy is used at a time, so they are all this copy's."""
        return self._row_lock_waits() - mark

    def server_cpu_seconds(self) -> float:
        """mariadbd is one process: its CPU counts every thread's, the ones that ended too."""
        fields = _stat(self.server.pid)
        if fields is None:
            raise RuntimeError("the MariaDB server stopped")
        return _cpu_seconds(fields, reaped_children=False)

    def server_tasks(self) -> list[int]:
        """Every thread of mariadbd (taskset -a): the threads it starts later (a new
        connection's) inherit their starter's CPUs."""
        return [int(task) for task in os.listdir(f"/proc/{self.server.pid}/task")]

    def new_session_cpus(self) -> str:
        with self.connect("mysql") as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT TID FROM information_schema.PROCESSLIST "
                           "WHERE ID = CONNECTION_ID()")
            (thread,) = cursor.fetchone()
            cpus = cpu_list(frozenset(os.sched_getaffinity(int(thread))))
            every: set[int] = set()
            for task in self.server_tasks():
                with contextlib.suppress(ProcessLookupError):  # a thread that has ended
                    every |= os.sched_getaffinity(task)
        return (f"MariaDB (a new connection's thread: CPU {cpus}; all of mariadbd's threads: "
                f"CPU {cpu_list(every)})")


DATABASES: dict[str, type[BenchDatabase]] = {"postgresql": PostgreSQL, "mariadb": MariaDB}
