"""The MariaDB test infrastructure itself (tests/support/mariaserver.py, the maria*
fixtures of tests/conftest.py): the server the MariaDB tests run on, the per-test lab
database, and a replica following the primary."""

from __future__ import annotations

import pytest

from tests.conftest import MariaLabDb
from tests.support.mariaserver import MariaDbServer, running_mariadb_replica

pytestmark = pytest.mark.mariadb

LAB_TABLES = {"lab_item", "lab_book", "lab_uuiditem", "lab_textitem", "lab_order",
              "lab_port", "lab_portmac"}
CHUNKWISE_TABLES = {"chunkwise_checkpoint", "chunkwise_failedrow", "chunkwise_retryrequest"}


def test_the_server_is_debians_mariadb_10_11_with_a_binary_log(maria: MariaDbServer) -> None:
    [(version, log_bin, server_id, charset)] = maria.sql(
        "SELECT VERSION(), @@log_bin, @@server_id, @@character_set_server")
    assert version.startswith("10.11."), version
    assert "MariaDB" in version
    assert (log_bin, server_id, charset) == (1, maria.server_id, "utf8mb4")


def test_the_per_test_database_has_the_lab_and_chunkwise_tables_on_innodb(
        maria: MariaDbServer, maria_lab_template: str, maria_lab_db: MariaLabDb) -> None:
    engines = {table: engine for table, engine in maria_lab_db.query(
        "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE()")}
    assert LAB_TABLES | CHUNKWISE_TABLES <= set(engines)
    assert set(engines.values()) == {"InnoDB"}, engines
    # a faithful copy of the template: its foreign keys too, which CREATE TABLE ... LIKE
    # would have left out
    foreign_keys = "SELECT count(*) FROM information_schema.REFERENTIAL_CONSTRAINTS " \
                   "WHERE CONSTRAINT_SCHEMA = %s"
    [(copied,)] = maria.sql(foreign_keys, params=(maria_lab_db.name,))
    [(templates,)] = maria.sql(foreign_keys, params=(maria_lab_template,))
    assert copied == templates > 0


def test_the_lab_sees_the_per_test_database_at_migration_0001(maria_lab_db: MariaLabDb) -> None:
    shown = maria_lab_db.manage("showmigrations", "lab")
    assert shown.returncode == 0, shown.stderr
    assert "[X] 0001_initial" in shown.stdout
    assert "[ ] 0002_bump_items" in shown.stdout


def test_per_test_databases_are_separate(maria_lab_db: MariaLabDb,
                                         maria_lab_template: str) -> None:
    maria_lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                         "VALUES (%s, 0, '', 0)", (7,))
    assert maria_lab_db.query("SELECT id FROM lab_item") == [(7,)]
    assert maria_lab_db.server.sql("SELECT count(*) FROM lab_item",
                                   maria_lab_template) == [(0,)]


def test_a_committed_row_survives_a_killed_server(maria_lab_db: MariaLabDb) -> None:
    server = maria_lab_db.server
    maria_lab_db.execute("INSERT INTO lab_item (id, counter, payload, score) "
                         "VALUES (1, 0, '', 0)")
    killed = server.pid
    server.kill()
    server.start()
    assert server.pid != killed
    assert maria_lab_db.query("SELECT id FROM lab_item") == [(1,)]
    server.stop()
    server.start()
    assert maria_lab_db.query("SELECT id FROM lab_item") == [(1,)]


def test_a_replica_follows_the_primary(maria: MariaDbServer) -> None:
    maria.sql("CREATE DATABASE followed")
    try:
        maria.sql("CREATE TABLE followed.marks (id int PRIMARY KEY, note varchar(20))")
        with running_mariadb_replica(maria) as replica:
            assert replica.server_id != maria.server_id
            maria.sql("INSERT INTO followed.marks VALUES (1, 'seen')")
            replica.catch_up(maria, timeout=30)
            assert replica.sql("SELECT note FROM followed.marks") == [("seen",)]
            status = replica.replica_status()
            assert (status["Slave_IO_Running"], status["Slave_SQL_Running"],
                    status["Using_Gtid"]) == ("Yes", "Yes", "Slave_Pos")
            assert isinstance(status["Seconds_Behind_Master"], int), status
    finally:
        maria.drop_database("followed")
