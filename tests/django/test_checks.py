"""Django system checks (chunkwise.E001...): `manage.py check` names each mistake, and
so does every command before it runs, `migrate` included, before any row is touched."""

from __future__ import annotations

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
    assert ("mistakes.0002_key_not_unique: (chunkwise.E004) operation 0: BatchedRunPython key: "
            "mistakes.Visit.email must be the primary key or a unique field") \
        in found["chunkwise.E004"][0]
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


@pytest.mark.parametrize(("engine", "name"), [("django.db.backends.mysql", "MySQL/MariaDB"),
                                              ("django.db.backends.oracle", "Oracle")])
def test_a_database_chunkwise_does_not_run_on_is_refused(tmp_path: Path, engine: str,
                                                          name: str) -> None:
    lab = lab_on_sqlite(tmp_path / "lab.sqlite3", LAB_OTHER_ENGINE=engine)
    result = lab("check")
    assert result.returncode == 1, result.stderr
    [line] = errors_of(result.stderr)["chunkwise.E003"][:1]
    assert line == (f"other: (chunkwise.E003) database 'other' is {name} ({engine}): chunkwise "
                    f"runs batched migrations on PostgreSQL (production) and SQLite (local "
                    f"runs) only; the batched migrations of lab, later, mistakes would run there")


def test_postgresql_and_sqlite_pass(tmp_path: Path) -> None:
    result = lab_on_sqlite(tmp_path / "lab.sqlite3")("check")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (3 silenced)." in result.stdout


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
