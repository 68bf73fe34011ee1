"""System checks on where batched operations sit in the migration graph: what runs
before them, beside them and after them. Each would otherwise lose or repeat data only
when something goes wrong (a crash, a halt, a deferred run), long after review:

- chunkwise.E006: no chunkwise migration among a batched migration's ancestors;
- chunkwise.E008: a schema operation beside a BatchedRunPython;
- chunkwise.E009: a later migration changes the fields of a deferrable BatchedRunPython's
  model before an EnsureBatchedComplete of it has run;
- chunkwise.W001: a RunPython or RunSQL beside a BatchedRunPython.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterable, Sequence

from django.apps import apps as django_apps
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.db.migrations import operations as ops
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.migration import Migration
from django.db.migrations.operations.base import Operation

from .ensure import EnsureBatchedComplete
from .operations import BatchedRunPython

__all__ = ["RUNNER_MIGRATION", "layout_problems", "runner_schema", "where"]

Node = tuple[str, str]
Found = Sequence[tuple[Migration, int, Operation]]
#: a migration -> its EnsureBatchedComplete operations: (index, the migration it ensures,
#: the indexes of the operations of that migration it ensures)
Ensures = dict[Node, list[tuple[int, Node, set[int]]]]

#: beside a BatchedRunPython: they commit on their own too, and run again when migrate is
#: run again after the batched operation stopped (W001); any other operation changes the
#: schema, which then fails ("already exists") or runs before a deferred step (E008)
_CODE = (ops.RunPython, ops.RunSQL)
_BATCHED = (BatchedRunPython, EnsureBatchedComplete)
#: what changes a model's fields under a deferred data step that still has to read them
_FIELD_CHANGES = (ops.AlterField, ops.RemoveField, ops.RenameField)
_MODEL_CHANGES = (ops.DeleteModel, ops.RenameModel)


def where(migration: Migration) -> str:
    """The migration's file, relative to the working directory, as a hint names it."""
    module = sys.modules.get(type(migration).__module__)
    path = getattr(module, "__file__", None)
    return os.path.relpath(path) if path else f"{migration.app_label}.{migration.name}"


def _label() -> str:
    """chunkwise's app label, as the project installed it."""
    config = django_apps.get_containing_app_config(__name__)
    assert config is not None
    return config.label


#: chunkwise's newest migration that a batched run needs: the checkpoint and failed-row
#: tables as the runner reads and writes them. Not simply chunkwise's latest: 0004 (the
#: admin's run proxy, its permissions and the retry marks) is none of the runner's, and the
#: migrations users wrote against this one must keep migrating when a plan puts 0004 after
#: them. Move it on only with a migration whose schema the runner uses.
RUNNER_MIGRATION = "0003_checkpoint_verification"


def runner_schema() -> Node:
    """What a batched migration depends on (E006's hint), and what migrate's guard
    requires applied before one runs: :data:`RUNNER_MIGRATION` and its ancestors."""
    return _label(), RUNNER_MIGRATION


def layout_problems(loader: MigrationLoader, found: Found,
                    pending: Collection[Node]) -> list[CheckMessage]:
    """E006, E008, E009 and W001 for the migrations of ``found`` (those holding a batched
    operation, with their index), said of the ``pending`` migrations only (those still to
    apply somewhere)."""
    in_graph = {(m.app_label, m.name): m for m, _, _ in found
                if (m.app_label, m.name) in loader.graph.nodes}  # a squash's are not
    batched = [(m, i, op) for m, i, op in found
               if isinstance(op, BatchedRunPython) and (m.app_label, m.name) in in_graph]
    problems = (_dependency_errors(loader, in_graph)
                + _beside_problems({(m.app_label, m.name): m for m, _, _ in batched})
                + _changed_before_ensured(loader, batched))
    return [p for p in problems
            if (p.obj.app_label, p.obj.name) in pending]


