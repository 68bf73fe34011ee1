"""A throwaway MariaDB server for tests and benchmarks, as pgserver.py is for PostgreSQL.

Uses the Debian packages' binaries (``scripts/setup`` installs ``mariadb-server-core``,
10.11 on bookworm; no system service is started): ``mariadb-install-db`` makes a data
directory in a temporary directory, ``mariadbd`` serves it on a free loopback port, and
it is killed and removed afterwards. As root the server runs as root (``--user=root``),
which mariadbd allows when asked explicitly. Every server writes a binary log and has
its own ``server_id``, so a replica (``running_mariadb_replica``) can follow it with GTID.
The client side is mysqlclient (``MySQLdb``), Django's recommended driver.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.pgserver import free_port

__all__ = ["INNODB_VIEW_EVERY", "MariaDbServer", "find_mariadbd", "running_mariadb",
           "running_mariadb_replica"]

#: how often a poll may read InnoDB's information_schema views (INNODB_TRX,
#: INNODB_LOCK_WAITS): InnoDB refreshes their cache only when it was last read more than
#: 0.1 s ago, and every read counts, so a tighter loop sees the first answer for ever
INNODB_VIEW_EVERY = 0.15

#: what a real server would have but a throwaway one does not need: each line is safe
#: under a killed ``mariadbd`` (only an operating system crash would lose commits), as
#: pgserver's ``fsync = off`` is for PostgreSQL
_OPTIONS = {
    "innodb-buffer-pool-size": "128M",
    "innodb-flush-log-at-trx-commit": "2",  # the redo log reaches the OS at commit, unsynced
    "innodb-doublewrite": "0",
    "sync-binlog": "0",
    # Debian's packaged my.cnf says utf8mb4; --no-defaults would leave latin1
    "character-set-server": "utf8mb4",
    "collation-server": "utf8mb4_general_ci",
    "skip-name-resolve": "1",  # no reverse lookup per connection: root@127.0.0.1 matches
}
_server_ids = itertools.count(1)


def find_mariadbd() -> tuple[Path, Path]:
    """``mariadbd`` and ``mariadb-install-db`` from Debian's mariadb-server-core."""
    found = [shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
             for name in ("mariadbd", "mariadb-install-db")]
    if found[0] is None or found[1] is None:
        raise RuntimeError("MariaDB server binaries not found (mariadbd, mariadb-install-db); "
                           "run scripts/setup, which installs Debian's mariadb-server-core")
    return Path(found[0]), Path(found[1])


def _os_user() -> str:
    """Whom mariadbd runs as: root only when asked by name, else the current user."""
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass
class MariaDbServer:
    host: str
    port: int
    user: str
    datadir: Path
    socket: Path
    server_id: int
    #: the server's error log (startup, shutdown, crash recovery, replication errors)
    log: Path
    #: how to start mariadbd on this data directory again
    command: list[str] = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None, "the server is not running"
        return self.process.pid

    def connect(self, database: str | None = None, **options: Any) -> Any:
        """A MySQLdb connection over TCP, in autocommit mode unless ``options`` say not."""
        import MySQLdb

        arguments: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user,
                                     "password": "", "charset": "utf8mb4", "autocommit": True}
        if database is not None:
            arguments["database"] = database
        arguments.update(options)
        return MySQLdb.connect(**arguments)

    def sql(self, statement: str, database: str | None = None,
            params: tuple[object, ...] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of its own (autocommit) and return its rows
        (none for a statement without a result set). ``params`` fill ``%s`` placeholders;
        without them a ``%`` in the statement is taken as it is."""
        conn = self.connect(database)
        try:
            cursor = conn.cursor()
            cursor.execute(statement, params)
            return list(cursor.fetchall() or ())
        finally:
            conn.close()

    def row(self, statement: str, database: str | None = None) -> dict[str, Any] | None:
        """The first row of ``statement`` by column name (``SHOW SLAVE STATUS``), or None."""
        import MySQLdb.cursors

        conn = self.connect(database)
        try:
            cursor = conn.cursor(MySQLdb.cursors.DictCursor)
            cursor.execute(statement)
            found: dict[str, Any] | None = cursor.fetchone()
            return found
        finally:
            conn.close()

    def env(self, database: str) -> dict[str, str]:
        """What the lab's settings read (tests/labproject/labsite/settings.py)."""
        return {"LAB_DATABASE": "mariadb", "MARIADB_HOST": self.host,
                "MARIADB_PORT": str(self.port), "MARIADB_USER": self.user,
                "MARIADB_DATABASE": database}

    def start(self, timeout: float = 60) -> None:
        """Start mariadbd (again) and return once it answers."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        self._wait_until_answering(timeout)

    def stop(self, timeout: float = 60) -> None:
        """A clean shutdown (SIGTERM: sessions are closed, open transactions rolled back,
        InnoDB flushed), waited for."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL by PID, as a crash: the next start() runs InnoDB's crash recovery."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def clone_database(self, template: str, name: str) -> None:
        """A new database ``name`` with ``template``'s tables (their indexes, foreign keys
        and AUTO_INCREMENT counters) and rows. MariaDB has no CREATE DATABASE ... TEMPLATE;
        CREATE TABLE ... LIKE would drop the foreign keys, so each table is made from its
        SHOW CREATE TABLE, with the foreign key checks off so that the order is free."""
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                           "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                           (template,))
            charset, collation = cursor.fetchone()
            cursor.execute("SELECT TABLE_NAME FROM information_schema.TABLES "
                           "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'", (template,))
            tables = [table for (table,) in cursor.fetchall()]
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET {charset} "
                           f"COLLATE {collation}")
            cursor.execute("SET SESSION foreign_key_checks = 0")
            cursor.execute(f"USE `{name}`")
            for table in tables:
                cursor.execute(f"SHOW CREATE TABLE `{template}`.`{table}`")
                cursor.execute(cursor.fetchone()[1])
            for table in tables:
                cursor.execute(f"INSERT INTO `{table}` SELECT * FROM `{template}`.`{table}`")
        finally:
            conn.close()

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending the sessions that use it first (a runner a test left
        behind would hold a metadata lock and make DROP wait), as PostgreSQL's
        DROP DATABASE ... WITH (FORCE) does."""
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT ID FROM information_schema.PROCESSLIST "
                           "WHERE DB = %s AND ID <> CONNECTION_ID()", (name,))
            for (session,) in cursor.fetchall():
                with contextlib.suppress(Exception):  # it may have ended on its own
                    cursor.execute(f"KILL {int(session)}")
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()

    def replica_status(self) -> dict[str, Any]:
        """This replica's SHOW SLAVE STATUS (MariaDB 10.11 also says SHOW REPLICA STATUS)."""
        status = self.row("SHOW SLAVE STATUS")
        assert status is not None, f"the server on port {self.port} is not a replica"
        return status

    def catch_up(self, primary: MariaDbServer, timeout: float = 30) -> None:
        """Wait until this replica has applied everything ``primary`` has committed so far
        (MASTER_GTID_WAIT on the primary's binary log position, with a deadline)."""
        [(position,)] = primary.sql("SELECT @@gtid_binlog_pos")
        [(result,)] = self.sql("SELECT MASTER_GTID_WAIT(%s, %s)", params=(position, timeout))
        if result != 0:
            raise RuntimeError(
                f"the replica on port {self.port} did not reach the primary's GTID "
                f"{position!r} in {timeout}s: {self._replication_errors()}")

    def _replication_errors(self) -> str:
        status = self.replica_status()
        return (f"Slave_IO_Running={status['Slave_IO_Running']} "
                f"Slave_SQL_Running={status['Slave_SQL_Running']} "
                f"Last_IO_Error={status['Last_IO_Error']!r} "
                f"Last_SQL_Error={status['Last_SQL_Error']!r}")

    def _wait_until_answering(self, timeout: float) -> None:
        import MySQLdb

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited with status {self.process.returncode} "
                                   f"while starting: {self._log_tail()}")
            try:
                self.sql("SELECT 1")
                return
            except MySQLdb.OperationalError:  # not listening yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not answer on port {self.port} within "
                                       f"{timeout}s: {self._log_tail()}") from None
                time.sleep(0.05)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {self.log})"


