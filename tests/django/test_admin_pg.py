"""chunkwise's admin pages on PostgreSQL at size: 10,000 runs (some of four shards) and
1,000,000 failed rows. Each page makes a fixed number of queries, whatever it shows and
however it is filtered; no query counts the failed rows beyond a LIMIT; and PostgreSQL
reads the failed rows of every list down an index, never the whole table."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from tests.conftest import LabDb
from tests.support.pgserver import PgServer

pytestmark = pytest.mark.postgres

_names = itertools.count(1)


@contextmanager
def admin_database(pg: PgServer, template: str) -> Iterator[LabDb]:
    """A database of the lab template plus the admin's tables (auth, contenttypes,
    sessions), which Django's "default" points at meanwhile."""
    from django.core.management import call_command
    from django.db import connections

    name = f"admin_{os.getpid()}_{next(_names)}"
    pg.sql(f"CREATE DATABASE {name} TEMPLATE {template}")
    default = connections["default"]
    saved = default.settings_dict["NAME"]
    default.close()
    default.settings_dict["NAME"] = name
    try:
        for app in ("contenttypes", "auth", "admin", "sessions"):
            call_command("migrate", app, verbosity=0)
        yield LabDb(pg, name)
    finally:
        connections.close_all()
        default.settings_dict["NAME"] = saved
        pg.sql(f"DROP DATABASE {name} WITH (FORCE)")


#: runs of one shard, and of four (10,000 runs in all)
SINGLE_RUNS, SHARDED_RUNS = 9_700, 300
INSERT_CHECKPOINTS = (
    "INSERT INTO chunkwise_checkpoint (app_label, migration, operation, direction, shard, "
    "shard_count, model, key_field, last_key, high_water_key, rows_estimated, "
    "rows_processed, failed_rows, batches, consecutive_failed_batches, lock_wait_seconds, "
    "state, message, owner, planned, started_at, heartbeat_at, completed_at)")


