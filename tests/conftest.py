"""Shared fixtures: throwaway PostgreSQL and MariaDB servers and the lab Django project."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support.mariaserver import MariaDbServer, running_mariadb
from tests.support.pgserver import PgServer, running_server

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "tests" / "labproject"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    with running_server() as server:
        yield server


class LabServer(Protocol):
    def env(self, database: str) -> dict[str, str]:
        """The variables the lab's settings read to reach ``database`` on this server."""
        ...


def lab_env(server: LabServer, database: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, **server.env(database), "DJANGO_SETTINGS_MODULE": "labsite.settings"}
    env["PYTHONPATH"] = os.pathsep.join([str(LAB), str(REPO / "operator"),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def migrate_lab(server: LabServer, database: str) -> None:
    """The lab tables (migration 0001) and chunkwise's tables in ``database``."""
    env = lab_env(server, database)
    for target in (["lab", "0001"], ["chunkwise"]):
        subprocess.run([sys.executable, str(LAB / "manage.py"), "migrate", *target, "-v0"],
                       env=env, check=True)


@pytest.fixture(scope="session")
def lab_template(pg: PgServer) -> str:
    """A database with the lab tables (migration 0001) and chunkwise's tables."""
    pg.sql("CREATE DATABASE lab_template")
    migrate_lab(pg, "lab_template")
    return "lab_template"


@pytest.fixture(scope="session")
def django_setup(pg: PgServer) -> None:
    os.environ.update(lab_env(pg, "postgres"))
    sys.path.insert(0, str(LAB))
    import django

    django.setup()


class LabDatabase(ABC):
    """A database with the lab project's tables on a throwaway server: the lab's manage.py
    run against it, and SQL on it (``%s`` placeholders, as both drivers take them)."""

    server: LabServer
    name: str

    def env(self, **extra: str) -> dict[str, str]:
        return lab_env(self.server, self.name, **extra)

    def manage(
        self, *args: str, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(LAB / "manage.py"), *args], env=self.env(**env),
                              capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(LAB / "manage.py"), *args],
                                env=self.env(**env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    @abstractmethod
    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """The rows of one statement, on a connection of its own (autocommit)."""

    @abstractmethod
    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        """One statement, on a connection of its own (autocommit)."""


@dataclass
class LabDb(LabDatabase):
    """On the PostgreSQL server, through psycopg."""

    server: PgServer
    name: str

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.server.dsn(self.name), autocommit=True) as conn:
            return list(conn.execute(sql.encode(), params).fetchall())

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        import psycopg

        with psycopg.connect(self.server.dsn(self.name), autocommit=True) as conn:
            conn.execute(sql.encode(), params)


@pytest.fixture
def lab_db(pg: PgServer, lab_template: str, django_setup: None) -> Iterator[LabDb]:
    from django.db import connections

    name = f"lab_{os.getpid()}_{next(_names)}"
    pg.sql(f"CREATE DATABASE {name} TEMPLATE {lab_template}")
    connections["default"].close()
    connections["default"].settings_dict["NAME"] = name
    try:
        yield LabDb(pg, name)
    finally:
        connections["default"].close()
        pg.sql(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def maria() -> Iterator[MariaDbServer]:
    with running_mariadb() as server:
        yield server


@pytest.fixture(scope="session")
def maria_lab_template(maria: MariaDbServer) -> str:
    """On MariaDB, a database with the lab tables (migration 0001) and chunkwise's tables."""
    maria.sql("CREATE DATABASE lab_template")
    migrate_lab(maria, "lab_template")
    return "lab_template"


@dataclass
class MariaLabDb(LabDatabase):
    """On the MariaDB server, through mysqlclient (MySQLdb), in autocommit mode."""

    server: MariaDbServer
    name: str

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        return self._run(sql, params)

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        self._run(sql, params)

    def _run(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        # without parameters MySQLdb takes a % in the statement as it is
        return self.server.sql(sql, self.name, params or None)


@pytest.fixture
def maria_lab_db(maria: MariaDbServer, maria_lab_template: str) -> Iterator[MariaLabDb]:
    """A fresh copy of the MariaDB lab template for one test, dropped afterwards. The
    Django of the test process itself stays on PostgreSQL: run the lab through manage()
    and popen(), which point it at this database."""
    name = f"lab_{os.getpid()}_{next(_names)}"
    maria.clone_database(maria_lab_template, name)
    try:
        yield MariaLabDb(maria, name)
    finally:
        maria.drop_database(name)
