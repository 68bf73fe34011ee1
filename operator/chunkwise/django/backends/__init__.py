"""The databases chunkwise runs on, each behind one interface: PostgreSQL and MariaDB/MySQL
in production, SQLite for local runs.

Everything the engine does differently on one of them lives in its class here (its
runner lock, the statement that locks a batch's checkpoint row with the batch's
timeouts, who holds a table's locks, the write-back's statement, its health figures),
and the code around asks the backend of the batch's database, never its vendor. Anything
else (Oracle, a third-party backend) is refused before a batch starts (system check
chunkwise.E003, and the run itself), not half-way through."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet

from chunkwise.engine import HealthProbe, Timeouts

__all__ = ["EXACT_COUNT_LIMIT", "SUPPORTED_VENDORS", "DatabaseBackend", "backend_for",
           "backend_problem", "vendor_of"]

#: above this many rows in the table (as the database's statistics say), the rows to do
#: are estimated from the planner's statistics instead of counted, where the backend can:
#: an exact count of a 100M-row table is minutes of sequential scan, for a figure that
#: only sizes an ETA
EXACT_COUNT_LIMIT = 1_000_000


class DatabaseBackend:
    """What chunkwise does on one kind of database. One instance per database alias; it
    asks Django's connection of the current thread each time (connections are
    per-thread)."""

    #: Django's ``connection.vendor``
    vendor: ClassVar[str]
    #: the database's name in messages
    name: ClassVar[str]
    #: batches lock their rows (so there is lock wait to measure, and a share of the
    #: table's rows a batch may lock); SQLite locks the whole file on write instead
    row_locks: ClassVar[bool] = False
    #: shards of one process can write at once (SQLite has one writer)
    parallel_writers: ClassVar[bool] = False
    #: batches run under timeouts.lock and timeouts.statement
    batch_timeouts: ClassVar[bool] = False
    #: set-based batches may skip the lock step while nothing contends: their UPDATEs
    #: lock the rows they change as they go and change each row's latest committed
    #: version (PostgreSQL's and InnoDB's writes alike), so no concurrent change is lost
    optimistic_set_based: ClassVar[bool] = False
    #: per-row transforms may skip it too: a write-back of a row another transaction
    #: changed since the batch read it is refused by the database itself (PostgreSQL's
    #: REPEATABLE READ, 40001; InnoDB's would overwrite the change)
    optimistic_transforms: ClassVar[bool] = False
    #: a row's version can be read and compared (PostgreSQL's xmin), so a transform's
    #: next batch can be read ahead on another connection and written back only where
    #: its rows are still as read (prefetch.py)
    row_versions: ClassVar[bool] = False
    #: statements that walk the key's index can be told to (PostgreSQL's planner settings)
    pins_key_order: ClassVar[bool] = False
    #: the most parameters one statement of a write-back may bind
    max_parameters: ClassVar[int] = 32_000
    #: keys can be bound as Django read them (a UUID key as uuid.UUID), with no
    #: get_db_prep_save() per key in the write-back
    binds_keys_as_read: ClassVar[bool] = False

    def __init__(self, alias: str) -> None:
        self.alias = alias

    @property
    def connection(self) -> BaseDatabaseWrapper:
        return connections[self.alias]

    def reset_settings(self) -> None:
        """Put back the session's own values of what apply_settings() set, where they
        outlive the batch's transaction (MySQL); the run's end calls it."""

    @property
    def psycopg3(self) -> bool:
        """Whether the connection is psycopg 3's, which reads and binds in binary format."""
        return False

    def describe(self) -> str:
        """What a run says about the database at its start, one line."""
        return f"{self.name}"

    def setting_items(self, settings: Mapping[str, str]) -> tuple[str, list[str]]:
        """Where pins_key_order: select-list items that set ``settings`` for the rest of
        the transaction, and their parameters, for a statement that also reads something."""
        raise NotImplementedError

    def current_settings(self, names: Sequence[str]) -> dict[str, str]:
        """Where pins_key_order: the session's own values of the settings ``names``."""
        raise NotImplementedError

    # -- the runner lock -----------------------------------------------------------------

    def try_lock(self, name: str) -> bool | None:
        """Take the session lock ``name`` without waiting: whether it was free; None where
        there are no such locks (SQLite)."""
        return None

    def unlock(self, name: str) -> None:
        """Let go of the session lock ``name``."""

    def lock_taken(self, name: str) -> bool | None:
        """Whether some session holds the lock ``name`` now; None where there is none."""
        return None

    @contextmanager
    def serialized(self, name: str) -> Iterator[None]:
        """Inside a transaction: one process at a time through the block (a split of an
        operation into shards), waiting for another that is in it."""
        yield

    # -- a batch ---------------------------------------------------------------------------

    def honoured(self, timeouts: Timeouts) -> Timeouts:
        """``timeouts`` as the database honours them (in its units)."""
        return timeouts

    def batch_settings(self, lock: float, statement: float) -> dict[str, str]:
        """The session settings that give a batch these timeouts (seconds)."""
        return {}

    def apply_settings(self, settings: Mapping[str, str]) -> None:
        """Set ``settings`` for the rest of the batch, in a statement of their own."""
        if settings:
            raise ValueError(f"{self.name} has no session settings to set: {dict(settings)}")

    def lock_checkpoint(self, table: str, columns: Sequence[str], checkpoint_id: int,
                        settings: Mapping[str, str]) -> tuple[Any, ...]:
        """The batch's first statement: the checkpoint row ``checkpoint_id`` of ``table``
        locked for the batch, with ``settings`` set for the rest of it; its ``columns``.
        Here: the settings first (so that the lock wait is under them), then the row."""
        self.apply_settings(settings)
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE id = %s "
                           "FOR UPDATE", [checkpoint_id])
            return tuple(cursor.fetchone())

    def lock_checkpoints(self, table: str, ids: Sequence[int],
                         settings: Mapping[str, str]) -> None:
        """As lock_checkpoint, for several rows (a retry of a sharded run's failed rows),
        in the order of their ids (two retries cannot deadlock)."""
        self.apply_settings(settings)
        marks = ", ".join(["%s"] * len(ids))
        with self.connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {table} WHERE id IN ({marks}) ORDER BY id "
                           "FOR UPDATE", list(ids))

    def for_update(self, rows: QuerySet[Any]) -> QuerySet[Any]:
        """``rows`` read with their row locks taken (as they are where there are none)."""
        return rows

    def lock_holders(self, table: str) -> str:
        """Who holds locks on ``table`` now, in one line; "" where that cannot be known."""
        return ""

    def health_probe(self, table: str) -> HealthProbe | None:
        """The probe of the database's health figures for a run on ``table``; None where
        it has none to throttle on."""
        return None

    def unreadable(self) -> dict[str, str]:
        """Tunables (by spec path) this database cannot honour, and why: refused when set."""
        return {}

    def non_transactional(self, tables: Sequence[str]) -> dict[str, str]:
        """Those of ``tables`` whose storage cannot roll back (MyISAM, Aria, MEMORY...),
        with their engine: a batch's rows and its checkpoint must commit together."""
        return {}

    def estimate_rows(self, rows: QuerySet[Any]) -> tuple[int, bool]:
        """How many ``rows`` there are, and whether that is an exact count."""
        return rows.count(), True

    # -- the write-back --------------------------------------------------------------------

    def update_from_values(self, table: str, key_column: str, columns: Sequence[str],
                           values: Sequence[list[Any]], bounds: str,
                           bound_params: Sequence[Any], binary: Sequence[bool],
                           types: Sequence[str], versions: Sequence[str] | None = None,
                           may_stage: bool = False) -> int:
        """One UPDATE (or as few as the parameter limit allows) setting ``columns[1:]`` of
        ``table``'s rows whose ``key_column`` is ``values[0]``'s to the other lists' values
        (lists by column, ``columns[0]`` the key's), within ``bounds`` (SQL ANDed to the
        WHERE clause, with ``bound_params``); how many rows it wrote. ``binary`` and
        ``types`` say per column whether it may be bound in binary format, and its array
        type, where the backend binds arrays. With ``versions`` (one per row, as
        row_version() read them; only where row_versions), a row whose version is no
        longer the one given is not written. ``may_stage``: a batch's own write-back, whose
        rows may go through a table of the session's own first (PostgreSQL, staging.py).
        """
        raise NotImplementedError

    def row_version(self, table: str) -> str:
        """SQL of a row's version in ``table``, as text (where row_versions)."""
        raise NotImplementedError(f"{self.name} has no row versions")

    def name_session(self, name: str) -> None:
        """Name the connection's session (this thread's) in the database's activity views
        ("" takes the name back)."""
        raise NotImplementedError(f"{self.name} names no helper sessions")

    def insert_values(self, table: str, columns: Sequence[str], values: Sequence[list[Any]],
                      returning: str | None, binary: Sequence[bool], types: Sequence[str]
                      ) -> tuple[int, list[Any] | None]:
        """Insert rows given by column (``values``) into ``table``'s ``columns``: (how
        many, the ``returning`` column of each, in order, when it is given and the
        database can return it: MySQL cannot, as bulk_create there cannot). Here: VALUES
        chunks of at most max_parameters, with RETURNING (SQLite, MariaDB)."""
        if returning is not None and \
                not self.connection.features.can_return_rows_from_bulk_insert:
            returning = None
        ending = f" RETURNING {returning}" if returning is not None else ""
        count, keys = 0, []
        for chunk, rows in self._chunks(values, 0):
            placeholders = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * rows)
            with self.connection.cursor() as cursor:
                cursor.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                               f"{placeholders}{ending}", chunk)
                if returning is not None:
                    keys += [row[0] for row in cursor.fetchall()]
            count += rows
        return count, keys if returning is not None else None

    def _chunks(self, values: Sequence[list[Any]], reserved: int
                ) -> list[tuple[list[Any], int]]:
        """The rows given by column (``values``) as chunks that each bind at most
        max_parameters less ``reserved``: (the flat parameters, row by row; how many rows)."""
        width = len(values)
        per_chunk = max(1, (self.max_parameters - reserved) // width)
        chunks = []
        for start in range(0, len(values[0]), per_chunk):
            rows = list(zip(*(column[start:start + per_chunk] for column in values), strict=True))
            chunks.append(([value for each in rows for value in each], len(rows)))
        return chunks


def vendor_of(alias: str) -> str:
    """The backend's vendor; from the ENGINE path when the backend cannot load (a missing
    driver), which Django reports itself on first use."""
    try:
        return str(connections[alias].vendor)
    except Exception:  # ImproperlyConfigured: no driver; say what the settings ask for
        engine: Any = connections.settings.get(alias, {}).get("ENGINE", "")
        return str(engine).rsplit(".", 1)[-1]


def _classes() -> dict[str, type[DatabaseBackend]]:
    from .mysql import MySQLBackend
    from .postgresql import PostgreSQLBackend
    from .sqlite import SQLiteBackend

    return {cls.vendor: cls for cls in (PostgreSQLBackend, MySQLBackend, SQLiteBackend)}


SUPPORTED_VENDORS = ("postgresql", "mysql", "sqlite")
_NAMES = {"mysql": "MySQL/MariaDB", "oracle": "Oracle", "postgresql": "PostgreSQL",
          "sqlite": "SQLite"}


def backend_for(alias: str) -> DatabaseBackend:
    """The backend of the database ``alias``; refused when chunkwise cannot run there."""
    problem = backend_problem(alias)
    if problem:  # a usage error (exit 64), as the system check chunkwise.E003 says it
        raise ImproperlyConfigured(problem)
    return _classes()[vendor_of(alias)](alias)


def backend_problem(alias: str) -> str:
    """Why batched migrations cannot run on ``alias``, or "" if they can."""
    vendor = vendor_of(alias)
    if vendor in SUPPORTED_VENDORS:
        return ""
    engine = connections.settings.get(alias, {}).get("ENGINE", "?")
    return (f"database {alias!r} is {_NAMES.get(vendor, vendor)} ({engine}): chunkwise runs "
            "batched migrations on PostgreSQL and MariaDB/MySQL (production) and SQLite "
            "(local runs) only")
