"""Django system checks (chunkwise.E001...): `manage.py check` names each mistake, and
so does every command before it runs, `migrate` included, before any row is touched."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import pytest

from tests.django.test_commands_bad_input import lab_on_sqlite


def errors_of(stderr: str) -> dict[str, list[str]]:
    """Check id -> the lines (message, hint) Django printed for it."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stderr.splitlines():
        if "(chunkwise.E" in line:
            ident = line.split("(", 1)[1].split(")", 1)[0]
            current = found.setdefault(ident, [])
        if current is not None and line.strip():
            current.append(line.strip())
    return found


def test_check_names_atomic_migrations_non_unique_keys_and_missing_ensures(
        tmp_path: Path) -> None:
    lab = lab_on_sqlite(tmp_path / "lab.sqlite3", LAB_CHECKS="1")
    result = lab("check")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    found = errors_of(result.stderr)
    assert set(found) == {"chunkwise.E001", "chunkwise.E004", "chunkwise.E005"}, result.stderr
    assert found["chunkwise.E001"][0] == (
        "lab.0005_atomic_by_mistake: (chunkwise.E001) operation 0 is BatchedRunPython, which "
        "commits batch by batch, but the migration is atomic (one transaction): migrate "
        "would stop at it and roll the migration back")
    assert found["chunkwise.E001"][1].startswith(
        "HINT: add `atomic = False` to the Migration class in lab/migrations/"
        "0005_atomic_by_mistake.py")
    assert any(line.startswith(
        "mistakes.0002_key_not_unique: (chunkwise.E004) operation 0: BatchedRunPython key: "
        "mistakes.Visit.email must be the primary key or a unique field")
        for line in found["chunkwise.E004"])
    assert ("lab.0009_key_admits_null: (chunkwise.E004) operation 0: BatchedRunPython key: "
            "lab.Book.code admits NULL (null=True): rows whose key is NULL have no place in "
            "key order, so batches would skip them; use the primary key, or make code NOT "
            "NULL (null=False) in a migration before this one") in found["chunkwise.E004"]
    assert ("mistakes.0004_key_unique_together: (chunkwise.E004) operation 0: BatchedRunPython "
            "key: mistakes.Shelf.room must be the primary key or a unique field (keyset "
            "batching needs one row per key; rows sharing a key would be skipped or done "
            "twice); it is unique only together with row (unique_together), which keyset "
            "order over one field cannot use") in found["chunkwise.E004"]
    assert ("mistakes.0003_ensure_a_missing_migration: (chunkwise.E005) operation 0: "
            "EnsureBatchedComplete migration_name: There is no migration for 'mistakes' with "
            "the prefix '0099_never_written'") in found["chunkwise.E005"][0]


def test_migrate_stops_at_the_check_before_any_migration_runs(tmp_path: Path) -> None:
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_CHECKS="1")
    result = lab("migrate", "--database", "lite")
    assert result.returncode == 1 and "chunkwise.E001" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Applying" not in result.stdout
    assert not db.exists() or db.stat().st_size == 0  # not even django_migrations


def test_a_worker_stopped_by_a_check_exits_64_not_retried(tmp_path: Path) -> None:
    lab = lab_on_sqlite(tmp_path / "lab.sqlite3", LAB_CHECKS="1")
    result = lab("chunkwise_run", "lab", "0002", "--database", "lite")
    assert result.returncode == 64, result.stderr
    assert result.stderr.startswith("SystemCheckError: System check identified some issues")


@pytest.mark.parametrize(("engine", "name", "driver"), [
    ("django.db.backends.oracle", "Oracle", "oracledb"),  # installed (the test group)
])
def test_a_database_chunkwise_does_not_run_on_is_refused(tmp_path: Path, engine: str,
                                                          name: str, driver: str) -> None:
    """`check` refuses it before anything runs. Django 6 loads every database's backend in
    its own model checks, so a missing driver is named by Django, before chunkwise's
    checks; Django 5.2 loaded it on first use, and E003 names the database from its ENGINE."""
    from django import VERSION

    lab = lab_on_sqlite(tmp_path / "lab.sqlite3", LAB_OTHER_ENGINE=engine)
    result = lab("check")
    assert result.returncode == 1, result.stderr
    if VERSION >= (6,) and importlib.util.find_spec(driver) is None:
        assert f"Error loading {driver} module" in result.stderr, result.stderr
        return
    [line] = errors_of(result.stderr)["chunkwise.E003"][:1]
    assert line == (f"other: (chunkwise.E003) database 'other' is {name} ({engine}): chunkwise "
                    f"runs batched migrations on PostgreSQL and MariaDB/MySQL (production) and "
                    f"SQLite (local runs) only; the batched migrations of lab, later, mistakes "
                    f"would run there")


