"""Finding the migration a user names (``chunkwise_run``, ``EnsureBatchedComplete``, a
DataMigration's ``spec.migration``), with errors that say which part is wrong: an app
that is not installed is not "a migration that does not exist"."""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.db.migrations.exceptions import AmbiguityError
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.migration import Migration
from django.db.migrations.operations.base import OperationCategory

__all__ = ["MigrationNotFound", "app_problem", "app_problems", "find_migration",
           "schema_not_applied"]


class MigrationNotFound(LookupError):
    """The named app or migration is not there; the message starts with the argument
    at fault (``app_label:`` or ``migration_name:``)."""


def app_problem(app_label: str, loader: MigrationLoader) -> str:
    """What is wrong with ``app_label`` as the app of a migration, or "" if nothing."""
    installed = {config.label for config in apps.get_app_configs()}
    if app_label not in installed:
        with_migrations = ", ".join(sorted(installed & loader.migrated_apps))
        return (f"app_label: no installed app is called {app_label!r} (apps with "
                f"migrations: {with_migrations or 'none'})")
    if app_label not in loader.migrated_apps:
        return f"app_label: the app {app_label!r} has no migrations"
    return ""


def find_migration(loader: MigrationLoader, app_label: str, name: str) -> Migration:
    """``app_label``'s migration called ``name`` or starting with it."""
    problem = app_problem(app_label, loader)
    if problem:
        raise MigrationNotFound(problem)
    exact = loader.disk_migrations.get((app_label, name))
    if exact is not None:  # squashing adds "0002_x_squashed_0003_y": "0002_x" is still 0002_x
        return exact
    try:
        return loader.get_migration_by_prefix(app_label, name)
    except (AmbiguityError, KeyError) as exc:  # Django's own words name both
        raise MigrationNotFound(
            f"migration_name: {exc.args[0] if exc.args else exc}") from None


def app_problems(app_labels: Iterable[str], loader: MigrationLoader) -> list[str]:
    return [problem for label in sorted(set(app_labels))
            if (problem := app_problem(label, loader))]


def schema_not_applied(loader: MigrationLoader, migration: Migration, alias: str) -> str:
    """What keeps ``migration``'s batched operation from running now, or "": the earlier
    migrations that change the schema (any operation but Python code, as ``migrate --plan``
    tells them apart) and are not applied to ``alias``. Its code runs against the tables
    they make: without them every row fails alike (``no such column``), which is no data
    error. Earlier data migrations are not needed: their rows are theirs."""
    key = (migration.app_label, migration.name)
    if key not in loader.graph.nodes:  # replaced by a squashed migration: that one runs
        return ""
    missing = [earlier for earlier in loader.graph.forwards_plan(key)[:-1]
               if earlier not in loader.applied_migrations
               and any(getattr(operation, "category", None) != OperationCategory.PYTHON
                       for operation in loader.graph.nodes[earlier].operations)]
    if not missing:
        return ""
    # migrate to the last missing one of each app applies the others it depends on
    last = dict(missing)
    return (f"migration_name: {migration.app_label}.{migration.name} runs on the schema "
            f"that earlier migrations make, and these are not applied to database "
            f"{alias!r}: {', '.join(f'{app}.{name}' for app, name in missing)}; apply them "
            "first (" + " and ".join(f"manage.py migrate {app} {name}"
                                     for app, name in last.items()) + ")")