def _dependency_errors(loader: MigrationLoader,
                       migrations: dict[Node, Migration]) -> list[CheckMessage]:
    """E006: Django orders apps' migrations by name where nothing says otherwise, so an
    app that sorts before "chunkwise" (billing) had its batched migration run before the
    checkpoint tables existed, and what ran before it in that non-atomic migration ran
    again on the next migrate."""
    errors: list[CheckMessage] = []
    for node, migration in sorted(migrations.items()):
        if any(app == _label() for app, _ in loader.graph.forwards_plan(node)):
            continue
        errors.append(Error(
            "its batched operations keep their checkpoints in chunkwise's tables, but it does "
            "not depend on chunkwise's migrations: migrate may run it before those tables "
            "exist",
            hint=f"add {runner_schema()!r} to `dependencies` in {where(migration)}",
            obj=migration, id="chunkwise.E006"))
    return errors


#: operations that change Django's state of the models only, never the database
_STATE_ONLY = (ops.AlterModelOptions, ops.AlterModelManagers)


def _touches_schema(operation: Operation) -> bool:
    """Whether ``operation`` changes the database's schema (E008): not code (W001's), not
    a state-only one, not a SeparateDatabaseAndState whose database part is only code."""
    if isinstance(operation, ops.SeparateDatabaseAndState):
        return any(map(_touches_schema, operation.database_operations))
    return not isinstance(operation, (*_CODE, *_BATCHED, *_STATE_ONLY))


def _listed(migration: Migration, kinds: tuple[type, ...]) -> list[str]:
    return [f"{index} ({type(op).__name__})" for index, op in enumerate(migration.operations)
            if isinstance(op, kinds)]


def _beside_problems(migrations: dict[Node, Migration]) -> list[CheckMessage]:
    """E008 and W001: each operation of a non-atomic migration commits on its own, and
    Django records the migration only at its end: after a halt or a crash in the batched
    operation, the next migrate runs the others again. A deferred batched operation is only
    planned, so the operations after it run before its data step."""
    problems: list[CheckMessage] = []
    for _node, migration in sorted(migrations.items()):
        if migration.atomic:
            continue  # E001's
        others = [op for op in migration.operations if not isinstance(op, _BATCHED)]
        schema = _listed(migration, tuple({type(op) for op in others if _touches_schema(op)}))
        if schema:
            problems.append(Error(
                f"operations {', '.join(schema)} change the schema in the same migration as a "
                f"BatchedRunPython: after a crash or a halt, migrate runs them again and fails "
                f"('already exists'), and a deferred data step runs only after all of them",
                hint=f"split {where(migration)} into three migrations: the schema changes the "
                     f"data step needs, the BatchedRunPython alone, then the schema changes "
                     f"that need the data (after an EnsureBatchedComplete of it); see "
                     f"'Where the operation goes' in the operation reference",
                obj=migration, id="chunkwise.E008"))
        code = _listed(migration, _CODE)
        if code:
            problems.append(Warning(
                f"operations {', '.join(code)} share this migration with a BatchedRunPython: "
                f"if the batched operation stops before the end (a halt, a crash, Ctrl-C), "
                f"migrate runs them again next time (a RunPython applies twice)",
                hint=f"keep the BatchedRunPython alone in its migration: move the others of "
                     f"{where(migration)} into a migration before it or after it",
                obj=migration, id="chunkwise.W001"))
    return problems


def _changes_fields_of(operation: Operation, model: str) -> bool:
    if isinstance(operation, _FIELD_CHANGES):
        return bool(operation.model_name.lower() == model)
    if isinstance(operation, ops.DeleteModel):
        return bool(operation.name.lower() == model)
    if isinstance(operation, ops.RenameModel):
        return bool(operation.old_name.lower() == model)
    return False