def test_a_mysql_database_without_a_router_blocks_no_command(tmp_path: Path) -> None:
    """A project with a MySQL secondary database (no server behind it here, no router):
    chunkwise's checks accept it, MariaDB and MySQL being databases it runs on, and ask
    no server without --database. On Django 5.2 `check` passes; Django 6's own model
    checks connect to every database (a MySQL one for its version), so there Django
    itself stops on the missing server, before chunkwise's checks."""
    from django import VERSION

    lab = lab_on_sqlite(tmp_path / "lab.sqlite3", LAB_OTHER_ENGINE="django.db.backends.mysql")
    result = lab("check")
    assert "chunkwise.E003" not in result.stderr
    if VERSION >= (6,):
        assert result.returncode == 1 and "Can't connect to" in result.stderr, result.stderr
        assert "django/core/checks/model_checks.py" in result.stderr
        return
    assert result.returncode == 0, result.stderr


def test_postgresql_and_sqlite_pass(tmp_path: Path) -> None:
    result = lab_on_sqlite(tmp_path / "lab.sqlite3")("check")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (5 silenced)." in result.stdout


@pytest.mark.parametrize(("env", "setting", "message"), [
    ("sometimes", False, "CHUNKWISE_DEFER: expected true or false (1/0, yes/no, on/off), got "
                         "'sometimes'"),
    (None, "yes", "settings.CHUNKWISE_DEFER: expected True or False, got 'yes'"),
    (None, 1, "settings.CHUNKWISE_DEFER: expected True or False, got 1"),
])
def test_a_defer_of_the_wrong_type_or_value_is_named(
        django_setup: None, monkeypatch: pytest.MonkeyPatch, env: str | None, setting: object,
        message: str) -> None:
    from django.test import override_settings

    from chunkwise.django.checks import check_defer_setting

    if env is None:
        monkeypatch.delenv("CHUNKWISE_DEFER", raising=False)
    else:
        monkeypatch.setenv("CHUNKWISE_DEFER", env)
    with override_settings(CHUNKWISE_DEFER=setting):
        [error] = check_defer_setting()
    assert (error.id, error.msg) == ("chunkwise.E002", message)
    monkeypatch.setenv("CHUNKWISE_DEFER", "off")
    with override_settings(CHUNKWISE_DEFER=True):
        assert check_defer_setting() == []


