"""Django system checks (``manage.py check``; ``migrate`` and every other command run them
first): mistakes that would otherwise stop a migration half-way, found before any row is
touched. Each has an id, documented in docs/django-checks.md:

- chunkwise.E001: a migration holding BatchedRunPython or EnsureBatchedComplete is atomic
  (a squashed migration is, unless edited);
- chunkwise.E002: CHUNKWISE_DEFER (setting or environment variable) is not a boolean;
- chunkwise.E003: a database the batched migrations would run on is not PostgreSQL,
  MariaDB/MySQL or SQLite (Oracle is refused);
- chunkwise.E004: ``key=`` names a field that is neither the primary key nor unique, as
  the model stands at that migration;
- chunkwise.E005: an EnsureBatchedComplete names no migration with BatchedRunPython in it;
- chunkwise.E006: a migration holding a batched operation does not depend on chunkwise's
  migrations, so ``migrate`` may run it before the checkpoint tables exist;
- chunkwise.E007: a ``CHUNKWISE_*`` environment variable or Django setting that chunkwise
  does not read (a misspelling would be ignored without a word);
- chunkwise.E008: a schema operation in the same migration as a BatchedRunPython;
- chunkwise.E009: a migration that changes the fields of a deferrable BatchedRunPython's
  model before an EnsureBatchedComplete of it;
- chunkwise.E010: a table the batched migrations write on a database cannot roll back a
  transaction (MyISAM);
- chunkwise.W001: a migration mixes a BatchedRunPython with a RunPython or RunSQL, which
  re-run when ``migrate`` is run again after the batched one stopped.
The layout ones (E006, E008, E009, W001) live in :mod:`.layout_checks`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from django.apps import AppConfig
from django.apps import apps as django_apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import connections, router
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.migration import Migration
from django.db.migrations.operations.base import Operation

from chunkwise.contract import Env
from chunkwise.engine import SettingsError

from .backends import backend_for, backend_problem
from .config import SETTINGS, defer_by_default, known_env_names, misspelled
from .ensure import EnsureBatchedComplete
from .keys import key_problem
from .layout_checks import layout_problems, where
from .models import Checkpoint, FailedRow
from .operations import BatchedRunPython

__all__ = ["check_batched_migrations", "check_defer_setting", "check_migration_layout",
           "check_names", "check_transactional_tables", "misspelled_names"]

_BATCHED = (BatchedRunPython, EnsureBatchedComplete)


def _batched_migrations(app_configs: Sequence[AppConfig] | None,
                        loader: MigrationLoader) -> Iterator[tuple[Migration, int, Operation]]:
    labels = None if app_configs is None else {config.label for config in app_configs}
    for (app_label, _name), migration in sorted(loader.disk_migrations.items()):
        if labels is not None and app_label not in labels:
            continue
        for index, operation in enumerate(migration.operations):
            if isinstance(operation, _BATCHED):
                yield migration, index, operation


@register()
def check_batched_migrations(app_configs: Sequence[AppConfig] | None = None,
                             **kwargs: Any) -> list[CheckMessage]:
    """E001, E003, E004 and E005: every migration on disk that holds a batched
    operation."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    found = list(_batched_migrations(app_configs, loader))
    errors: list[CheckMessage] = []
    atomic_said: set[tuple[str, str]] = set()
    for migration, index, operation in found:
        key = (migration.app_label, migration.name)
        if migration.atomic and key not in atomic_said:
            atomic_said.add(key)
            errors.append(Error(
                f"operation {index} is {type(operation).__name__}, which commits batch by "
                f"batch, but the migration is atomic (one transaction): migrate would stop "
                f"at it and roll the migration back",
                hint=f"add `atomic = False` to the Migration class in {where(migration)} "
                     f"(squashmigrations writes atomic migrations: edit the squashed one)",
                obj=migration, id="chunkwise.E001"))
        # a migration a squash replaced is not in the graph (the squashed one is checked)
        in_graph = (migration.app_label, migration.name) in loader.graph.nodes
        # a primary key is unique and NOT NULL by itself: only key= needs the model's state
        # (replaying the migration graph per operation), so only key= pays for it
        if isinstance(operation, BatchedRunPython) and operation.key != "pk" and in_graph:
            problem = _key_problem(loader, migration, index, operation)
            if problem:
                errors.append(Error(problem, hint=f"change key= in {where(migration)} (see "
                                                  f"'What a key must be' in the operation "
                                                  f"reference)",
                                    obj=migration, id="chunkwise.E004"))
        if isinstance(operation, EnsureBatchedComplete):
            try:
                operation._targets(loader)
            except ImproperlyConfigured as exc:
                errors.append(Error(
                    f"operation {index}: {exc}",
                    hint=f"name the migration that holds the BatchedRunPython in "
                         f"{where(migration)} (its full name, if squashing added one "
                         f"with the same prefix)",
                    obj=migration, id="chunkwise.E005"))
    errors += _backend_errors({(m.app_label, op.model if isinstance(op, BatchedRunPython)
                                else None) for m, _, op in found})
    return errors