def _ensures(loader: MigrationLoader) -> Ensures:
    """Every EnsureBatchedComplete in the graph: its migration -> (its index, the migration
    it ensures, the operations of that migration it ensures)."""
    found: Ensures = {}
    for node, migration in loader.graph.nodes.items():
        for index, operation in enumerate(migration.operations):
            if not isinstance(operation, EnsureBatchedComplete):
                continue
            try:
                name, targets = operation._targets(loader)
            except ImproperlyConfigured:
                continue  # E005 says so
            found.setdefault(node, []).append(
                (index, (operation.app_label, name), {i for i, _ in targets}))
    return found


def _ensured_before(loader: MigrationLoader, ensures: Ensures, step: tuple[Node, int],
                    change: tuple[Node, int]) -> bool:
    """Whether an EnsureBatchedComplete of ``step`` (migration, index) runs before
    ``change`` (migration, index): in a migration that ``change``'s depends on, or
    earlier in the same one."""
    (step_node, step_index), (change_node, change_index) = step, change
    for node in loader.graph.forwards_plan(change_node):
        limit = change_index if node == change_node else len(loader.graph.nodes[node].operations)
        if any(target == step_node and step_index in indices and at < limit
               for at, target, indices in ensures.get(node, ())):
            return True
    return False


def _changed_before_ensured(loader: MigrationLoader, batched: Iterable[tuple[Migration, int,
                                                                             Operation]]
                            ) -> list[CheckMessage]:
    """E009: with CHUNKWISE_DEFER, migrate only plans a BatchedRunPython and goes on; a later
    migration that removes or changes a field of its model (RemoveField of the column the
    data step reads) then runs before the data step, and every value is lost, unless an
    EnsureBatchedComplete of it runs first (in that migration, or one it depends on). One
    error per such migration, naming every data step it must ensure first."""
    graph = loader.graph
    ensures = _ensures(loader)
    # the migration that changes the model -> (the change's index, the steps not ensured)
    unensured: dict[Node, tuple[int, list[tuple[Migration, int, BatchedRunPython]]]] = {}
    for migration, index, operation in batched:
        assert isinstance(operation, BatchedRunPython)
        if operation.defer is False:
            continue  # always inline: nothing after it runs before its data step
        node = (migration.app_label, migration.name)
        app_label, model = operation.model.split(".")
        for later_node in graph.backwards_plan(node):  # every migration that depends on it
            later = graph.nodes[later_node]
            if later_node == node or later_node[0] != app_label:
                continue
            changes = [i for i, op in enumerate(later.operations)
                       if _changes_fields_of(op, model.lower())]
            if not changes or _ensured_before(loader, ensures, (node, index),
                                              (later_node, changes[0])):
                continue
            first, steps = unensured.setdefault(later_node, (changes[0], []))
            steps.append((migration, index, operation))
    errors: list[CheckMessage] = []
    for later_node, (change, steps) in sorted(unensured.items()):
        later = graph.nodes[later_node]
        op = later.operations[change]
        named = ", ".join(f"{m.app_label}.{m.name}[{i}]" for m, i, _ in steps)
        models = ", ".join(sorted({operation.model for _, _, operation in steps}))
        ensure = "; ".join(f"EnsureBatchedComplete({m.app_label!r}, {m.name!r})"
                           for m, _, _ in sorted({(m.app_label, m.name): (m, i, o)
                                                  for m, i, o in steps}.values(),
                                                 key=lambda step: step[0].name))
        errors.append(Error(
            f"operation {change} ({type(op).__name__}) changes {models}, whose data "
            f"{named} {'migrate' if len(steps) > 1 else 'migrates'}, and nothing ensures "
            f"{'those data steps are' if len(steps) > 1 else 'that data step is'} complete "
            f"before it: when migrate defers a step (CHUNKWISE_DEFER), this runs first and "
            f"the step finds its data gone or changed",
            hint=f"put {ensure} before it in {where(later)} (or in a migration it depends "
                 f"on: every later migration is then covered), or give the "
                 f"BatchedRunPython defer=False",
            obj=later, id="chunkwise.E009"))
    return errors