def test_a_batched_migration_that_does_not_depend_on_chunkwise_is_refused(
        tmp_path: Path) -> None:
    """billing sorts before chunkwise and its 0002 forgets the dependency: migrate ran its
    RunPython, then failed on the missing checkpoint table, and the next migrate ran the
    RunPython again (100 rows became 200). The check stops migrate before anything runs."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_BILLING="1", LAB_CHECKS="1")
    result = lab("migrate", "--database", "lite")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    found = errors_of(result.stderr)
    assert found["chunkwise.E006"] == [
        "billing.0002_seed_and_bump: (chunkwise.E006) its batched operations keep their "
        "checkpoints in chunkwise's tables, but it does not depend on chunkwise's migrations: "
        "migrate may run it before those tables exist",
        "HINT: add ('chunkwise', '0003_checkpoint_verification') to `dependencies` in "
        "billing/migrations/0002_seed_and_bump.py"], result.stderr
    assert "Applying" not in result.stdout
    assert not db.exists() or db.stat().st_size == 0


def test_migrate_refuses_a_plan_that_runs_a_batched_migration_before_chunkwise_tables(
        tmp_path: Path) -> None:
    """With the checks skipped, or a dependency on an older chunkwise migration (0001,
    as the README once said), migrate's plan is checked before its first migration: one
    line, exit 64, nothing applied, so nothing runs twice."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_BILLING="1", LAB_CHECKS="1")
    result = lab("migrate", "--database", "lite", "--skip-checks")
    assert result.returncode == 64, result.stderr
    assert result.stderr.strip().splitlines() == [
        "CommandError: billing.0002_seed_and_bump would run before chunkwise's migration "
        "0001_initial is applied, and it needs the checkpoint tables that makes: add "
        "('chunkwise', '0003_checkpoint_verification') to its dependencies, or run "
        "`manage.py migrate chunkwise` first"], result.stderr
    stale = lab("migrate", "--database", "lite", "mistakes", "0002", "--skip-checks")
    assert stale.returncode == 64, stale.stderr
    assert stale.stderr.startswith(
        "CommandError: mistakes.0002_key_not_unique would run before chunkwise's migration "
        "0002_checkpoint_state_deferred is applied"), stale.stderr
    with sqlite3.connect(db) as conn:  # not a table made, not a migration recorded
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []
    assert lab("migrate", "--database", "lite", "chunkwise", "--skip-checks").returncode == 0
    result = lab("migrate", "--database", "lite", "billing", "--skip-checks")
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT counter, count(*) FROM billing_invoice GROUP BY counter"
                            ).fetchall() == [(1, 100)]


def test_other_operations_beside_a_batched_one_are_warned_about(tmp_path: Path) -> None:
    lab = lab_on_sqlite(tmp_path / "lab.sqlite3", LAB_BILLING="1")
    result = lab("check", "--database", "lite", "--fail-level", "WARNING")
    lines = [line for line in result.stderr.splitlines() if "chunkwise.W001" in line]
    assert lines == [
        "billing.0002_seed_and_bump: (chunkwise.W001) operations 0 (RunPython) share this "
        "migration with a BatchedRunPython: if the batched operation stops before the end (a "
        "halt, a crash, Ctrl-C), migrate runs them again next time (a RunPython applies "
        "twice)"], result.stderr


@pytest.mark.parametrize(("env", "line"), [
    ({"CHUNKWISE_DEFFER": "1"},
     "?: (chunkwise.E007) environment variable CHUNKWISE_DEFFER: chunkwise has no such "
     "variable, so it would be ignored; did you mean CHUNKWISE_DEFER?"),
    ({"CHUNKWISE_HALT_CONSECUTIVE_FAILED_BATCH": "3"},
     "?: (chunkwise.E007) environment variable CHUNKWISE_HALT_CONSECUTIVE_FAILED_BATCH: "
     "chunkwise has no such variable, so it would be ignored; did you mean "
     "CHUNKWISE_HALT_CONSECUTIVE_FAILED_BATCHES?"),
    ({"LAB_SETTING_TYPO": "1"},
     "?: (chunkwise.E007) setting settings.CHUNKWISE_DEFFER: chunkwise has no such setting, "
     "so it would be ignored; did you mean CHUNKWISE_DEFER?"),
], ids=["env DEFFER", "env HALT_..._BATCH", "setting DEFFER"])
def test_a_misspelled_name_is_refused_with_the_closest_one(tmp_path: Path,
                                                            env: dict[str, str],
                                                            line: str) -> None:
    """A misspelled CHUNKWISE_DEFER was ignored: migrate ran the whole migration inline
    in a deploy. migrate stops before anything runs; a worker exits 64 (not retried)."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, **env)
    result = lab("migrate", "--database", "lite", "lab", "0002")
    assert result.returncode == 1, result.stderr
    assert errors_of(result.stderr)["chunkwise.E007"][0] == line, result.stderr
    assert "Applying" not in result.stdout
    worker = lab("chunkwise_run", "lab", "0002", "--database", "lite")
    assert worker.returncode == 64 and line in worker.stderr, worker.stderr


def test_names_chunkwise_reads_pass_the_name_check() -> None:
    from chunkwise.django.config import known_env_names, misspelled
    from chunkwise.engine import TUNABLES

    names = [t.env for t in TUNABLES] + ["CHUNKWISE_DEFER", "CHUNKWISE_RESOURCE",
                                         "CHUNKWISE_OPERATOR_STALL_CHECK_INTERVAL",
                                         "CHUNKWISE_TESTENV_CACHE"]
    assert misspelled(names, known_env_names()) == []
    assert misspelled(["CHUNKWISE_ZZZ"], known_env_names()) == [("CHUNKWISE_ZZZ", "")]


def test_migrate_refuses_a_dry_run_rather_than_running_it(tmp_path: Path) -> None:
    """CHUNKWISE_DRY_RUN=1 manage.py migrate wrote every row and recorded the migration
    applied: a dry run is chunkwise_run's (spec.dryRun), refused under migrate."""
    db = tmp_path / "lab.sqlite3"
    assert lab_on_sqlite(db)("migrate", "--database", "lite", "lab", "0001", "-v0"
                             ).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_item (counter, payload, score) VALUES (0, '', 0)",
                         [()] * 10)
    result = lab_on_sqlite(db, CHUNKWISE_DRY_RUN="1")("migrate", "--database", "lite", "lab",
                                                      "0002")
    assert result.returncode == 64, result.stderr
    assert result.stderr.strip().splitlines() == [
        "CommandError: CHUNKWISE_DRY_RUN is set, but migrate cannot dry-run a batched migration "
        "(it would record lab.0002_bump_items as applied): unset it, and plan with manage.py "
        "chunkwise_plan lab 0002_bump_items (or chunkwise_run --dry-run)"], result.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT sum(counter) FROM lab_item").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'lab' AND "
                            "name = '0002_bump_items'").fetchone() == (0,)


