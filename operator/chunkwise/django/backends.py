"""The databases chunkwise runs on: PostgreSQL in production, SQLite for local runs.

Anything else is refused before a batch starts (system check chunkwise.E003, and the
run itself), not half-way through: the batch loop relies on PostgreSQL's lock and
statement timeouts and SQLSTATEs, and on SQLite's single writer; MySQL's and Oracle's
locking, error codes and DDL differ in ways it does not handle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connections

__all__ = ["SUPPORTED_VENDORS", "backend_problem", "set_local", "vendor_of"]

SUPPORTED_VENDORS = ("postgresql", "sqlite")
_NAMES = {"mysql": "MySQL/MariaDB", "oracle": "Oracle", "postgresql": "PostgreSQL",
          "sqlite": "SQLite"}


def vendor_of(alias: str) -> str:
    """The backend's vendor; from the ENGINE path when the backend cannot load (a missing
    driver), which Django reports itself on first use."""
    try:
        return str(connections[alias].vendor)
    except Exception:  # ImproperlyConfigured: no driver; say what the settings ask for
        engine: Any = connections.settings.get(alias, {}).get("ENGINE", "")
        return str(engine).rsplit(".", 1)[-1]


def backend_problem(alias: str) -> str:
    """Why batched migrations cannot run on ``alias``, or "" if they can."""
    vendor = vendor_of(alias)
    if vendor in SUPPORTED_VENDORS:
        return ""
    engine = connections.settings.get(alias, {}).get("ENGINE", "?")
    return (f"database {alias!r} is {_NAMES.get(vendor, vendor)} ({engine}): chunkwise runs "
            f"batched migrations on PostgreSQL (production) and SQLite (local runs) only")


def set_local(settings: Mapping[str, str]) -> tuple[str, list[str]]:
    """PostgreSQL: select-list items that set ``settings`` for the rest of the transaction
    (``SET LOCAL``, as ``set_config(name, value, true)``), and their parameters; what a
    statement of its own or one that also reads something puts after its SELECT."""
    items = ", ".join(["set_config(%s, %s, true)"] * len(settings))
    return items, [part for item in settings.items() for part in item]
