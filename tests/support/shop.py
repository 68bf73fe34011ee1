"""The example shop project, as the tests run it: one place for its environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHOP = REPO / "examples" / "shop"


def shop_env(database: Mapping[str, str], *pythonpath: Path) -> dict[str, str]:
    """This process's environment without what other tests put in it (libpq variables,
    CHUNKWISE_*, a settings module), plus ``database`` (libpq variables for PostgreSQL,
    or SHOP_SQLITE_PATH) and the package on PYTHONPATH (after ``pythonpath``)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "CHUNKWISE_")) and k != "DJANGO_SETTINGS_MODULE"}
    env.update(database)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (*pythonpath, REPO / "operator"))
    return env