@pytest.mark.parametrize(("field", "problem"), [
    ("JSONField", "is a JSONField, which cannot be a key (JSON values have no order"),
    ("BinaryField", "is a BinaryField, which cannot be a key (bytes do not round-trip"),
    ("FloatField", "is a FloatField, which cannot be a key (floating-point values"),
    ("UUIDField", ""), ("DateTimeField", ""), ("DecimalField", ""),
])
def test_a_key_must_be_of_a_type_the_database_orders(field: str, problem: str) -> None:
    from django.db import models

    from chunkwise.django.keys import key_problem

    kwargs = {"max_digits": 5, "decimal_places": 2} if field == "DecimalField" else {}
    instance = getattr(models, field)(unique=True, **kwargs)
    instance.set_attributes_from_name("code")
    found = key_problem("app.Model", instance, (), ())
    assert (problem in found) if problem else found == "", found


def test_a_one_field_unique_constraint_makes_a_key_and_a_partial_one_does_not() -> None:
    from django.db import models

    from chunkwise.django.keys import key_problem

    code: models.CharField[str, str] = models.CharField(max_length=10)
    code.set_attributes_from_name("code")
    whole = models.UniqueConstraint(fields=["code"], name="code_unique")
    partial = models.UniqueConstraint(fields=["code"], condition=models.Q(code__gt=""),
                                      name="code_unique_when_set")
    assert key_problem("app.Model", code, (), [whole]) == ""
    assert "must be the primary key or a unique field" in key_problem("app.Model", code, (),
                                                                      [partial])


