"""Bad input to chunkwise_run: one line naming the problem, exit 64 (usage), no
traceback, nothing written. (A second runner, exit 69, is tested on PostgreSQL.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.django.test_sqlite import shop

CASES = [
    (["shop", "0002", "--bogus"], "unrecognized arguments: --bogus"),
    (["shop", "0002", "--batch-size", "abc"], "batch.size (--batch-size): expected an integer"),
    (["shop", "0002", "--lock-timeout", "2 seconds"], "timeouts.lock (--lock-timeout)"),
    (["shop", "0002", "--batch-size", "0"], "batch.size: expected an integer >= 1, got 0"),
    (["shop", "0002", "--max-locked-fraction", "1.5"], "batch.maxLockedFraction"),
    (["shop", "0999"], "There is no migration for 'shop' with the prefix '0999'"),
    (["nosuchapp", "0002"], "There is no migration for 'nosuchapp'"),
    (["shop", "0002", "--operation", "3"], "--operation: expected the index of a "
                                           "BatchedRunPython operation"),
    (["shop", "0001"], "--operation: shop.0001_initial has 0 BatchedRunPython operations"),
    (["shop", "0002", "--direction", "sideways"], "argument --direction: invalid choice"),
    (["shop", "0003", "--direction", "backward"], "has none (it is irreversible)"),
    (["shop", "0002", "--database", "replica"], "--database: no database alias 'replica'"),
    (["shop", "0002", "--metrics-port", "http"], "--metrics-port (CHUNKWISE_METRICS_PORT)"),
    ([], "app_label and migration_name are required"),
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad-input") / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "100"]):
        assert shop(path, *args).returncode == 0
    return path


@pytest.mark.parametrize(("args", "message"), CASES, ids=[m for _, m in CASES])
def test_bad_input_is_one_line_exit_64_and_writes_nothing(db: Path, args: list[str],
                                                          message: str) -> None:
    result = shop(db, "chunkwise_run", *args)
    assert result.returncode == 64, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM chunkwise_checkpoint").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM shop_customer WHERE status IS NOT NULL"
                            ).fetchone() == (0,)
