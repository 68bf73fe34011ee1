"""What a batch sends PostgreSQL: as few statements as its protocol needs, counted in the
server's own statement log, so the count cannot creep back up unseen."""

from __future__ import annotations

import subprocess
import sys
import time

import psycopg
import pytest

from tests.conftest import LAB, LabDb, lab_env
from tests.support.pgserver import running_server
from tests.support.statement_log import SETTINGS, transactions

pytestmark = pytest.mark.postgres

#: a hand-written keyset loop that keeps a checkpoint row sends, per batch: BEGIN, the
#: batch's upper key, its UPDATE, the checkpoint row's UPDATE, COMMIT
HAND_WRITTEN_WITH_CHECKPOINT = 5


def test_a_set_based_batch_sends_one_statement_more_than_a_hand_written_loop() -> None:
    with running_server(SETTINGS) as server:
        server.sql("CREATE DATABASE trips")
        env = lab_env(server, "trips")

        def manage(*args: str) -> str:
            done = subprocess.run([sys.executable, str(LAB / "manage.py"), *args], env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stderr

        manage("migrate", "lab", "0001", "-v0")
        manage("migrate", "chunkwise", "-v0")
        server.sql("INSERT INTO lab_codeditem (item_code, counter) "
                   "SELECT g, 0 FROM generate_series(1, 1000) g", "trips")
        # 0008's first operation: set-based, one UPDATE per batch; 10 full batches of 100
        manage("chunkwise_run", "lab", "0008", "--operation", "0", "--batch-size", "100",
               "--min-batch-size", "100", "--max-batch-size", "100")
        batches = transactions(server.datadir.parent / "postgres.log", "trips",
                               "lab_codeditem")
    assert len(batches) == 10, batches
    for statements in batches:
        shown = "\n  ".join(statements)
        assert len(statements) <= HAND_WRITTEN_WITH_CHECKPOINT + 1, \
            f"a set-based batch sent {len(statements)} statements:\n  {shown}"
        # the protocol is all there: timeouts (and the planner's key order) set and the
        # checkpoint row locked in one statement, the batch's last key found (putting the
        # planner's settings back as it goes), the work, the checkpoint advanced, in one
        # transaction
        begin, lock, last_key, work, advance, commit = statements
        assert (begin, commit) == ("BEGIN", "COMMIT")
        assert lock.startswith("SELECT set_config('lock_timeout', '50ms', true), "
                               "set_config('statement_timeout', '30000ms', true), "
                               "set_config('enable_sort', 'off', true), last_key")
        assert last_key.endswith("set_config('enable_sort', 'on', true)"), last_key
        assert 'FROM "chunkwise_checkpoint" WHERE id = ' in lock and lock.endswith("FOR UPDATE")
        assert work.startswith('UPDATE "lab_codeditem" SET "counter"')
        assert advance.startswith('UPDATE "chunkwise_checkpoint" SET last_key')


def test_a_transform_batch_stages_its_write_back_unless_the_role_may_not() -> None:
    """A per-row transform's batch writes its rows back through a binary COPY into the
    session's own table and one UPDATE ... FROM it (backends/staging.py), in the batch's
    transaction. A role that may not create temporary tables gets the arrays bound to
    the UPDATE instead, and the run is the same."""
    fixed_100 = ("--batch-size", "100", "--min-batch-size", "100", "--max-batch-size", "100")
    with running_server(SETTINGS) as server:
        server.sql("CREATE DATABASE staging")
        env = lab_env(server, "staging")

        def manage(*args: str, **extra: str) -> None:
            done = subprocess.run([sys.executable, str(LAB / "manage.py"), *args],
                                  env={**env, **extra}, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]

        manage("migrate", "lab", "0001", "-v0")
        manage("migrate", "chunkwise", "-v0")
        server.sql("INSERT INTO lab_item (id, counter, payload, score) "
                   "SELECT g, 0, '', 0 FROM generate_series(1, 1000) g", "staging")
        manage("chunkwise_run", "lab", "0002", *fixed_100)
        # the same run as a role without the TEMPORARY privilege
        for statement in ("CREATE ROLE app LOGIN",
                          "REVOKE TEMPORARY ON DATABASE staging FROM PUBLIC"):
            server.sql(statement)
        for statement in ("GRANT ALL ON ALL TABLES IN SCHEMA public TO app",
                          "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app",
                          "DELETE FROM chunkwise_checkpoint"):
            server.sql(statement, "staging")
        manage("chunkwise_run", "lab", "0002", *fixed_100, PGUSER="app")
        batches = transactions(server.datadir.parent / "postgres.log", "staging", "lab_item")
        with psycopg.connect(server.dsn("staging")) as conn:
            counters = conn.execute("SELECT counter, count(*) FROM lab_item GROUP BY 1"
                                    ).fetchall()
    assert counters == [(2, 1000)]
    assert len(batches) == 20, batches
    for statements in batches[:10]:
        copies = [s for s in statements if s.startswith("COPY pg_temp.chunkwise_writeback_")]
        writes = [s for s in statements if s.startswith('UPDATE "lab_item"')]
        assert len(copies) == 1 and copies[0].endswith("FROM STDIN (FORMAT BINARY)"), statements
        assert len(writes) == 1 and " FROM pg_temp.chunkwise_writeback_" in writes[0], statements
        assert statements.index(copies[0]) < statements.index(writes[0])
    for statements in batches[10:]:
        assert not any(s.startswith("COPY") for s in statements), statements
        assert any(s.startswith('UPDATE "lab_item" SET "counter" = v."counter" FROM '
                                "(SELECT unnest(") for s in statements), statements


def test_the_timeouts_hold_while_the_checkpoint_row_is_locked_in_the_same_statement(
        lab_db: LabDb) -> None:
    from django.db import OperationalError, connection, transaction
    from lab.models import Item

    from chunkwise.django.checkpoints import DjangoCheckpointStore
    from chunkwise.django.operation_ref import OperationRef

    def show(name: str) -> str:
        with connection.cursor() as cursor:
            cursor.execute(f"SHOW {name}")
            return str(cursor.fetchone()[0])

    lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) VALUES (1, 0, '', 0)")
    store = DjangoCheckpointStore(OperationRef("lab", "0003_setbased_items", 0), "default",
                                  Item._default_manager.all(), Item._meta.pk)
    store.start()
    try:
        # a cap for the session: were the settings taken only after the row's lock, the
        # wait would end here, as a statement timeout (57014), not a lock timeout
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = '10s'")
        with psycopg.connect(lab_db.server.dsn(lab_db.name)) as holder:
            holder.execute("SELECT 1 FROM chunkwise_checkpoint WHERE id = %s FOR UPDATE",
                           (store.checkpoint_id,))
            started = time.monotonic()
            with pytest.raises(OperationalError) as raised, transaction.atomic():
                store.lock({"lock_timeout": "200ms", "statement_timeout": "30000ms"})
            assert getattr(raised.value.__cause__, "sqlstate", None) == "55P03", raised.value
            assert time.monotonic() - started < 5
        with transaction.atomic():
            state = store.lock({"lock_timeout": "1234ms", "statement_timeout": "5678ms"})
            assert (show("lock_timeout"), show("statement_timeout")) == ("1234ms", "5678ms")
        assert state.last_key is None and state.high_water_key == 1
        # SET LOCAL: over with the transaction
        assert (show("lock_timeout"), show("statement_timeout")) == ("0", "10s")
    finally:
        store.stop()
