"""Squashing batched migrations, round trip: squashmigrations over the shop's two
batched migrations, the functions ported as Django's comment asks and nothing else, then
migrate. The system check stops it before any row is touched, naming the fix (the
squashed migration is atomic); with that fix, it runs, every row exactly once."""

from __future__ import annotations

import ast
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support.shop import SHOP, shop_env


def port_functions(squashed: Path, migrations: Path) -> None:
    """What Django's comment asks: copy the functions of the listed migrations (and the
    imports they need) into the squashed file and refer to the local versions."""
    text = squashed.read_text()
    modules = re.findall(r"^#\s+(shop\.migrations\.\w+)$", text, flags=re.MULTILINE)
    assert modules, text
    copied = []
    for module in modules:
        source = (migrations / f"{module.rsplit('.', 1)[1]}.py").read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef):
                copied.append(ast.get_source_segment(source, node))
        text = text.replace(f"{module}.", "")
    head, sep, rest = text.partition("\n\nclass Migration")
    squashed.write_text(head + "\n\n" + "\n\n".join(c for c in copied if c) + "\n" + sep + rest)


def test_squashed_batched_migrations_are_stopped_by_the_check_then_run(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    shutil.copytree(SHOP, project, ignore=shutil.ignore_patterns("chart", "__pycache__"))
    db = tmp_path / "shop.sqlite3"

    def shop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(project / "manage.py"), *args],
                              env=shop_env({"SHOP_SQLITE_PATH": str(db)}), cwd=project,
                              capture_output=True, text=True, timeout=300)

    def rows() -> list[tuple[object, ...]]:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT status IS NULL, visits, count(*) FROM shop_customer "
                                "GROUP BY 1, 2").fetchall()

    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "500"]):
        assert shop(*args).returncode == 0
    squash = shop("squashmigrations", "shop", "0002", "0003", "--noinput")
    assert squash.returncode == 0, squash.stderr
    migrations = project / "shop" / "migrations"
    [squashed] = migrations.glob("0002_*_squashed_0003_*.py")
    assert "chunkwise.django.BatchedRunPython(" in squashed.read_text()
    port_functions(squashed, migrations)

    stopped = shop("migrate")
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr, stopped.stderr
    assert f"shop.{squashed.stem}: (chunkwise.E001)" in stopped.stderr
    assert (f"HINT: add `atomic = False` to the Migration class in shop/migrations/"
            f"{squashed.name}") in stopped.stderr
    assert "chunkwise.E005" not in stopped.stderr  # 0004 still finds 0002 by its full name
    assert rows() == [(1, 0, 500)]  # no row touched
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'shop'"
                            ).fetchone() == (1,)

    text = squashed.read_text()  # the fix the hint names, nothing else
    squashed.write_text(text.replace("class Migration(migrations.Migration):\n",
                                     "class Migration(migrations.Migration):\n"
                                     "    atomic = False\n", 1))
    done = shop("migrate")
    assert done.returncode == 0, done.stderr
    assert rows() == [(0, 1, 500)]  # every row has its status and one visit counted
    with sqlite3.connect(db) as conn:
        applied = {name for (name,) in conn.execute(
            "SELECT name FROM django_migrations WHERE app = 'shop'")}
    assert {squashed.stem, "0002_customer_status", "0003_count_visit",
            "0004_customer_status_required"} <= applied
