"""The per-row write-back on SQLite, the embedded default: keys of every kind."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from tests.django.test_retry_failed_sqlite import lab_on_sqlite, query


def test_a_transform_writes_back_rows_whose_key_is_a_uuid(tmp_path: Path) -> None:
    """Django reads a UUID key on SQLite as uuid.UUID, which sqlite3 cannot bind: the
    write-back must store it as Django does (32 hex digits), or every row fails."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    for target in (["chunkwise"], ["lab", "0001"]):
        assert lab("migrate", *target, "-v0").returncode == 0
    keys = [uuid.uuid4().hex for _ in range(250)]
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_uuiditem (id, counter) VALUES (?, 0)",
                         [(key,) for key in keys])
    result = lab("chunkwise_run", "lab", "0004", "--operation", "2")  # transform, UUID key
    assert result.returncode == 0, result.stderr
    assert query(db, "SELECT counter, count(*) FROM lab_uuiditem GROUP BY counter") == \
        [(1, 250)]
