"""A throwaway PostgreSQL server for tests and benchmarks.

Uses the Debian packages' binaries (``scripts/setup`` installs them if missing),
initdb's a cluster in a temporary directory, starts it on a free loopback port
and stops and removes it afterwards. Root cannot run postgres, so as root the
server runs as the ``postgres`` system user the package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PgServer", "find_bindir", "free_port", "running_replica", "running_server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_bindir() -> Path:
    explicit = os.environ.get("CHUNKWISE_PG_BINDIR")
    candidates = [explicit] if explicit else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for candidate in candidates:
        if candidate and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin); "
        "run scripts/setup, which installs the Debian postgresql package"
    )


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    datadir: Path
    #: runs pg_ctl on this cluster with the given arguments (as the server's user)
    pg_ctl: Callable[[list[str]], object] | None = field(default=None, repr=False)

    def stop(self, mode: str = "fast") -> None:
        """Shut the server down (``fast``: roll back open transactions, close sessions)."""
        assert self.pg_ctl is not None
        self.pg_ctl(["-m", mode, "-w", "stop"])

    def start(self) -> None:
        assert self.pg_ctl is not None
        self.pg_ctl(["-l", str(self.datadir.parent / "postgres.log"), "-w", "-t", "60", "start"])

    def env(self, database: str) -> dict[str, str]:
        """libpq variables for a client (the shop example settings read these)."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user,
                "PGDATABASE": database, "PGPASSWORD": ""}

    def dsn(self, database: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.dsn(database), autocommit=True) as conn:
            conn.execute(statement.encode())  # a runtime-built statement: bytes


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    if os.geteuid() != 0:
        return [], None, None
    entry = pwd.getpwnam("postgres")
    return [], entry.pw_uid, entry.pw_gid


RunAs = Callable[..., "subprocess.CompletedProcess[str]"]


def _workdir(prefix: str) -> tuple[Path, RunAs]:
    """A directory the server's user owns, and a way to run commands as that user."""
    _, uid, gid = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix=prefix))
    if uid is not None:
        os.chown(root, uid, gid or -1)

    def run_as(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        def demote() -> None:
            if uid is not None:
                os.setgid(gid or 0)
                os.setuid(uid)
        result: subprocess.CompletedProcess[str] = subprocess.run(
            args, preexec_fn=demote, check=True, text=True, capture_output=True, **kwargs)
        return result

    return root, run_as


def _configure(datadir: Path, options: dict[str, str]) -> None:
    with open(datadir / "postgresql.conf", "a") as conf:  # later lines win
        for name, value in options.items():
            conf.write(f"{name} = '{value}'\n")


@contextlib.contextmanager
def _serving(root: Path, datadir: Path, port: int, user: str,
             run_as: RunAs, host: str = "127.0.0.1") -> Iterator[PgServer]:
    """Start the cluster in ``datadir``, wait until it answers, and remove it afterwards."""
    bindir = find_bindir()
    log = root / "postgres.log"
    try:
        run_as([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(log), "-w", "-t", "60",
                "start"])
        server = PgServer(host, port, user, datadir,
                          lambda args: run_as([str(bindir / "pg_ctl"), "-D", str(datadir),
                                               *args]))
        deadline = time.monotonic() + 30
        while True:
            try:
                server.sql("SELECT 1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(Exception):
            run_as([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_replica(primary: PgServer) -> Iterator[PgServer]:
    """A hot standby streaming from ``primary``: cloned with ``pg_basebackup -R`` (which
    writes the connection to the primary and standby.signal), started on its own port.
    It reports its replay position every second, so the primary's
    ``pg_stat_replication.replay_lag`` follows it closely."""
    bindir = find_bindir()
    root, run_as = _workdir("chunkwise-replica-")
    datadir = root / "data"
    run_as([str(bindir / "pg_basebackup"), "-D", str(datadir), "-h", primary.host,
            "-p", str(primary.port), "-U", primary.user, "-X", "stream", "-R",
            "--checkpoint=fast", "--no-sync"])
    port = free_port()
    _configure(datadir, {"port": str(port), "unix_socket_directories": str(root),
                         "hot_standby": "on", "wal_receiver_status_interval": "1s"})
    with _serving(root, datadir, port, primary.user, run_as) as replica:
        deadline = time.monotonic() + 30
        while not _streaming(primary):
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica on port {port} never started streaming "
                                   f"(see {root / 'postgres.log'})")
            time.sleep(0.1)
        yield replica


def _streaming(primary: PgServer) -> bool:
    import psycopg

    with psycopg.connect(primary.dsn("postgres"), autocommit=True) as conn:
        return bool(conn.execute("SELECT 1 FROM pg_stat_replication "
                                 "WHERE state = 'streaming'").fetchone())


@contextlib.contextmanager
def running_server(settings: dict[str, str] | None = None, address: str = "127.0.0.1",
                   clients: Sequence[str] = ()) -> Iterator[PgServer]:
    """``address``: where clients connect (loopback, or the node's address for pods, which
    the server then listens on too); ``clients``: networks let in without a password
    besides loopback (a pod network)."""
    bindir = find_bindir()
    root, run_as = _workdir("chunkwise-pg-")
    datadir = root / "data"
    port = free_port()
    user = "chunkwise"
    run_as([str(bindir / "initdb"), "-D", str(datadir), "-U", user, "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
    options = {
        "listen_addresses": ",".join(dict.fromkeys(["127.0.0.1", address])),
        "port": str(port),
        "unix_socket_directories": str(root),
        "fsync": "off",  # a test server: durability of the server itself is not under test
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "256MB",
        "max_connections": "100",
        "max_wal_size": "2GB",
        "log_min_messages": "warning",
    }
    options.update(settings or {})
    _configure(datadir, options)
    with open(datadir / "pg_hba.conf", "a") as hba:
        for network in [*clients, f"{address}/32"]:
            hba.write(f"host all all {network} trust\n")
    with _serving(root, datadir, port, user, run_as, host=address) as server:
        yield server
