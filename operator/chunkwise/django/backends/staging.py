"""PostgreSQL with psycopg 3: a transform's batch written back through a binary COPY into
a temporary table and one ``UPDATE ... FROM`` it, rather than arrays bound to the UPDATE.

psycopg builds a bound array element by element in Python; COPY formats each row in C.
For a 5k-row batch with its rows' versions, the write-back and its commit took 27.4 ms
this way against 33.3 ms with arrays, side by side in one run (bench/writeback_forms.py;
bench/README.md). The UPDATE's plan is the same hash join either way.

The table is the session's own (``TEMPORARY``), one per shape of write-back (the columns
and their types), made ``ON COMMIT DELETE ROWS``: each transaction finds it empty. It is
created if missing in each batch's transaction (``IF NOT EXISTS``), so a batch rolled
back, a new connection or a pooler that hands out another server session find it again.
Only a batch's own write-back stages, once per transaction (the target's, never
``batch.write``, which code may call more than once). Where the role may not create
temporary tables, or a column's type has no binary COPY format psycopg knows, the arrays
are bound as before.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Sequence
from typing import Any

__all__ = ["stage_and_update", "stageable"]

#: per psycopg connection: whether its role may create temporary tables (asked once)
_may_stage: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
#: PostgreSQL's oid of xid, the rows' versions' type: psycopg has no binary dumper for it
_XID = 28
#: integer columns are staged as bigint, and narrowed by the UPDATE's assignment, which
#: refuses a value out of the column's range (22003) as the arrays' cast does: psycopg's
#: C COPY writer puts an int into int4 or int2 by its low bits, without a word (2**40
#: was stored as 0); into int8 it raises OverflowError past its range
_WIDENED = {"smallint": "bigint", "integer": "bigint", "int2": "bigint", "int4": "bigint"}


def stageable(raw: Any, types: Sequence[str], versions: bool) -> bool:
    """Whether a write-back of columns of ``types`` (element types) can stage on the
    psycopg 3 connection ``raw``: its role may create temporary tables, and psycopg has
    a binary COPY format for each type."""
    from psycopg.pq import Format

    types = [_WIDENED.get(kind, kind) for kind in types]
    allowed = _may_stage.get(raw)
    if allowed is None:
        allowed = bool(raw.execute("SELECT has_database_privilege(current_database(), "
                                   "'TEMPORARY')", prepare=False).fetchone()[0])
        _may_stage[raw] = allowed
        if allowed:
            _register_xid(raw)
    if not allowed:
        return False
    try:
        for name in types:
            info = raw.adapters.types.get(name)
            if info is None:
                return False
            raw.adapters.get_dumper_by_oid(info.oid, Format.BINARY)
    except Exception:  # psycopg: no dumper for it
        return False
    return True


def stage_and_update(raw: Any, table: str, key_column: str, columns: Sequence[str],
                     values: Sequence[list[Any]], bounds: str, bound_params: Sequence[Any],
                     types: Sequence[str], versions: Sequence[str] | None,
                     version_column: str) -> int:
    """Copy ``values`` (lists by column, the key's first) into the session's staging
    table, then set ``columns[1:]`` of ``table``'s rows from it in one UPDATE (only rows
    still at their version, with ``versions``), within ``bounds``; how many it wrote."""
    import psycopg

    names, kinds = list(columns), [_WIDENED.get(kind, kind) for kind in types]
    if versions is not None:
        names, kinds = [*names, version_column], [*kinds, "xid"]
    stage = "chunkwise_writeback_" + hashlib.blake2b(
        repr((table, names, kinds)).encode(), digest_size=6).hexdigest()
    assignments = ", ".join(f"{column} = v.{column}" for column in columns[1:])
    checked = f" AND {table}.xmin = v.{version_column}" if versions is not None else ""
    rows = zip(*values, *([versions] if versions is not None else []), strict=True)
    with psycopg.Cursor(raw) as cursor:
        cursor.execute(  # one schema lookup when it is there (a NOTICE, which nobody reads)
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ("
            + ", ".join(f"{name} {kind}" for name, kind in zip(names, kinds, strict=True))
            + ") ON COMMIT DELETE ROWS", prepare=False)
        with cursor.copy(f"COPY {stage} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
                         ) as copy:
            copy.set_types(kinds)
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"UPDATE {table} SET {assignments} FROM {stage} AS v "
                       f"WHERE {key_column} = v.{columns[0]}{checked}{bounds}",
                       bound_params, prepare=False)
        return cursor.rowcount


def _register_xid(raw: Any) -> None:
    """A binary dumper for xid on ``raw``, found by oid only (the versions are read as
    text: the number, which xid's binary format holds in 4 bytes)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class XidBinaryDumper(Dumper):
        format = Format.BINARY
        oid = _XID

        def dump(self, obj: Any) -> bytes:
            return int(obj).to_bytes(4, "big")

    raw.adapters.register_dumper(None, XidBinaryDumper)
