"""What ``migrate`` checks about its plan before it runs anything (Django's pre_migrate
signal: after the system checks, before the first migration), where the system checks,
which see no database, cannot judge: the order of the plan against what is applied, and
a dry run or a retry of failed rows asked of ``migrate``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from django.core.management.base import CommandError
from django.db import connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.migration import Migration
from django.db.migrations.recorder import MigrationRecorder

from chunkwise.contract import Env, ExitCode
from chunkwise.engine import SettingsError, parse_boolean

from .ensure import EnsureBatchedComplete
from .layout_checks import runner_schema
from .operations import BatchedRunPython

__all__ = ["refuse_unsafe_plans"]

Plan = Sequence[tuple[Migration, bool]]


def refuse_unsafe_plans(sender: Any, using: str, plan: Plan | None = None,
                        **kwargs: Any) -> None:
    """The pre_migrate receiver: one line and exit 64, before any migration runs."""
    batched = [(migration, backwards) for migration, backwards in plan or ()
               if any(isinstance(op, (BatchedRunPython, EnsureBatchedComplete))
                      for op in migration.operations)]
    if not batched:
        return
    _refuse_misspelled_names()
    _refuse_dry_run(batched[0][0])
    _refuse_retry_failed(batched[0][0])
    _refuse_before_checkpoint_tables(sender.label, using, plan or (), batched)


def _refuse_misspelled_names() -> None:
    """chunkwise.E007 again, for a migrate run with --skip-checks: a misspelled
    CHUNKWISE_DEFER would run a whole migration inline."""
    from .checks import misspelled_names

    found = misspelled_names()
    if found:
        more = f" (and {len(found) - 1} more: manage.py check lists them)" if len(found) > 1 \
            else ""
        raise CommandError(f"{found[0][0]}{more}; {found[0][1]}", returncode=ExitCode.USAGE)


def _refuse_worker_switch(name: str, why: str) -> None:
    """A switch of the worker's (``chunkwise_run``) set under ``migrate``, which would
    ignore it and run the migration: refused in one line naming it, with ``why``."""
    raw = os.environ.get(name, "")
    try:
        on = bool(raw.strip()) and parse_boolean(raw, name)
    except SettingsError as exc:
        raise CommandError(str(exc), returncode=ExitCode.USAGE) from None
    if on:
        raise CommandError(f"{name} is set, but {why}", returncode=ExitCode.USAGE)


def _refuse_dry_run(first: Migration) -> None:
    """``CHUNKWISE_DRY_RUN`` is the worker's (``spec.dryRun``): ``migrate`` cannot plan
    without doing, since it records every migration it runs as applied."""
    _refuse_worker_switch(Env.DRY_RUN, (
        f"migrate cannot dry-run a batched migration (it would record {first.app_label}."
        f"{first.name} as applied): unset it, and plan with manage.py chunkwise_plan "
        f"{first.app_label} {first.name} (or chunkwise_run --dry-run)"))


def _refuse_retry_failed(first: Migration) -> None:
    """``CHUNKWISE_RETRY_FAILED`` is the worker's too (``spec.retryFailed``): ``migrate``
    would run the migration instead, not retry its failed rows, and say nothing."""
    _refuse_worker_switch(Env.RETRY_FAILED, (
        f"migrate does not retry failed rows (it would run {first.app_label}.{first.name} "
        f"instead): unset it, and retry them with manage.py chunkwise_run "
        f"{first.app_label} {first.name} --retry-failed"))


def _refuse_before_checkpoint_tables(label: str, using: str, plan: Plan,
                                     batched: Plan) -> None:
    """A batched migration planned before the chunkwise migrations the runner needs are
    applied would find no checkpoint table (or an old one): refused, whichever of them is
    missing or stale, rather than failing half-way through a non-atomic migration. Only
    those (:func:`.layout_checks.runner_schema` and its ancestors): a later one the runner
    does not use (the admin's) may run after it."""
    connection = connections[using]
    applied = MigrationRecorder(connection).applied_migrations()
    graph = MigrationLoader(connection, ignore_no_migrations=True).graph
    needed = runner_schema()
    ours = [node for node in graph.forwards_plan(needed) if node[0] == label]
    position = {(m.app_label, m.name): i for i, (m, _) in enumerate(plan)}
    for migration, _backwards in batched:
        at = position[(migration.app_label, migration.name)]
        missing = sorted(node for node in ours
                         if node not in applied and position.get(node, len(plan)) > at)
        if missing:
            raise CommandError(
                f"{migration.app_label}.{migration.name} would run before chunkwise's "
                f"migration {missing[0][1]} is applied, and it needs the checkpoint tables "
                f"that makes: add {needed!r} to its dependencies, or run `manage.py migrate "
                f"{label}` first", returncode=ExitCode.USAGE)
