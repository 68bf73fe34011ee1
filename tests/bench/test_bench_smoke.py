"""The benchmark, tiny, so it cannot rot. Its figures are not judged here (bench/ is)."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

from tests.support.mariaserver import INNODB_VIEW_EVERY, running_mariadb
from tests.support.pgserver import running_server

REPO = Path(__file__).resolve().parents[2]
#: how a target's verdict prints: beyond the noise floor, or within it (~)
VERDICT = r"(met|MISSED|~met|~missed)"


def test_benchmark_runs_every_contender_and_prints_ratios(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--rows", "10000", "--sample", "1000",
         "--repeat", "1", "--memory-rows", "20000", "--idle-seconds", "1", "--no-plot",
         "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    data = json.loads(out.read_text())
    for name in ("single UPDATE", "bare keyset loop", "chunkwise set-based (5k fixed)",
                 "chunkwise set-based (5k, metrics)",
                 "chunkwise transform (auto-tuned)", "Django bulk_update (1k) [sample]",
                 "Django save() per row [sample]", "idle (no migration)"):
        assert name in table, name
    # the topology users deploy, by default: the runner on a CPU of its own, PostgreSQL and
    # the traffic on the other, as the kernel reports a new backend's CPUs
    assert data["topology"]["name"] == "pinned" and data["other_topologies"] == []
    assert set(data["topology"]["runner_cpus"]).isdisjoint(data["topology"]["server_cpus"])
    assert "topology: pinned, as deployed - the migration runner" in table
    assert f"PostgreSQL (a new backend: CPU {data['topology']['server_cpus'][0]}" in table
    assert "targets (pinned topology, this run; ~: within the noise floor" in table
    for target in ("set-based (5k fixed) >= 0.9x bare keyset loop",
                   "writers' p99, set-based 5k <= 1.2x the bare loop's",
                   "database CPU, set-based 5k <= 1.15x single UPDATE's",
                   "database CPU, set-based 5k <= the bare loop's",
                   "transform >= 0.6x single UPDATE", "transform >= 15x bulk_update",
                   "set-based, 2 shards >= 1.0x 1 shard",
                   "runner's peak RSS flat from 10,000 to 20,000 rows"):
        assert re.search(rf"^  {VERDICT} +{re.escape(target)}", table, re.M), target
        assert any(t["target"].startswith(target) for t in data["targets"]), target
    # the run measures its noise: the A/A twins' distance is the floor the verdicts use
    floor = data["noise_floor"]
    assert set(floor) == {"speed", "db_cpu", "writers_p99"} and min(floor.values()) >= 1.0
    assert re.search(r"^noise floor of this run \(the A/A twins, identical work under two "
                     r"names\): speed \d+\.\d{3}x, database CPU \d+\.\d{3}x, writers' p99 "
                     r"\d+\.\d{3}x apart$", table, re.M), table
    for judged in data["targets"]:
        ratio_met = judged["met"]
        assert judged["verdict"] in (("met", "~met") if ratio_met else ("MISSED", "~missed"))
    assert f"(seed {data['seed']}; --seed {data['seed']} repeats it)" in table
    # every contender's database CPU per million rows, the server's processes counted
    cpu = {r["name"]: r["db_cpu"] for r in data["results"]}
    assert all(len(runs) == 1 and runs[0] > 0 for runs in cpu.values()), cpu
    # every traffic run counts its writers' lock waits from the server's log
    assert "lock waits >1ms" in table
    assert all(0 <= i["lock_waits"] <= i["writes"] for i in data["impact"])
    # the writers' figures pool every run's writes, and show the spread between runs; with
    # one run each, that run's own
    assert "runs p99 min-max" in table
    assert all(i["runs"] == 1 and i["run_write_p99_ms"] == [i["write_p99_ms"]]
               for i in data["impact"] if i["writes"])
    assert "metrics: the reporter costs" in table and "metrics cost <= 2%" in table
    assert "chunkwise set-based (5k, 2 shards)" in table
    assert "with 2 shards the transform runs at" in table
    assert "keyset loop + checkpoint row (SQL, 5k)" in table and "what resuming costs" in table
    assert "chunkwise set-based (5k, yield CPU)" in table
    assert "writers' p99, set-based 5k, yield CPU <= 1.2x the bare loop's" in table
    assert len(data["results"]) == 14 and all(r["rows"] > 0 for r in data["results"])
    assert {m["rows"] for m in data["memory"]} == {10000, 20000}
    rates = {r["name"]: r["rows_per_second"] for r in data["results"]}
    assert rates["chunkwise transform (5k fixed)"] > rates["Django save() per row"]


@pytest.mark.mariadb
def test_the_benchmark_runs_every_contender_on_mariadb(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--database", "mariadb",
         "--rows", "10000", "--sample", "1000", "--repeat", "1", "--memory-rows", "0",
         "--idle-seconds", "1", "--no-plot", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    data = json.loads(out.read_text())
    assert data["database"] == "MariaDB"
    assert "chunkwise benchmark: 10,000 rows, MariaDB, " in table
    # the same contenders as on PostgreSQL, every one of them changing rows
    assert len(data["results"]) == 14 and all(r["rows"] > 0 for r in data["results"])
    assert all(r["db_cpu"][0] > 0 for r in data["results"])
    for name in ("single UPDATE", "bare keyset loop (SQL, 5k)",
                 "keyset loop + checkpoint row (SQL, 5k)", "chunkwise set-based (5k fixed)",
                 "chunkwise set-based (5k, 2 shards)", "chunkwise transform (5k fixed)",
                 "Django bulk_update (1k) [sample]", "Django save() per row [sample]",
                 "idle (no migration)"):
        assert name in table, name
    # the same topology: the runner on a CPU of its own; mariadbd's threads, a new
    # connection's among them, and the traffic on the other, as the kernel reports them
    server_cpu = data["topology"]["server_cpus"][0]
    assert set(data["topology"]["runner_cpus"]).isdisjoint(data["topology"]["server_cpus"])
    assert (f"MariaDB (a new connection's thread: CPU {server_cpu}; all of mariadbd's "
            f"threads: CPU {server_cpu})") in table
    # the traffic ran (through MySQLdb), and InnoDB's row lock waits were counted
    impacts = {i["name"]: i for i in data["impact"]}
    assert impacts["idle (no migration)"]["writes"] > 0
    assert "row lock waits" in table and all(i["lock_waits"] >= 0 for i in data["impact"])
    for target in ("set-based (5k fixed) >= 0.9x bare keyset loop",
                   "writers' p99, set-based 5k <= 1.2x the bare loop's",
                   "transform >= 15x bulk_update"):
        assert re.search(rf"^  {VERDICT} +{re.escape(target)}", table, re.M), target
    rates = {r["name"]: r["rows_per_second"] for r in data["results"]}
    assert rates["chunkwise transform (5k fixed)"] > rates["Django save() per row"]


def test_the_unpinned_topology_is_measured_beside_the_pinned_one(tmp_path: Path) -> None:
    out, png = tmp_path / "results.json", tmp_path / "latest.png"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--rows", "10000", "--sample", "500",
         "--repeat", "1", "--memory-rows", "0", "--idle-seconds", "1", "--topology", "both",
         "--out", str(out), "--plot", str(png)],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["topology"]["name"] == "pinned"
    assert [t["topology"]["name"] for t in data["other_topologies"]] == ["shared"]
    assert "topology: shared (unpinned)" in result.stdout
    assert "targets side by side: pinned | shared" in result.stdout
    # a target that differs by topology shows both: pinned, a second shard must cost
    # nothing; unpinned, it must add speed
    assert "set-based, 2 shards >= 1.0x 1 shard / set-based, 2 shards >= 1.3x single UPDATE" \
        in result.stdout
    assert "transform >= 0.6x single UPDATE / transform >= 0.7x single UPDATE" in result.stdout
    # a plot per topology: the writers' latency per contender as a CDF
    assert png.stat().st_size > 10_000 and (tmp_path / "latest-shared.png").exists()


def test_the_throttle_cost_benchmark_runs_every_variant() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "throttle_cost.py"),
                             "--rows", "20000", "--repeat", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for variant in ("no throttle", "replication lag, every 1s", "replication lag, every batch",
                    "all four, every 1s", "all four, every batch"):
        assert variant in result.stdout, variant
    assert "20,000 rows in 4 batches of 5,000" in result.stdout


def test_the_write_back_forms_benchmark_compares_arrays_and_copy_side_by_side() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "writeback_forms.py"),
                             "--rows", "30000", "--rounds", "1", "--seed", "7"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "30,000 rows, 1 passes, order seed 7" in out
    medians = re.findall(r"  (.+): median ([0-9.]+) ms per batch \((\d+) batches\)", out)
    assert [name for name, _, _ in medians] == [
        "arrays bound to one UPDATE", "arrays bound to one UPDATE (twin)",
        "binary COPY into a temp table + UPDATE ... FROM"], out
    assert all(float(ms) > 0 for _, ms, _ in medians)
    assert sum(int(batches) for _, _, batches in medians) == 6  # each batch written once
    assert re.search(r"noise floor \(A/A, the arrays form twice\): [0-9.]+x", out), out
    assert re.search(r"COPY form against the faster arrays twin: [0-9.]+x as fast: "
                     r"(faster|slower), beyond the floor|within the floor", out), out


def test_the_server_time_benchmark_reads_the_statement_log() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "server_time.py"),
                             "--rows", "20000"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for name in ("single UPDATE", "bare keyset loop (SQL, 5k)",
                 "chunkwise set-based (5k fixed)", "chunkwise transform (5k fixed)"):
        assert f"{name}: 20,000 rows in " in out, name
    # the log was read: each batched contender's own UPDATE, once per 5k-row batch
    assert "4 x" in out and 'UPDATE "benchapp_customer" SET "status" = v."status"' in out
    assert "per 5k-row batch" in out
    assert "topology: pinned, as deployed" in out
    # the statements of one batch, from BEGIN to COMMIT: the bare loop's four, chunkwise's
    # set-based batch at most one more than a loop with a checkpoint row
    assert "a batch sends 4 statements" in out and "a batch sends 6 statements" in out
    assert re.search(r"statements per 5k-row batch: chunkwise set-based 6, the bare keyset "
                     r"loop 4, .* met \(6 <= 6\)", out), out[-800:]
    # and Django's share of a set-based batch, from the migration's own function
    orm = re.search(r"batch.update\(\.\.\.\) into SQL in ([0-9.]+) ms per batch", out)
    assert orm is not None and 0 < float(orm[1]) < 100, out[-500:]


def _bench_module(name: str) -> ModuleType:
    """A module of bench/, imported as its scripts import one another."""
    if str(REPO / "bench") not in sys.path:
        sys.path.append(str(REPO / "bench"))
    return importlib.import_module(name)


def test_the_traffic_phase_counts_only_the_traffic_writers_lock_waits() -> None:
    databases, traffic = _bench_module("databases"), _bench_module("traffic")
    with running_server(databases.PostgreSQL.LOCK_WAIT_LOG) as server:
        server.sql("CREATE DATABASE waits")
        dsn = server.dsn("waits")
        with psycopg.connect(dsn, autocommit=True) as setup:
            setup.execute("CREATE TABLE t (id int PRIMARY KEY, n int)")
            setup.execute("INSERT INTO t VALUES (1, 0)")

        def write(application: str) -> None:
            with psycopg.connect(dsn, autocommit=True, application_name=application) as conn:
                conn.execute("UPDATE t SET n = n + 1 WHERE id = 1")

        log = server.datadir.parent / "postgres.log"
        with psycopg.connect(dsn) as holder:
            holder.execute("UPDATE t SET n = n + 1 WHERE id = 1")  # holds the row's lock
            writers = [threading.Thread(target=write, args=(app,))
                       for app in (traffic.APPLICATION_NAME, "someone else")]
            for writer in writers:
                writer.start()
            deadline = time.monotonic() + 30
            while log.read_text(errors="replace").count("still waiting for") < 2:
                assert time.monotonic() < deadline, "the two writers' waits were never logged"
                time.sleep(0.05)
            holder.commit()
        for writer in writers:
            writer.join(timeout=30)
        assert databases.PostgreSQL(server).writer_lock_waits("waits", 0) == 1


def test_the_database_cpu_of_a_backend_that_exited_is_counted_once() -> None:
    """A run's own backend holds most of its database CPU and exits with it: reaped, its
    CPU moves to the postmaster's children's total, and must be counted there once, not
    lost or twice."""
    databases = _bench_module("databases")
    with running_server() as server:
        database = databases.PostgreSQL(server)
        before = database.server_cpu_seconds()
        with psycopg.connect(server.dsn("postgres"), autocommit=True) as busy:
            busy.execute("SELECT count(*) FROM generate_series(1, 3000000)")
            pid = busy.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        assert used > 0.2, used  # the backend did the work
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():  # until the postmaster has reaped it
            assert time.monotonic() < deadline, "the backend was never reaped"
            time.sleep(0.05)
        after = database.server_cpu_seconds()
        assert used <= after - before < used + 0.5, (before, after, used)


@pytest.mark.mariadb
def test_the_traffic_phase_counts_innodb_row_lock_waits_on_mariadb() -> None:
    databases = _bench_module("databases")
    with running_mariadb() as server:
        server.sql("CREATE DATABASE waits")
        server.sql("CREATE TABLE t (id int PRIMARY KEY, n int)", "waits")
        server.sql("INSERT INTO t VALUES (1, 0), (2, 0)", "waits")
        maria = databases.MariaDB(server)
        mark = maria.lock_wait_mark()
        writer = threading.Thread(
            target=server.sql, args=("UPDATE t SET n = n + 1 WHERE id = 1", "waits"))
        holder = server.connect("waits", autocommit=False)
        waiting = ("SELECT count(*) FROM information_schema.INNODB_TRX "
                   "WHERE trx_state = 'LOCK WAIT'")
        try:
            holder.cursor().execute("UPDATE t SET n = n + 1 WHERE id = 1")  # holds the row
            assert server.sql(waiting) == [(0,)]
            writer.start()
            deadline = time.monotonic() + 30
            while server.sql(waiting) != [(1,)]:
                assert time.monotonic() < deadline, "the writer never waited for the row"
                time.sleep(INNODB_VIEW_EVERY)
            holder.commit()
        finally:
            holder.close()
        writer.join(timeout=30)
        server.sql("UPDATE t SET n = n + 1 WHERE id = 2", "waits")  # no wait: not counted
        assert maria.writer_lock_waits("waits", mark) == 1


def test_the_joined_todo_benchmark_times_both_todos_and_prints_the_ratio() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "joined_todo.py"),
                             "--items", "2000", "--rounds", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2,000 items, 6,000 related rows, statistics of empty tables")
    assert any(line.strip().startswith("todo across a relation (lab 0010)") for line in lines)
    assert lines[-1].startswith("joined / plain: ")


def test_the_batch_context_benchmark_times_every_contender_and_prints_the_targets() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "batch_context.py"),
                             "--ports", "2000", "--orders", "4000", "--rounds", "1"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2,000 ports (1,800 with a MAC), 4,000 orders (3,800 with a "
                               "product), 5k-row batches; 1 rounds")
    timed = [line for line in lines if " median " in line]
    assert len(timed) == 10 and all(" rows/s " in line for line in timed)
    assert sum("(target " in line for line in lines) == 5
    assert lines[-1].startswith("noise floor: plain transform again / plain transform ")