@register(Tags.database)
def check_migration_layout(app_configs: Sequence[AppConfig] | None = None,
                           databases: Sequence[str] | None = None,
                           **kwargs: Any) -> list[CheckMessage]:
    """E006, E008, E009 and W001, for the migrations not yet applied to one of
    ``databases``: a database check (``migrate`` runs it, and ``check --database``), since
    a layout that is wrong only matters for a migration still to run; one that every
    database applied long ago must not stop a project that upgrades chunkwise."""
    if not databases:
        return []
    loader = MigrationLoader(None, ignore_no_migrations=True)
    applied = [MigrationLoader(connections[alias], ignore_no_migrations=True)
               .applied_migrations for alias in databases if alias in connections]
    pending = {node for node in loader.graph.nodes
               if not all(node in done for done in applied)}
    return layout_problems(loader, list(_batched_migrations(app_configs, loader)), pending)


@register(Tags.database)
def check_transactional_tables(app_configs: Sequence[AppConfig] | None = None,
                               databases: Sequence[str] | None = None,
                               **kwargs: Any) -> list[CheckMessage]:
    """E010: a table that batched migrations write on one of ``databases`` (the models'
    and chunkwise's own) cannot roll back a transaction (MySQL's MyISAM): a batch's rows
    and its checkpoint would not commit together. A database check: it asks the server."""
    errors: list[CheckMessage] = []
    loader = MigrationLoader(None, ignore_no_migrations=True)
    tables = {Checkpoint._meta.db_table, FailedRow._meta.db_table}
    for _migration, _index, operation in _batched_migrations(app_configs, loader):
        if isinstance(operation, BatchedRunPython):
            try:
                tables.add(django_apps.get_model(operation.model)._meta.db_table)
            except (LookupError, ValueError):  # a model the project no longer has
                continue
    for alias in databases or ():
        if alias not in connections or backend_problem(alias):
            continue
        found = backend_for(alias).non_transactional(sorted(tables))
        for table, engine in sorted(found.items()):
            errors.append(Error(
                f"table {table} of database {alias!r} is {engine}, which cannot roll back a "
                "transaction: a batch's rows and its checkpoint must commit together",
                hint=f"ALTER TABLE {table} ENGINE=InnoDB (and make InnoDB the server's "
                     "default_storage_engine)",
                obj=alias, id="chunkwise.E010"))
    return errors


def _key_problem(loader: MigrationLoader, migration: Migration, index: int,
                 operation: BatchedRunPython) -> str:
    """What is wrong with ``operation.key`` in the model as it stands at ``index``."""
    state = loader.project_state((migration.app_label, migration.name), at_end=False)
    for earlier in migration.operations[:index]:
        earlier.state_forwards(migration.app_label, state)
    app_label, model_name = operation.model.split(".")
    model = state.models.get((app_label, model_name.lower()))
    if model is None:
        return ""  # the run says so: an unknown model is not this check's to judge
    where = f"operation {index}"
    name = operation.key
    try:
        field = model.get_field(name).clone()  # unbound, as a migration state's are
    except (KeyError, FieldDoesNotExist):
        return (f"{where}: BatchedRunPython key: {operation.model} has no field "
                f"{operation.key!r}")
    field.set_attributes_from_name(name)
    problem = key_problem(operation.model, field, model.options.get("unique_together", ()),
                          model.options.get("constraints", ()))
    return f"{where}: {problem}" if problem else ""