@contextlib.contextmanager
def _serving(prefix: str, options: Mapping[str, str] | None) -> Iterator[MariaDbServer]:
    """A new data directory in a temporary directory, served by mariadbd until the
    block ends; then killed (a throwaway server has nothing to flush) and removed."""
    mariadbd, install_db = find_mariadbd()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    datadir, log = root / "data", root / "mariadbd.log"
    user = _os_user()
    try:
        subprocess.run([str(install_db), "--no-defaults", f"--datadir={datadir}",
                        f"--user={user}", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], check=True, capture_output=True, text=True)
        port, server_id = free_port(), next(_server_ids)
        settings = {**_OPTIONS,
                    "server-id": str(server_id),
                    # the binary log, for a replica; outside datadir so it stays small to list
                    "log-bin": str(root / "binlog"),
                    "relay-log": str(root / "relay"),
                    **(options or {})}
        command = [str(mariadbd), "--no-defaults", f"--datadir={datadir}",
                   f"--socket={root / 'mariadbd.sock'}", f"--port={port}",
                   "--bind-address=127.0.0.1", f"--user={user}",
                   f"--pid-file={root / 'mariadbd.pid'}", f"--log-error={log}",
                   *(f"--{name}={value}" for name, value in settings.items())]
        server = MariaDbServer("127.0.0.1", port, "root", datadir, root / "mariadbd.sock",
                               server_id, log, command)
        try:
            server.start()
            yield server
        finally:
            server.kill()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_mariadb(options: Mapping[str, str] | None = None) -> Iterator[MariaDbServer]:
    """A MariaDB server on a free loopback port, user root without a password.
    ``options``: mariadbd's own, without the dashes (``{"performance-schema": "ON"}``),
    over the defaults above."""
    with _serving("chunkwise-maria-", options) as server:
        yield server


@contextlib.contextmanager
def running_mariadb_replica(primary: MariaDbServer, options: Mapping[str, str] | None = None,
                            timeout: float = 60) -> Iterator[MariaDbServer]:
    """A second mariadbd replicating from ``primary`` with GTID: it starts from an empty
    GTID position, so it replays ``primary``'s whole binary log (every database made since
    it started) before it is caught up. Returns once both replication threads run; use
    ``replica.catch_up(primary)`` to wait for a given write. It reports every second
    (MASTER_HEARTBEAT_PERIOD), so Seconds_Behind_Master follows it closely."""
    with _serving("chunkwise-maria-replica-", options) as replica:
        replica.sql(f"CHANGE MASTER TO MASTER_HOST='{primary.host}', "
                    f"MASTER_PORT={primary.port}, MASTER_USER='{primary.user}', "
                    "MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, "
                    "MASTER_HEARTBEAT_PERIOD=1")
        replica.sql("START SLAVE")
        deadline = time.monotonic() + timeout
        while True:
            status = replica.replica_status()
            if status["Slave_IO_Running"] == "Yes" and status["Slave_SQL_Running"] == "Yes":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica on port {replica.port} never started "
                                   f"following port {primary.port}: "
                                   f"{replica._replication_errors()} (see {replica.log})")
            time.sleep(0.05)
        yield replica