def fill(db: LabDb) -> dict[str, int]:
    """The checkpoints of 10,000 runs over 20 apps, every state and both directions, and
    1,000,000 failed rows: 900,000 of one big run, 100,000 of a sharded one, in five error
    classes. Returns the big run's and the sharded run's page ids."""
    db.execute(f"""
        {INSERT_CHECKPOINTS}
        SELECT 'app' || lpad((g %% 20)::text, 2, '0'), lpad(g::text, 5, '0') || '_backfill', 0,
            CASE WHEN g %% 10 = 0 THEN 'backward' ELSE 'forward' END, 0, 1, 'lab.Item', 'id',
            (g * 10)::text, '100000', 100000, CASE WHEN g %% 50 < 5 THEN g * 10 ELSE 100000 END,
            0, 20, 0, g %% 7, CASE g %% 50 WHEN 1 THEN 'running' WHEN 2 THEN 'halted'
                WHEN 3 THEN 'interrupted' WHEN 4 THEN 'deferred' ELSE 'done' END,
            '', 'worker-' || (g %% 3) || ' pid 7', true, now() - g * interval '1 minute',
            now() - g * interval '10 second',
            CASE WHEN g %% 50 >= 5 THEN now() - g * interval '5 second' END
        FROM generate_series(1, {SINGLE_RUNS}) g""")
    db.execute(f"""
        {INSERT_CHECKPOINTS}
        SELECT 'sharded', lpad(h::text, 5, '0') || '_split', 0, 'forward', s, 4, 'lab.Item',
            'id', (s * 250000 + 1000)::text, ((s + 1) * 250000)::text, 250000, 1000, 0, 1, 0,
            0.5, CASE WHEN h %% 2 = 0 AND s = 2 THEN 'running' ELSE 'done' END, '',
            'DataMigration shop/split-' || h, true, now() - h * interval '1 hour',
            now() - interval '3 second', NULL
        FROM generate_series(1, {SHARDED_RUNS}) h, generate_series(0, 3) s""")
    [(big,)] = db.query("SELECT id FROM chunkwise_checkpoint WHERE migration = '00001_backfill'")
    sharded = [int(pk) for (pk,) in db.query(  # type: ignore[call-overload]
        "SELECT id FROM chunkwise_checkpoint WHERE migration = '00001_split' ORDER BY shard")]
    with psycopg.connect(db.server.dsn(db.name), autocommit=True) as conn:
        # a million foreign-key checks and index insertions would be most of the time:
        # the keys are made right here, and an index built once is a fraction of that
        conn.execute("SET session_replication_role = replica")
        indexes = [str(definition) for (definition,) in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'chunkwise_failedrow' AND "
            "indexname NOT LIKE '%%_pkey'").fetchall()]
        for definition in indexes:
            conn.execute("DROP INDEX " + definition.split(" INDEX ")[1].split(" ON ")[0])
        conn.execute("""
            INSERT INTO chunkwise_failedrow (checkpoint_id, key, error_class, message, created_at)
            SELECT CASE WHEN g <= 900000 THEN %s ELSE (%s::bigint[])[1 + g %% 4] END, g::text,
                CASE WHEN g %% 100 = 0 THEN 'IntegrityError' WHEN g %% 100 = 1 THEN 'DataError'
                     WHEN g %% 1000 = 2 THEN 'KeyError' WHEN g %% 1000 = 3 THEN 'TypeError'
                     ELSE 'ValueError' END,
                'cannot bump item ' || g || ': payload says raise', now() - g * interval '1 ms'
            FROM generate_series(1, 1000000) g""", (big, sharded))
        conn.execute("SET maintenance_work_mem = '256MB'")
        for definition in indexes:
            conn.execute(definition)
    db.execute("UPDATE chunkwise_checkpoint c SET failed_rows = f.n FROM (SELECT checkpoint_id, "
               "count(*) AS n FROM chunkwise_failedrow GROUP BY checkpoint_id) f "
               "WHERE f.checkpoint_id = c.id")
    db.execute("ANALYZE")
    return {"big": int(big), "sharded": sharded[0]}  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def big_admin(pg: PgServer, lab_template: str, django_setup: None) -> Iterator[dict[str, Any]]:
    from django.contrib.auth.models import User

    with admin_database(pg, lab_template) as db:
        started = time.monotonic()
        runs = fill(db)
        User.objects.create_superuser("admin", "admin@example.com", "a-long-passphrase")
        print(f"10,000 runs and 1,000,000 failed rows made in "
              f"{time.monotonic() - started:.1f} s")
        yield {"db": db, **runs}


def page(path: str) -> tuple[int, list[str], float, str]:
    """GET ``path`` as the superuser: status, the SQL it ran, its time, the HTML."""
    from django.contrib.auth.models import User
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(User.objects.get(username="admin"))
    ContentType.objects.clear_cache()  # a page's first use of it is a query: always count it
    with CaptureQueriesContext(connection) as queries:
        started = time.monotonic()
        response = client.get(path)
        seconds = time.monotonic() - started
    return (response.status_code, [q["sql"] for q in queries.captured_queries], seconds,
            response.content.decode())


def plans(sql: list[str], table: str) -> list[str]:
    """PostgreSQL's plan of each query that reads ``table``."""
    from django.db import connection

    found = []
    with connection.cursor() as cursor:
        for statement in sql:
            if f'"{table}"' in statement:
                cursor.execute("EXPLAIN " + statement)
                found.append("\n".join(row[0] for row in cursor.fetchall()))
    return found


RUNS = "/admin/chunkwise/run/"
FAILED = "/admin/chunkwise/failedrow/"


@pytest.mark.parametrize("query", ["", "?p=3", "?state=running", "?state=halted&direction=forward",
                                   "?app_label=app07", "?q=00042", "?direction=backward&p=2",
                                   "?o=-5"])
