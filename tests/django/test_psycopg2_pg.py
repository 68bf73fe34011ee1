"""The driver is the application's choice: the shop example on PostgreSQL through psycopg2.

Django takes psycopg 3 whenever it can import it, and the test environment has it, so
the run happens in a subprocess where ``import psycopg`` fails, as in an application
that only installed psycopg2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pgserver import PgServer
from tests.support.shop import SHOP, shop_env

pytestmark = pytest.mark.postgres


def test_shop_migrates_exactly_once_through_psycopg2(pg: PgServer, tmp_path: Path) -> None:
    hidden = tmp_path / "no_psycopg3" / "psycopg"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('psycopg 3 hidden by the test')\n")
    pg.sql("CREATE DATABASE shop_psycopg2")
    env = shop_env(pg.env("shop_psycopg2"), hidden.parent)

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SHOP / "manage.py"), *args, "-v0"], env=env,
                              cwd=SHOP, capture_output=True, text=True, timeout=300)

    driver = manage("shell", "-c", "from django.db import connection; "
                                   "print(connection.Database.__name__)")
    assert driver.stdout.strip() == "psycopg2", driver.stderr
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "3000"]):
        assert manage(*args).returncode == 0
    result = manage("migrate", "shop")  # 0002 set-based, 0003 per-row transform
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL through psycopg2, text fetch" in result.stderr
    rows = manage("shell", "-c", "import json; from shop.models import Customer as C; "
                                 "from django.db.models import Count, Min, Max; "
                                 "print(json.dumps(list(C.objects.values('status').annotate("
                                 "n=Count('id'), lo=Min('visits'), hi=Max('visits')))))")
    assert rows.returncode == 0, rows.stderr
    groups = json.loads(rows.stdout)
    assert {g["status"] for g in groups} == {"active", "inactive"}
    assert sum(g["n"] for g in groups) == 3000
    assert all(g["lo"] == g["hi"] == 1 for g in groups)  # the per-row transform: exactly once
