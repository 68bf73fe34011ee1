"""PostgreSQL with psycopg 3: a transform's batch written back through a binary COPY into
a temporary table and one ``UPDATE ... FROM`` it, rather than arrays bound to the UPDATE.

psycopg builds a bound array element by element in Python; COPY formats each row in C.
Side by side in one run, the write-back of a 5k-row batch and its commit took 1.2x less
time this way (bench/writeback_forms.py; bench/README.md, "The write-back"). The
UPDATE's plan is the same hash join either way.

The table is the session's own (``pg_temp``), one per shape of write-back (the table,
columns and types), made ``ON COMMIT DELETE ROWS``: each transaction finds it empty. It
is created if missing in each batch's transaction (``IF NOT EXISTS``), so a batch rolled
back, a new connection or a pooler that hands out another server session find it again.
The first time on a connection it is created inside a savepoint: where that fails (no
``TEMPORARY`` privilege, a ``temp_tablespaces`` the role may not use, a server without
temporary tables), the connection binds arrays from then on, and no batch fails for it.

Only a batch's own write-back stages, and only outside savepoints, so its rows are the
only ones in the table when the UPDATE reads it: code may call ``batch.write`` more than
once in a transaction, and a plan's samples share one transaction, each in a savepoint.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = ["register_xid", "stage_and_update"]

#: per psycopg connection: whether it stages (its first staging table could be created)
_stages: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
#: PostgreSQL's oid of xid, the rows' versions' type: psycopg has no binary dumper for it
_XID = 28
#: staged wider, narrowed by the UPDATE's assignment, which refuses a value out of the
#: column's range (22003) as the arrays' cast does: psycopg's C COPY writer puts an int
#: into int4 or int2 by its low bits without a word (2**40 was stored as 0), and a
#: double into float4 as C converts it; into int8 it raises OverflowError past its range
_WIDENED = {"smallint": "bigint", "integer": "bigint", "real": "double precision"}


def stage_and_update(connection: BaseDatabaseWrapper, table: str, key_column: str,
                     columns: Sequence[str], values: Sequence[list[Any]], bounds: str,
                     bound_params: Sequence[Any], types: Sequence[str],
                     versions: Sequence[str] | None, version_column: str,
                     assignments: str) -> int | None:
    """Copy ``values`` (lists by column, the key's first; ``types`` their element types)
    into the session's staging table, then set ``assignments`` (``column = v.column``)
    of ``table``'s rows from it in one UPDATE (only rows still at their version, with
    ``versions``), within ``bounds``; how many it wrote. None, having done nothing, where
    this connection cannot stage or psycopg has no binary COPY format for a type: the
    caller binds arrays."""
    import psycopg
    from psycopg.pq import Format

    raw = connection.connection
    names, kinds = list(columns), [_WIDENED.get(kind, kind) for kind in types]
    if versions is not None:
        names, kinds = [*names, version_column], [*kinds, "xid"]
    try:
        for kind in kinds:  # a type psycopg cannot put in binary COPY format: arrays
            if kind != "xid":  # whose dumper is ours (register_xid)
                raw.adapters.get_dumper_by_oid(raw.adapters.types[kind].oid, Format.BINARY)
    except (KeyError, psycopg.ProgrammingError):
        return None
    stage = "pg_temp.chunkwise_writeback_" + hashlib.blake2b(
        repr((table, names, kinds)).encode(), digest_size=6).hexdigest()
    create = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ("
              + ", ".join(f"{name} {kind}" for name, kind in zip(names, kinds, strict=True))
              + ") ON COMMIT DELETE ROWS")
    if not _created(connection, raw, create):
        return None
    checked = f" AND {table}.xmin = v.{version_column}" if versions is not None else ""
    rows = zip(*values, *([versions] if versions is not None else []), strict=True)
    with psycopg.Cursor(raw) as cursor:
        with cursor.copy(f"COPY {stage} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
                         ) as copy:
            copy.set_types(kinds)
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"UPDATE {table} SET {assignments} FROM {stage} AS v "
                       f"WHERE {key_column} = v.{columns[0]}{checked}{bounds}",
                       bound_params, prepare=False)
        return cursor.rowcount


def _created(connection: BaseDatabaseWrapper, raw: Any, create: str) -> bool:
    """Create the staging table if missing; False if this connection cannot (found out
    the first time, in a savepoint, so the batch goes on)."""
    import psycopg

    stages = _stages.get(raw)
    if stages is None:
        try:
            with transaction.atomic(using=connection.alias):  # a savepoint in the batch's
                with psycopg.Cursor(raw) as cursor:
                    cursor.execute(create, prepare=False)
        except (DatabaseError, psycopg.Error):
            stages = False
        else:
            stages = True
            register_xid(raw)
        _stages[raw] = stages
        return stages
    if stages:
        with psycopg.Cursor(raw) as cursor:  # one lookup when it is there (a NOTICE)
            cursor.execute(create, prepare=False)
    return stages


def register_xid(raw: Any) -> None:
    """A binary dumper for xid on the psycopg connection ``raw``, found by oid only (the
    versions are read as text: the number, which xid's binary format holds in 4 bytes)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class XidBinaryDumper(Dumper):
        format = Format.BINARY
        oid = _XID

        def dump(self, obj: Any) -> bytes:
            return int(obj).to_bytes(4, "big")

    raw.adapters.register_dumper(None, XidBinaryDumper)