def test_a_page_of_runs_makes_the_same_queries_whatever_it_shows(
        big_admin: dict[str, Any], query: str) -> None:
    """The session, the user, the apps for the app filter, the count of runs (10,000
    rows: no cost to speak of), the page: five, for 50 runs or one, with their shards'
    totals folded in by the page's own query."""
    status, sql, seconds, html = page(RUNS + query)
    assert status == 200, html[:2000]
    assert len(sql) == 5, "\n".join(sql)
    assert "chunkwise_failedrow" not in " ".join(sql)  # failed counts are the checkpoints'
    assert seconds < 5, f"{query}: {seconds:.2f} s"
    print(f"runs{query}: {len(sql)} queries, {seconds * 1000:.0f} ms")


def test_the_runs_list_folds_shards_into_one_line(big_admin: dict[str, Any]) -> None:
    """A run of four shards is one line, with the four shards' rows summed; its state
    is its most urgent shard's; the sum is the run's own total."""
    status, _, _, html = page(RUNS + "?app_label=sharded&q=00002")
    assert status == 200
    assert html.count('class="field-name"') == 1, html
    assert 'aria-label="Select this object for an action - sharded.00002_split[0] forward"' \
        in html
    assert "4,000 / 1,000,000" in html  # 1,000 rows done of 250,000 in each of 4 shards
    assert 'chunkwise-state-running">running</span>' in html  # shard 2 still runs
    status, _, _, html = page(RUNS + "?app_label=sharded&q=00001")
    assert 'chunkwise-state-done">done</span>' in html
    assert f'href="{FAILED}?run={big_admin["sharded"]}">100,000</a>' in html


@pytest.mark.parametrize(("query", "counted"), [
    ("", "more than 1100 failed rows"),  # 100 a page, counted 10 pages ahead
    ("?p=7", "more than 1700 failed rows"),
    ("?error_class=KeyError", "1000 failed rows"),  # below the horizon: exact
    ("?error_class=ValueError", "more than 1100 failed rows"),
    ("?run={big}", "more than 1100 failed rows"),
    ("?run={sharded}", "more than 1100 failed rows"),
    ("?run={big}&p=40", "more than 5000 failed rows"),
    ("?run={sharded}&error_class=DataError", "1000 failed rows"),
])
def test_a_page_of_failed_rows_reads_an_index_and_never_counts_them_all(
        big_admin: dict[str, Any], query: str, counted: str) -> None:
    """The session, the user, the error classes (one index lookup per class), the run
    asked for if any, a count that stops a few pages ahead, the page: no count(*) over
    the million, and no sequential scan of them in any plan."""
    query = query.format(big=big_admin["big"], sharded=big_admin["sharded"])
    status, sql, seconds, html = page(FAILED + query)
    assert status == 200, html[:2000]
    assert len(sql) == (6 if "run=" in query else 5), "\n".join(sql)
    counts = [s for s in sql if "COUNT(" in s.upper() and "chunkwise_failedrow" in s]
    assert len(counts) == 1 and "LIMIT" in counts[0], counts
    for plan in plans(sql, "chunkwise_failedrow"):
        assert "Seq Scan on chunkwise_failedrow" not in plan, plan
    assert f"\n{counted}\n" in html
    assert seconds < 5, f"{query}: {seconds:.2f} s"
    print(f"failed rows{query}: {len(sql)} queries, {seconds * 1000:.0f} ms")


def test_a_run_page_shows_its_shards_and_links_its_failed_rows(
        big_admin: dict[str, Any]) -> None:
    status, sql, _, html = page(f"{RUNS}{big_admin['sharded']}/change/")
    assert status == 200, html[:2000]
    assert html.count('<td>0 of 4</td>') == 1 and html.count('<td>3 of 4</td>') == 1
    assert f'href="{FAILED}?run={big_admin["sharded"]}">100,000</a>' in html
    # the session, the user, the run, its content type (the History link), its retry
    # mark, its shards
    assert len(sql) == 6, "\n".join(sql)
