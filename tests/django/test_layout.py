"""Where a batched operation sits among migrations (issue 37, items 1 and 2): a layout that
would lose or repeat data is refused by the system checks, before migrate runs anything;
the layout the docs give keeps every value, deferred or not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.django.test_checks import errors_of
from tests.django.test_commands_bad_input import lab_on_sqlite


def seed_ports(db: Path, table: str, count: int) -> dict[int, str]:
    macs = {i: f"aa:bb:cc:dd:{i // 256:02x}:{i % 256:02x}" for i in range(1, count + 1)}
    with sqlite3.connect(db) as conn:
        conn.executemany(f"INSERT INTO {table} (id, mac_address) VALUES (?, ?)", macs.items())
    return macs


def test_layouts_that_lose_data_are_refused_before_migrate_runs_anything(
        tmp_path: Path) -> None:
    """AddField, BatchedRunPython and RemoveField in one migration (E008), and a RemoveField
    of the column a deferred step reads, with no EnsureBatchedComplete before it (E009).
    Deferred, the second ran ` OK`, exit 0, and every value was lost."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_LAYOUT="bad", CHUNKWISE_DEFER="1")
    result = lab("migrate", "--database", "lite")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    found = errors_of(result.stderr)
    assert set(found) == {"chunkwise.E008", "chunkwise.E009"}, result.stderr
    assert found["chunkwise.E008"][0] == (
        "network.0002_device_mac_in_one: (chunkwise.E008) operations 0 (AddField), 2 "
        "(RemoveField) change the schema in the same migration as a BatchedRunPython: after "
        "a crash or a halt, migrate runs them again and fails ('already exists'), and a "
        "deferred data step runs only after all of them")
    assert found["chunkwise.E008"][1].startswith(
        "HINT: split network/migrations/0002_device_mac_in_one.py into three migrations")
    assert found["chunkwise.E009"] == [
        "network.0005_drop_port_mac_address: (chunkwise.E009) operation 0 (RemoveField) "
        "changes network.Port, whose data network.0004_fill_port_mac_upper[0] migrates, and "
        "nothing ensures that data step is complete before it: when migrate defers a step "
        "(CHUNKWISE_DEFER), this runs first and the step finds its data gone or changed",
        "HINT: put EnsureBatchedComplete('network', '0004_fill_port_mac_upper') before it in "
        "network/migrations/0005_drop_port_mac_address.py (or in a migration it depends on: "
        "every later migration is then covered), or give the BatchedRunPython defer=False"]
    assert "Applying" not in result.stdout
    assert not db.exists() or db.stat().st_size == 0


def test_the_three_migration_layout_keeps_every_value_when_deferred(tmp_path: Path) -> None:
    """inventory: AddField; the BatchedRunPython alone; EnsureBatchedComplete, then the
    RemoveField. With CHUNKWISE_DEFER=1 migrate plans the data step and goes on, and the
    ensure finishes it inline before the column it reads is dropped."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_LAYOUT="good", CHUNKWISE_DEFER="1")
    assert lab("migrate", "--database", "lite", "inventory", "0001", "-v0").returncode == 0
    macs = seed_ports(db, "inventory_port", 700)
    result = lab("migrate", "--database", "lite", "inventory")
    assert result.returncode == 0, result.stderr
    assert "deferred inventory.0003_fill_port_mac_upper[0] (700 rows to do" in result.stdout
    with sqlite3.connect(db) as conn:
        assert dict(conn.execute("SELECT id, mac_upper FROM inventory_port")) == \
            {key: mac.upper() for key, mac in macs.items()}
        columns = [row[1] for row in conn.execute("PRAGMA table_info(inventory_port)")]
    assert columns == ["id", "mac_upper"]


def test_reverse_runpython_noop_migrates_backwards_without_a_batch(tmp_path: Path) -> None:
    """inventory 0003 gives reverse=migrations.RunPython.noop, as upstream migrations do:
    backwards, no batch runs and no row is recorded as failed (before: a TypeError for
    every row, recorded, then a halt, exit 65)."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_LAYOUT="good")
    assert lab("migrate", "--database", "lite", "inventory", "0002", "-v0").returncode == 0
    seed_ports(db, "inventory_port", 101)
    assert lab("migrate", "--database", "lite", "inventory", "0003").returncode == 0
    result = lab("migrate", "--database", "lite", "inventory", "0002")
    assert result.returncode == 0, result.stderr
    assert "Unapplying inventory.0003_fill_port_mac_upper... OK" in result.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM chunkwise_failedrow").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM inventory_port WHERE mac_upper IS NOT NULL"
                            ).fetchone() == (101,)