def test_migrate_fails_and_records_nothing_while_failed_rows_are_recorded(
        tmp_path: Path) -> None:
    """As plain RunPython fails migrate on a row its code cannot handle: 2 rows fail, and
    migrate exits 65 without recording lab.0002 as applied (before: `done (Completed)`,
    ` OK`, exit 0, applied), so the next migration cannot drop what those rows need. Run
    again, it still refuses: the rows are still recorded."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db)
    assert lab("migrate", "--database", "lite", "lab", "0001", "-v0").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO lab_item (id, counter, payload, score) VALUES (?, 0, ?, 0)",
                         [(i, "raise" if i in (7, 70) else "") for i in range(1, 101)])
    for _ in range(2):
        result = lab("migrate", "--database", "lite", "lab", "0002")
        assert result.returncode == 65, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            "BatchedMigrationStopped: lab.0002_bump_items[0] forward: FailedRowsLeft: 2 rows "
            "failed and "
            "are recorded, and the operation accepts none, so migrate does not record "
            "lab.0002_bump_items as applied. List them: manage.py chunkwise_status lab "
            "--failed; fix the code or the data, retry them: manage.py chunkwise_run lab "
            "0002_bump_items --retry-failed, then run migrate again (or accept them with "
            "allow_failed_rows=N)")
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM django_migrations WHERE app = 'lab' AND "
                                "name = '0002_bump_items'").fetchone() == (0,)
            assert conn.execute("SELECT sum(counter) FROM lab_item").fetchone() == (98,)


def test_a_misspelled_name_is_refused_by_migrate_even_with_the_checks_skipped(
        tmp_path: Path) -> None:
    db = tmp_path / "lab.sqlite3"
    assert lab_on_sqlite(db)("migrate", "--database", "lite", "lab", "0001", "-v0"
                             ).returncode == 0
    result = lab_on_sqlite(db, chunkwise_defer="1")("migrate", "--database", "lite", "lab",
                                                    "0002", "--skip-checks")
    assert result.returncode == 64, result.stderr
    assert result.stderr.strip().splitlines() == [
        "CommandError: environment variable chunkwise_defer: chunkwise has no such variable, "
        "so it would be ignored; did you mean CHUNKWISE_DEFER?; rename it to CHUNKWISE_DEFER "
        "(every name: https://chunkwise.github.io/chunkwise/reference/settings/)"]


def test_kubernetes_service_links_and_tunables_in_settings_are_told_apart() -> None:
    """A Service named chunkwise-metrics in the namespace puts CHUNKWISE_METRICS_SERVICE_HOST
    and CHUNKWISE_METRICS_PORT_9101_TCP... into every pod: nobody's misspelling."""
    from chunkwise.django.config import known_env_names, misspelled

    links = ["CHUNKWISE_METRICS_SERVICE_HOST", "CHUNKWISE_METRICS_SERVICE_PORT",
             "CHUNKWISE_METRICS_SERVICE_PORT_METRICS", "CHUNKWISE_METRICS_PORT_9101_TCP",
             "CHUNKWISE_METRICS_PORT_9101_TCP_ADDR", "CHUNKWISE_METRICS_PORT_9101_TCP_PROTO"]
    assert misspelled(links, known_env_names()) == []
    assert misspelled(["CHUNKWISE_Defer"], known_env_names()) == [
        ("CHUNKWISE_Defer", "CHUNKWISE_DEFER")]


def test_the_layout_checks_judge_only_migrations_still_to_apply(tmp_path: Path) -> None:
    """A project that upgrades chunkwise must not be stopped by a layout its databases
    applied long ago (E006, E008, E009 and W001 are database checks: migrate runs them,
    and check --database)."""
    db = tmp_path / "lab.sqlite3"
    lab = lab_on_sqlite(db, LAB_BILLING="1")
    assert "chunkwise.E006" in lab("check", "--database", "lite").stderr
    assert "chunkwise.E006" not in lab("check").stderr  # no database named: not judged
    assert lab("migrate", "--database", "lite", "chunkwise", "--skip-checks").returncode == 0
    assert lab("migrate", "--database", "lite", "billing", "--skip-checks").returncode == 0
    result = lab("check", "--database", "lite", "--fail-level", "WARNING")
    assert "chunkwise.E006" not in result.stderr and "chunkwise.W001" not in result.stderr, \
        result.stderr


def test_an_unknown_variable_in_a_datamigrations_pod_is_a_warning(tmp_path: Path) -> None:
    """A newer operator may set a CHUNKWISE_* variable this chunkwise does not know: in a
    pod (CHUNKWISE_RESOURCE set), it must not stop every run (review)."""
    lab = lab_on_sqlite(tmp_path / "lab.sqlite3", CHUNKWISE_RESOURCE="shop/customer-status",
                        CHUNKWISE_SOMETHING_NEWER="1")
    result = lab("check")
    assert result.returncode == 0, result.stderr
    assert "(chunkwise.W002) environment variable CHUNKWISE_SOMETHING_NEWER" in result.stderr
