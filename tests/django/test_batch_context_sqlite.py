"""Per-row code with its batch's context on SQLite, the embedded default (the lab
project's "lite" database): prepare= and annotate= on a UUID key, and a new table filled
by batch.insert with the ports pointed at their new rows by batch.write, each row once
across kill -9."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.conftest import LAB
from tests.django.test_retry_failed_sqlite import Lab, lab_env, lab_on_sqlite, query


def lab_with_tables(tmp_path: Path) -> tuple[Path, Lab]:
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    for target in (["chunkwise"], ["lab", "0001"]):
        assert lab("migrate", *target, "-v0").returncode == 0
    return db, lab


def test_prepare_and_annotate_give_the_plain_transforms_totals(tmp_path: Path) -> None:
    db, lab = lab_with_tables(tmp_path)
    rng = random.Random(7)
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_product (id, name, price) VALUES (?, ?, ?)",
                         [(p, f"product {p}", f"{p * 1.25:.2f}") for p in range(1, 21)])
        conn.executemany(
            "INSERT INTO lab_order (id, product_id, quantity, unit_price, note) "
            "VALUES (?, ?, ?, ?, '')",
            [(uuid.UUID(int=rng.getrandbits(128)).hex, product, g % 7 + 1,
              None if product is None else f"{product * 1.25:.2f}")
             for g in range(1, 2001)
             for product in [None if g % 20 == 0 else g % 20 + 1]])
    totals = {}
    for migration in ("0014", "0015", "0016"):
        result = lab("chunkwise_run", "lab", migration, "--batch-size", "300")
        assert result.returncode == 0, result.stderr
        assert "no row up to key" in result.stderr, result.stderr
        totals[migration] = {key: None if total is None else round(float(str(total)), 2)
                             for key, total in query(db, "SELECT id, total FROM lab_order")}
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE lab_order SET total = NULL")
    expected = {key: None if price is None else round(int(str(quantity)) * float(str(price)), 2)
                for key, quantity, price in query(
                    db, "SELECT o.id, o.quantity, p.price FROM lab_order o LEFT JOIN "
                        "lab_product p ON p.id = o.product_id")}
    assert totals["0014"] == totals["0015"] == totals["0016"] == expected
    assert sum(total is None for total in expected.values()) == 100


def test_a_new_table_filled_by_batch_insert_gets_each_row_once_across_kill_9(
        tmp_path: Path) -> None:
    """lab 0013 on SQLite: a PortMac per port with a MAC, the port pointing at it; runs
    SIGKILLed mid-run, then one to the end: none doubled, none missing."""
    db, lab = lab_with_tables(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_port (id, mac_address) VALUES (?, ?)",
                         [(g, None if g % 10 == 0 else f"{g:012x}") for g in range(1, 20_001)])
    rng = random.Random(20261207)
    kills = 0
    finished: list[str] = []  # what a run that was not killed, and so ended, said
    for number in range(6):
        said = tmp_path / f"run-{number}.log"
        runner = subprocess.Popen(
            [sys.executable, str(LAB / "manage.py"), "chunkwise_run", "lab", "0013",
             "--batch-size", "500", "--max-rows-per-second", "15000", "--database", "lite"],
            env=lab_env(db), cwd=LAB, stdout=subprocess.DEVNULL, stderr=said.open("w"))
        before = int(str(query(db, "SELECT count(*) FROM lab_portmac")[0][0]))
        deadline = time.monotonic() + 60
        while runner.poll() is None and int(str(query(
                db, "SELECT count(*) FROM lab_portmac")[0][0])) == before:
            assert time.monotonic() < deadline, "no batch committed"
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        if runner.poll() is None:
            runner.send_signal(signal.SIGKILL)
            kills += 1
        if runner.wait(timeout=30) == 0:
            finished.append(said.read_text())
    final = lab("chunkwise_run", "lab", "0013")
    assert final.returncode == 0, final.stderr
    assert kills >= 4
    assert query(db, "SELECT count(*), count(DISTINCT port_id) FROM lab_portmac") == \
        [(18_000, 18_000)]
    assert query(db, "SELECT count(*) FROM lab_port p JOIN lab_portmac m ON m.id = "
                     "p.primary_mac_id AND m.port_id = p.id AND m.address = "
                     "upper(p.mac_address)") == [(18_000,)]
    # the run that did the last rows verified them: the final one, or one the loop let
    # finish before its kill came (the final one then has nothing left to do)
    assert "no row up to key 19999 still matches todo" in "".join([*finished, final.stderr])


def test_batch_insert_select_copies_a_column_into_a_new_table(tmp_path: Path) -> None:
    """lab 0012 on SQLite: batch.insert_select's INSERT ... SELECT, a PortMac per port with
    a MAC, its address upper-cased and its added time set as create() sets it; a second
    run copies nothing twice (todo: the anti-join on the new table)."""
    db, lab = lab_with_tables(tmp_path)
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_port (id, mac_address) VALUES (?, ?)",
                         [(g, None if g % 10 == 0 else f"{g:012x}") for g in range(1, 2001)])
    for _ in range(2):
        done = lab("chunkwise_run", "lab", "0012", "--batch-size", "300")
        assert done.returncode == 0, done.stderr
    copied = query(db, "SELECT port_id, address, added IS NOT NULL FROM lab_portmac "
                       "ORDER BY port_id")
    assert copied == [(g, f"{g:012x}".upper(), 1) for g in range(1, 2001) if g % 10]