def _backend_errors(targets: set[tuple[str, str | None]]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for alias in connections:
        problem = backend_problem(alias)
        if not problem:
            continue
        apps = sorted({app_label for app_label, model in targets
                       if router.allow_migrate(alias, app_label,
                                               model_name=model.split(".")[1].lower()
                                               if model else None)})
        if apps:
            errors.append(Error(
                f"{problem}; the batched migrations of {', '.join(apps)} would run there",
                hint="route those apps' migrations to a PostgreSQL or MariaDB database "
                     "(DATABASE_ROUTERS, allow_migrate), or migrate that database without "
                     "BatchedRunPython",
                obj=alias, id="chunkwise.E003"))
    return errors


@register()
def check_defer_setting(app_configs: Sequence[AppConfig] | None = None,
                        **kwargs: Any) -> list[CheckMessage]:
    """E002: CHUNKWISE_DEFER, the environment variable or the setting, is a boolean."""
    try:
        defer_by_default(os.environ, getattr(settings, "CHUNKWISE_DEFER", False))
    except SettingsError as exc:
        where = Env.DEFER if os.environ.get(Env.DEFER, "").strip() else \
            "settings.CHUNKWISE_DEFER"
        return [Error(str(exc), hint=f"set {where} to true or false (True or False in "
                                     f"settings), or leave it unset (no deferring)",
                      id="chunkwise.E002")]
    return []


#: where every name chunkwise reads is listed, for a hint
SETTINGS_PAGE = "https://chunkwise.github.io/chunkwise/reference/settings/"


def misspelled_names() -> list[tuple[str, str]]:
    """(message, hint) for each ``CHUNKWISE_*`` environment variable and Django setting
    that chunkwise does not read, with the closest name it does."""
    found: list[tuple[str, str]] = []
    environment = known_env_names()
    for name, closest in misspelled(os.environ, environment):
        found.append((f"environment variable {name}: chunkwise has no such variable, so it "
                      f"would be ignored" + (f"; did you mean {closest}?" if closest else ""),
                      (f"rename it to {closest}" if closest else "remove it") +
                      f" (every name: {SETTINGS_PAGE})"))
    for name, closest in misspelled([n for n in dir(settings) if n.isupper()], SETTINGS):
        if name in environment:  # a tunable set where chunkwise does not look for it
            found.append((f"setting settings.{name}: chunkwise reads {name} from the "
                          f"environment, not from settings, so it would be ignored",
                          f"set it as an environment variable (or, for batch_size, "
                          f"lock_timeout and statement_timeout, as the operation's argument) "
                          f"and remove the setting ({SETTINGS_PAGE})"))
            continue
        found.append((f"setting settings.{name}: chunkwise has no such setting, so it would "
                      f"be ignored" + (f"; did you mean {closest}?" if closest else ""),
                      (f"rename it to {closest}" if closest else "remove it") +
                      f" (every name: {SETTINGS_PAGE})"))
    return found


@register()
def check_names(app_configs: Sequence[AppConfig] | None = None,
                **kwargs: Any) -> list[CheckMessage]:
    """E007: names chunkwise does not read (see misspelled_names). In a DataMigration's
    pod, an environment variable is W002 instead: the operator sets that environment, and
    a newer operator may set a variable this chunkwise does not know yet; stopping every
    run on it would fail them all until the application's image is rebuilt."""
    in_pod = bool(os.environ.get(Env.RESOURCE))
    return [Warning(message, hint=hint, id="chunkwise.W002")
            if in_pod and message.startswith("environment variable")
            else Error(message, hint=hint, id="chunkwise.E007")
            for message, hint in misspelled_names()]
