"""Shared fixtures: a throwaway PostgreSQL server and the lab Django project."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.pgserver import PgServer, running_server

REPO = Path(__file__).resolve().parent.parent
LAB = REPO / "tests" / "labproject"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    with running_server() as server:
        yield server


def lab_env(server: PgServer, database: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, **server.env(database), "DJANGO_SETTINGS_MODULE": "labsite.settings"}
    env["PYTHONPATH"] = os.pathsep.join([str(LAB), str(REPO / "operator"),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def lab_template(pg: PgServer) -> str:
    """A database with the lab tables (migration 0001) and chunkwise's tables."""
    pg.sql("CREATE DATABASE lab_template")
    env = lab_env(pg, "lab_template")
    for target in (["lab", "0001"], ["chunkwise"]):
        subprocess.run([sys.executable, str(LAB / "manage.py"), "migrate", *target, "-v0"],
                       env=env, check=True)
    return "lab_template"


@pytest.fixture(scope="session")
def django_setup(pg: PgServer) -> None:
    os.environ.update(lab_env(pg, "postgres"))
    sys.path.insert(0, str(LAB))
    import django

    django.setup()


@dataclass
class LabDb:
    server: PgServer
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
