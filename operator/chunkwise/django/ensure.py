"""``EnsureBatchedComplete``: a later release's migration makes sure a deferred batched
data migration has finished before anything that depends on its data.

Done: nothing to do. Being run elsewhere (a DataMigration's worker holds it): fail at
once naming it, or wait up to ``wait`` seconds. Not started or partly done: finish the
rest here, in batches, from the checkpoint, as ``migrate`` runs any BatchedRunPython.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import router
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.base import Operation, OperationCategory
from django.db.migrations.state import ProjectState, StateApps

from chunkwise.contract import ExitCode, ShardState

from .migration_lookup import MigrationNotFound, find_migration
from .operation_ref import OperationRef
from .operations import BatchedMigrationStopped, BatchedRunPython, busy_hint, said_as_usage

__all__ = ["EnsureBatchedComplete"]

#: how often a waiting EnsureBatchedComplete looks again (seconds)
POLL_SECONDS = 2.0


class EnsureBatchedComplete(Operation):
    """Finish ``app_label.migration_name``'s BatchedRunPython operations (all of them, or
    the one at index ``operation``) if a DataMigration has not. ``wait``: seconds to wait
    for a DataMigration that is running it now; 0 fails at once, naming it."""

    reduces_to_sql = False
    reversible = True  # backward it does nothing: the data stays migrated
    atomic = False  # finishing the run commits batch by batch
    elidable = True  # once every database has passed it, squashing may drop it
    category = OperationCategory.PYTHON

    def __init__(self, app_label: str, migration_name: str, operation: int | None = None, *,
                 wait: float = 0.0) -> None:
        if not isinstance(app_label, str) or not app_label.isidentifier():
            raise ValueError(f"EnsureBatchedComplete app_label: expected an app label such as "
                             f"'shop', got {app_label!r}")
        if not isinstance(migration_name, str) or not migration_name or "/" in migration_name:
            raise ValueError(f"EnsureBatchedComplete migration_name: expected a migration name "
                             f"or unique prefix such as '0002', got {migration_name!r}")
        if operation is not None and (isinstance(operation, bool)
                                      or not isinstance(operation, int) or operation < 0):
            raise ValueError(f"EnsureBatchedComplete operation: expected None (every "
                             f"BatchedRunPython of the migration) or an index >= 0, got "
                             f"{operation!r}")
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise ValueError(f"EnsureBatchedComplete wait: expected seconds >= 0, got {wait!r}")
        self.app_label = app_label
        self.migration_name = migration_name
        self.operation = operation
        self.wait = float(wait)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        if self.operation is not None:
            kwargs["operation"] = self.operation
        if self.wait:
            kwargs["wait"] = self.wait
        return self.__class__.__name__, [self.app_label, self.migration_name], kwargs

    def describe(self) -> str:
        which = "" if self.operation is None else f" operation {self.operation}"
        return (f"Ensure batched data migration {self.app_label}.{self.migration_name}{which} "
                "is complete (finish it here if not)")

    @property
    def migration_name_fragment(self) -> str:
        return f"ensure_{self.app_label}_{self.migration_name}"

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass

    def database_forwards(self, app_label: str, schema_editor: BaseDatabaseSchemaEditor,
                          from_state: ProjectState, to_state: ProjectState) -> None:
        with said_as_usage():  # a mistake is one line and exit 64, not a traceback
            self._forwards(schema_editor, from_state)

    def _forwards(self, schema_editor: BaseDatabaseSchemaEditor,
                  from_state: ProjectState) -> None:
        connection = schema_editor.connection
        if not router.allow_migrate(connection.alias, self.app_label):
            return
        name, operations = self._targets(MigrationLoader(connection))
        if connection.in_atomic_block:
            raise ImproperlyConfigured(
                f"EnsureBatchedComplete({self.app_label!r}, {self.migration_name!r}) may "
                "finish the run in committed batches, so its migration needs `atomic = False`")
        # the models as the schema is now: the code runs against today's tables
        from_state.clear_delayed_apps_cache()
        for index, operation in operations:
            self._ensure(operation, OperationRef(self.app_label, name, index), from_state.apps,
                         schema_editor)

    def database_backwards(self, app_label: str, schema_editor: BaseDatabaseSchemaEditor,
                           from_state: ProjectState, to_state: ProjectState) -> None:
        pass

    def _targets(self, loader: MigrationLoader) -> tuple[str, list[tuple[int, BatchedRunPython]]]:
        try:
            migration = find_migration(loader, self.app_label, self.migration_name)
        except MigrationNotFound as exc:
            raise ImproperlyConfigured(f"EnsureBatchedComplete {exc}") from None
        batched = [(i, op) for i, op in enumerate(migration.operations)
                   if isinstance(op, BatchedRunPython)]
        if self.operation is not None:
            batched = [(i, op) for i, op in batched if i == self.operation]
        if not batched:
            what = "BatchedRunPython operations" if self.operation is None else \
                f"BatchedRunPython operation at index {self.operation}"
            raise ImproperlyConfigured(
                f"EnsureBatchedComplete: {self.app_label}.{migration.name} has no {what}")
        return migration.name, batched

    def _ensure(self, operation: BatchedRunPython, ref: OperationRef, apps: StateApps,
                schema_editor: BaseDatabaseSchemaEditor) -> None:
        from .execute import recorded

        alias = schema_editor.connection.alias
        state, _owner, shards = recorded(ref, alias)
        if state == ShardState.DONE:
            operation.refuse_failed_rows(ref, alias, ensuring=True)  # done, not past failures
            sys.stdout.write(f"\n  {ref} is complete\n")
            return
        deadline = time.monotonic() + self.wait
        sys.stdout.write(f"\n  ensuring {ref} is complete: finishing it here\n")
        sys.stdout.flush()
        # a run split into shards is finished shard by shard, with the same split
        for shard in range(shards):
            self._finish(operation, dataclasses.replace(ref, shard=shard, shard_count=shards),
                         apps, schema_editor, deadline)
        operation.refuse_failed_rows(ref, alias, ensuring=True)

    def _finish(self, operation: BatchedRunPython, ref: OperationRef, apps: StateApps,
                schema_editor: BaseDatabaseSchemaEditor, deadline: float) -> None:
        from .execute import execute, recorded

        while True:
            outcome = execute(operation, ref, apps, schema_editor)
            if outcome.exit_code == ExitCode.DONE:
                return
            left = deadline - time.monotonic()
            if outcome.exit_code == ExitCode.BUSY and left > 0:
                time.sleep(min(POLL_SECONDS, left))
                continue
            hint = ""
            if outcome.exit_code == ExitCode.BUSY:
                hint = busy_hint(recorded(ref, schema_editor.connection.alias)[1], self.wait,
                                 ensure=True)
            raise BatchedMigrationStopped.of(f"EnsureBatchedComplete: {ref}", outcome, hint)