def test_rows_that_keep_matching_todo_on_purpose_are_not_reported_missed(
        tmp_path: Path) -> None:
    """A port without a MAC keeps mac_upper NULL, so it still matches todo after the run:
    verification reported it as missed (which reads as data loss) until done= named it."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_LAYOUT="good")
    assert lab("migrate", "--database", "lite", "inventory", "0002", "-v0").returncode == 0
    seed_ports(db, "inventory_port", 100)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE inventory_port SET mac_address = NULL WHERE id % 10 = 0")
    result = lab("migrate", "--database", "lite", "inventory", "0003")
    assert result.returncode == 0, result.stderr
    assert "verified: no row up to key 100 still matches todo" in result.stderr, result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT rows_remaining, rows_missed FROM chunkwise_checkpoint"
                            ).fetchall() == [(0, 0)]
        assert conn.execute("SELECT count(*) FROM inventory_port WHERE mac_upper IS NULL"
                            ).fetchone() == (10,)


def test_migrating_backwards_over_a_noop_reverse_lets_forward_run_again(
        tmp_path: Path) -> None:
    """Plain RunPython runs forward again after a migration was unapplied; a batched one
    with reverse=RunPython.noop said `done (AlreadyDone)` and left the rows as they were
    (found trying it as a new user)."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_LAYOUT="good")
    assert lab("migrate", "--database", "lite", "inventory", "0002", "-v0").returncode == 0
    seed_ports(db, "inventory_port", 50)
    for target in ("0003", "0002"):
        assert lab("migrate", "--database", "lite", "inventory", target).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE inventory_port SET mac_upper = NULL")
    again = lab("migrate", "--database", "lite", "inventory", "0003")
    assert again.returncode == 0 and "AlreadyDone" not in again.stderr, again.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM inventory_port WHERE mac_upper IS NULL"
                            ).fetchone() == (0,)


def test_a_misspelled_field_is_one_line_and_exit_64_not_a_retryable_traceback(
        tmp_path: Path) -> None:
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    for target in (["chunkwise"], ["mistakes", "0001"]):
        assert lab("migrate", "--database", "lite", *target, "-v0").returncode == 0
    result = lab("chunkwise_run", "mistakes", "0005", "--database", "lite")
    assert result.returncode == 64, result.stderr
    assert result.stderr.strip().splitlines() == [
        "CommandError: BatchedRunPython key or fields: Visit has no field named 'countr'"]


def test_a_halt_with_failed_rows_says_to_finish_the_run_before_retrying(
        tmp_path: Path) -> None:
    """A halted run's hint named --retry-failed, which refuses a run that is not done
    (found trying it as a new user)."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    for target in (["chunkwise"], ["lab", "0001"]):
        assert lab("migrate", "--database", "lite", *target, "-v0").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_item (id, counter, payload, score) VALUES (?, 0, ?, 0)",
                         [(i, "raise" if i in (3, 4) else "") for i in range(1, 101)])
    result = lab("chunkwise_run", "lab", "0002", "--database", "lite", "--halt-failed-rows", "1")
    assert result.returncode == 65, result.stderr
    assert ("2 failed rows are recorded: manage.py chunkwise_status lab --failed lists them; "
            "once the code or the data is fixed, finish the run first (it resumes from the "
            "checkpoint), then manage.py chunkwise_run lab 0002_bump_items --retry-failed runs "
            "them again") in result.stderr, result.stderr
