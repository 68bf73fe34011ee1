"""``BatchedRunPython``: a RunPython that commits in batches and resumes from a checkpoint."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import router
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations.base import Operation, OperationCategory
from django.db.migrations.state import ProjectState, StateApps
from django.db.models import Aggregate, Q, Window

from chunkwise.contract import Direction, ExitCode
from chunkwise.engine import Outcome, RunSettings, SettingsError, Timeouts

from .noop import batched_noop, is_noop
from .operation_ref import OperationRef, owner_resource

__all__ = ["BatchedMigrationMisconfigured", "BatchedMigrationStopped", "BatchedRunPython",
           "said_as_usage"]


class BatchedMigrationStopped(CommandError):
    """Raised inside ``migrate`` when a batched operation stopped before the end
    (halted, interrupted, another runner). The checkpoint is intact: run migrate again.

    A CommandError, so ``migrate`` prints it as one line and exits with the runner's own
    status (65 halted, 69 another runner, 75 interrupted), not with a traceback."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message, returncode=exit_code)
        self.exit_code = exit_code

    @classmethod
    def of(cls, what: str, outcome: Outcome, hint: str = "") -> BatchedMigrationStopped:
        """``what`` stopped with ``outcome``. A halt's message says what to change (running
        again as it is halts again at once); any other stop ends when migrate runs again,
        unless ``hint`` says otherwise."""
        if outcome.exit_code != ExitCode.HALTED:
            hint = hint or "run migrate again to continue"
        return cls(f"{what}: {outcome.reason}: {outcome.message}" + (f"; {hint}" if hint
                                                                     else "") + ".",
                   int(outcome.exit_code))


def busy_hint(owner: str, waited: float = 0.0, ensure: bool = False) -> str:
    """How ``migrate`` goes on when another runner, ``owner``, holds the operation (after
    ``waited`` seconds; ``ensure``: EnsureBatchedComplete, which can wait for it)."""
    waited_text = f"waited {waited:.0f}s; " if waited else ""
    resource = owner_resource(owner)
    if resource is not None:
        return (f"{waited_text}wait for it (kubectl wait --for=condition=Succeeded "
                f"datamigration/{resource.name} -n {resource.namespace} --timeout=1h) and "
                "migrate again" + (", or give EnsureBatchedComplete wait=SECONDS" if ensure
                                   else ""))
    return f"{waited_text}wait for it to finish and migrate again"


class BatchedMigrationMisconfigured(CommandError):
    """Raised inside ``migrate`` for a mistake in the migration or the settings (an atomic
    migration, a key that is not unique, a bad tunable): ``migrate`` prints it as one line
    and exits 64, as ``chunkwise_run`` does, instead of a traceback. Nothing was run."""

    def __init__(self, message: str) -> None:
        super().__init__(message, returncode=ExitCode.USAGE)


@contextmanager
def said_as_usage() -> Iterator[None]:
    """Around an operation's work inside ``migrate``: a misconfiguration, which retrying
    cannot fix, becomes :class:`BatchedMigrationMisconfigured`."""
    try:
        yield
    except (ImproperlyConfigured, SettingsError) as exc:
        raise BatchedMigrationMisconfigured(str(exc)) from None


#: what each piece of code is called with: checked when the migration loads, not when the
#: first batch calls it (or, for reverse, the day someone migrates backwards)
_CALLED_WITH = dict(forward="(apps, schema_editor, batch)",  # the arguments' own names
                    reverse="(apps, schema_editor, batch)", transform="(row)",
                    prepare="(apps, batch)")
#: a transform beside a prepare gets what prepare returned, once per batch, as well
_TRANSFORM_WITH_CONTEXT = "(row, context)"


BatchedCode = Callable[[StateApps, BaseDatabaseSchemaEditor, Any], None]
#: only ever RunPython.noop (the signature check refuses any other)
RunPythonCode = Callable[[StateApps, BaseDatabaseSchemaEditor], None]


def _check_callable(value: object, name: str, called_with: str = "") -> None:
    if value is None or is_noop(value):
        return
    called_with = called_with or _CALLED_WITH[name]
    if not callable(value):  # ValueError, as RunPython raises
        raise ValueError(f"BatchedRunPython {name}: expected a callable, got {value!r}")
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # a builtin without one: the call will tell
        return
    arguments = called_with.strip("()").split(", ")
    try:
        signature.bind(*arguments)
    except TypeError:
        qualname = getattr(value, "__qualname__", repr(value))
        run_python = " (RunPython code takes (apps, schema_editor); a batched one takes the " \
            "batch too)"
        with_context = " (beside prepare=, it gets what prepare returned for the batch as " \
            "its second argument)" if called_with == _TRANSFORM_WITH_CONTEXT else ""
        why = dict(forward=run_python, reverse=run_python, transform=with_context).get(name, "")
        raise ValueError(
            f"BatchedRunPython {name}: {qualname}{signature} cannot be called as "
            f"{name}{called_with}{why}") from None


_NOT_PER_ROW = (Aggregate, Window)


def _summary_in(expression: object) -> object | None:
    """The aggregate or window function inside ``expression``, if any (not inside a
    Subquery, which is a query of its own)."""
    if isinstance(expression, _NOT_PER_ROW):
        return expression
    sources = getattr(expression, "get_source_expressions", None)
    for source in sources() if callable(sources) else ():
        found = _summary_in(source)
        if found is not None:
            return found
    return None


def _check_annotate(annotate: object) -> None:
    """``annotate``: names a row can carry, each with an expression of one value per row."""
    if not isinstance(annotate, Mapping) or not annotate:
        raise ValueError(f"BatchedRunPython annotate: expected a dict of names to "
                         f"expressions, e.g. {{'customer_name': F('customer__name')}}, got "
                         f"{annotate!r}")
    for name, expression in annotate.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_") \
                or "__" in name or name == "pk":
            raise ValueError(f"BatchedRunPython annotate: {name!r} cannot be a row's "
                             "attribute; expected a name such as 'customer_name' (no "
                             "leading underscore, no '__', not 'pk')")
        if not hasattr(expression, "resolve_expression"):
            raise ValueError(f"BatchedRunPython annotate: {name!r}: expected an expression "
                             f"(F('customer__name'), Subquery(...), Lower('email')), got "
                             f"{expression!r}")
        summary = _summary_in(expression)
        if summary is not None:
            raise ValueError(
                f"BatchedRunPython annotate: {name!r}: {summary} summarises many rows, "
                f"which the batch's rows cannot be grouped or windowed for; compute one value "
                f"per row with a Subquery (e.g. Subquery(Order.objects.filter(customer="
                f"OuterRef('pk')).values('customer').annotate(n=Count('pk')).values('n'))), "
                f"or load the figures once per batch with prepare=")


def _check_only(only: object) -> None:
    if isinstance(only, str) or not isinstance(only, (list, tuple)) or not only or \
            not all(isinstance(name, str) for name in only):
        raise ValueError(f"BatchedRunPython only: expected a list of the field names the "
                         f"transform reads, e.g. ['email', 'last_login'], got {only!r}")


class BatchedRunPython(Operation):
    """Run data-migration code over a model's rows in small committed batches.

    Give either ``forward(apps, schema_editor, batch)`` (set-based: ``batch`` is a
    queryset of the rows still to do in one key range, with ``batch.write(rows, fields)``
    and ``batch.insert(Model, rows)``) or ``transform(row)`` with the ``fields`` it writes
    (per row; written back with one UPDATE per batch). A transform's rows carry the
    ``annotate`` expressions' values, and only the ``only`` fields when given; with
    ``prepare(apps, batch)``, run once per batch, it is called ``transform(row,
    context)`` with what prepare returned. ``reverse`` is set-based and makes the
    operation reversible. Use in a migration with ``atomic = False``.

    ``defer``: whether ``migrate`` runs it (False), or only plans it and leaves the run
    to a DataMigration or ``chunkwise_run`` (True); None follows ``CHUNKWISE_DEFER``.
    """

    reduces_to_sql = False
    atomic = False  # every batch commits on its own; the migration must not wrap them
    elidable = False
    category = OperationCategory.PYTHON  # as RunPython: `migrate --plan` marks it "p"

    def __init__(
        self,
        model: str,
        forward: BatchedCode | RunPythonCode | None = None,
        *,
        transform: Callable[..., Any] | None = None,
        fields: Sequence[str] = (),
        prepare: Callable[[StateApps, Any], Any] | None = None,
        annotate: Mapping[str, Any] | None = None,
        only: Sequence[str] | None = None,
        reverse: BatchedCode | RunPythonCode | None = None,
        todo: Q | None = None,
        reverse_todo: Q | None = None,
        done: Q | None = None,
        key: str = "pk",
        batch_size: int = 1000,
        lock_timeout: float = 2.0,
        statement_timeout: float = 30.0,
        hints: dict[str, Any] | None = None,
        elidable: bool = False,
        defer: bool | None = None,
        allow_failed_rows: int = 0,
    ) -> None:
        if not isinstance(model, str) or model.count(".") != 1:
            raise ValueError(
                f"BatchedRunPython model: expected 'app_label.ModelName', got {model!r}")
        if (forward is None) == (transform is None):
            raise ValueError("BatchedRunPython: give exactly one of forward= (set-based, gets a "
                             "queryset per batch) or transform= (per row, with fields=)")
        for name, value in dict(forward=forward, reverse=reverse, prepare=prepare).items():
            _check_callable(value, name)
        _check_callable(transform, "transform", _TRANSFORM_WITH_CONTEXT if prepare else "")
        if transform is not None and not fields:
            raise ValueError("BatchedRunPython fields: transform= needs the names of the fields "
                             "it writes, e.g. fields=['status']")
        per_row: dict[str, object] = dict(fields=fields or None, prepare=prepare,
                                          annotate=annotate, only=only)
        for name, given in per_row.items():
            if given is not None and transform is None:
                raise ValueError(f"BatchedRunPython {name}: only used with transform= (set-"
                                 f"based code reads and writes its batch queryset itself)")
        if annotate is not None:
            _check_annotate(annotate)
        if only is not None:
            _check_only(only)
        if done is not None and todo is None:
            raise ValueError("BatchedRunPython done: it names rows that keep matching todo "
                             "once handled, so it needs todo=")
        for name, condition in dict(todo=todo, reverse_todo=reverse_todo, done=done).items():
            if condition is not None and not isinstance(condition, Q):
                raise ValueError(
                    f"BatchedRunPython {name}: expected a Q object, got {condition!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"BatchedRunPython batch_size: expected an integer >= 1, got "
                             f"{batch_size!r}")
        if defer is not None and not isinstance(defer, bool):
            raise ValueError(f"BatchedRunPython defer: expected True, False or None (follow "
                             f"CHUNKWISE_DEFER), got {defer!r}")
        if isinstance(allow_failed_rows, bool) or not isinstance(allow_failed_rows, int) \
                or allow_failed_rows < 0:
            raise ValueError(f"BatchedRunPython allow_failed_rows: expected an integer >= 0 "
                             f"(failed rows migrate may leave behind), got "
                             f"{allow_failed_rows!r}")
        Timeouts(lock=lock_timeout, statement=statement_timeout)  # validates both
        self.model = model
        # RunPython.noop is kept as given, so that deconstruct writes it back; is_noop()
        # sees it first, and it is never called with a batch
        self.forward = cast("BatchedCode | None", forward)
        self.transform = transform
        self.fields = list(fields)
        self.prepare = prepare
        self.annotate = dict(annotate) if annotate is not None else None
        self.only = list(only) if only is not None else None
        self.reverse = cast("BatchedCode | None", reverse)
        self.todo = todo
        self.reverse_todo = reverse_todo
        self.done = done
        self.key = key
        self.batch_size = batch_size
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self.hints = hints or {}
        self.elidable = elidable  # type: ignore[misc]  # per instance, as RunPython does
        self.defer = defer
        self.allow_failed_rows = allow_failed_rows

    @property
    def reversible(self) -> bool:  # type: ignore[override]  # a property, as on RunPython
        return self.reverse is not None

    #: code that does nothing, as ``RunPython.noop`` (which is accepted too): as ``reverse``,
    #: migrating backwards runs no batch and leaves the rows as they are
    noop = staticmethod(batched_noop)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        """Only the arguments that differ from ``__init__``'s defaults, as Django's do."""
        defaults = {name: p.default for name, p in _SIGNATURE.parameters.items()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY}
        # an empty list or dict stored for a default of () or None is still the default
        kwargs = {name: value for name, default in defaults.items()
                  if not ((value := getattr(self, name)) == default or not value and not default)}
        args: list[Any] = [self.model] + ([self.forward] if self.forward is not None else [])
        return self.__class__.__name__, args, kwargs

    def describe(self) -> str:
        how = "per-row transform" if self.transform is not None else "set-based"
        when = {True: ", deferred", False: "", None: ""}[self.defer]
        return f"Batched data migration of {self.model} ({how}{when})"

    def deferred(self) -> bool:
        """Whether ``migrate`` leaves this operation's run to a DataMigration now."""
        from django.conf import settings

        from .config import defer_by_default

        if self.defer is not None:
            return self.defer
        try:
            return defer_by_default(os.environ, getattr(settings, "CHUNKWISE_DEFER", False))
        except SettingsError as exc:  # one line, exit 64, as every misconfiguration here
            raise BatchedMigrationMisconfigured(str(exc)) from None

    @property
    def migration_name_fragment(self) -> str:
        return f"batched_{self.model.split('.')[1].lower()}"

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass  # data only: the schema is unchanged

    def base_settings(self) -> RunSettings:
        """Defaults for this operation, before env and flags override them."""
        from chunkwise.engine import BatchSettings

        size = self.batch_size
        batch = BatchSettings(size=size, min_size=min(100, size), max_size=max(50_000, size))
        return RunSettings(batch=batch,
                           timeouts=Timeouts(self.lock_timeout, self.statement_timeout))

    def database_forwards(self, app_label: str, schema_editor: BaseDatabaseSchemaEditor,
                          from_state: ProjectState, to_state: ProjectState) -> None:
        if is_noop(self.forward):
            return
        # as RunPython: models from state.apps must be the rendered, current ones
        from_state.clear_delayed_apps_cache()
        if not self._starts_here(app_label, schema_editor):
            return
        with said_as_usage():
            if self.deferred():
                self._plan_inside_migrate(app_label, schema_editor, from_state)
                return
            self._run_inside_migrate(app_label, schema_editor, from_state, Direction.FORWARD)

    def database_backwards(self, app_label: str, schema_editor: BaseDatabaseSchemaEditor,
                           from_state: ProjectState, to_state: ProjectState) -> None:
        if is_noop(self.reverse):
            # as RunPython.noop: nothing to undo, no batch; but the forward run is undone as
            # far as Django knows, so migrating forward again runs it again, from scratch
            if router.allow_migrate(schema_editor.connection.alias, app_label, **self.hints):
                from .models import Checkpoint  # the package is imported before its models

                migration, index = self.locate(app_label)
                Checkpoint.objects.using(schema_editor.connection.alias).filter(
                    app_label=app_label, migration=migration, operation=index,
                    direction=Direction.FORWARD).delete()
            return
        to_state.clear_delayed_apps_cache()
        if not self._starts_here(app_label, schema_editor):
            return
        with said_as_usage():
            self._run_inside_migrate(app_label, schema_editor, to_state, Direction.BACKWARD)

    def _starts_here(self, app_label: str, schema_editor: BaseDatabaseSchemaEditor) -> bool:
        """Whether the router lets this operation run on the editor's database. If so, a
        new line first: migrate has printed "Applying ..." without one, and whatever the
        operation says, a misconfiguration included, starts a line of its own."""
        if not router.allow_migrate(schema_editor.connection.alias, app_label, **self.hints):
            return False
        sys.stdout.write("\n")
        sys.stdout.flush()
        return True

    def _run_inside_migrate(self, app_label: str, schema_editor: BaseDatabaseSchemaEditor,
                            state: ProjectState, direction: Direction) -> None:
        from .execute import execute, recorded

        alias = schema_editor.connection.alias
        migration, index = self.locate(app_label)
        ref = OperationRef(app_label, migration, index, direction)
        outcome = execute(self, ref, state.apps, schema_editor)
        if outcome.exit_code != 0:
            hint = busy_hint(recorded(ref, alias)[1]) if outcome.exit_code == ExitCode.BUSY \
                else ""
            raise BatchedMigrationStopped.of(str(ref), outcome, hint)
        self.refuse_failed_rows(ref, alias)

    def refuse_failed_rows(self, ref: OperationRef, alias: str, ensuring: bool = False) -> None:
        """As RunPython's strictness: a run that leaves rows recorded as failed fails
        ``migrate`` (exit 65), which then does not record the migration applied, so the
        next migration cannot drop what those rows still need; unless the operation
        accepts that many (``allow_failed_rows``), which is said. ``ensuring``: an
        EnsureBatchedComplete asks, in a later migration, which is the one not recorded."""
        from .models import FailedRow

        failed = FailedRow.objects.using(alias).filter(
            checkpoint__app_label=ref.app_label, checkpoint__migration=ref.migration,
            checkpoint__operation=ref.operation, checkpoint__direction=ref.direction).count()
        if failed and failed <= self.allow_failed_rows:
            sys.stdout.write(f"\n  {ref}: {failed:,} rows failed and are recorded, unchanged; "
                             f"accepted by allow_failed_rows={self.allow_failed_rows}\n")
            return
        if not failed:
            return
        accepted = (f"more than its allow_failed_rows={self.allow_failed_rows}"
                    if self.allow_failed_rows else "and the operation accepts none")
        stops = ("so EnsureBatchedComplete stops migrate here, before what needs those rows"
                 if ensuring else f"so migrate does not record {ref.app_label}.{ref.migration} "
                                  f"as applied")
        sys.stdout.write("\n")  # migrate's "Applying ..." has no newline of its own
        sys.stdout.flush()
        raise BatchedMigrationStopped(
            f"{'EnsureBatchedComplete: ' if ensuring else ''}{ref.operation_name} "
            f"{ref.direction}: FailedRowsLeft: {failed:,} rows failed and "
            f"are recorded, {accepted}, {stops}. List them: manage.py chunkwise_status "
            f"{ref.app_label} --failed; fix the code or the data, retry them: manage.py "
            f"chunkwise_run {ref.app_label} {ref.migration} --retry-failed"
            f"{'' if ref.direction == Direction.FORWARD else ' --direction ' + ref.direction}"
            f", then run migrate again (or accept them with allow_failed_rows=N)",
            ExitCode.HALTED)

    def _plan_inside_migrate(self, app_label: str, schema_editor: BaseDatabaseSchemaEditor,
                             state: ProjectState) -> None:
        """Deferred: plan the run (checkpoint, estimate, high-water mark), say what was
        deferred and how to run it, in one line, and let migrate record it as applied."""
        from .execute import plan_deferred

        alias = schema_editor.connection.alias
        migration, index = self.locate(app_label)
        ref = OperationRef(app_label, migration, index)
        planned = plan_deferred(self, ref, state.apps, alias)
        if planned.done:
            what = "nothing to do"
        elif planned.batches:
            what = (f"under way: {planned.tally.rows_processed:,} of "
                    f"{planned.rows_estimated:,} rows done")
        else:
            what = f"{planned.rows_estimated:,} rows to do, up to key {planned.high_water_key}"
        sys.stdout.write(
            f"  deferred {ref.operation_name} ({what}): run it "
            f"with a DataMigration (manage.py chunkwise_manifest --image IMAGE | kubectl "
            f"apply -f -) or manage.py chunkwise_run {ref.app_label} {ref.migration}; "
            f"EnsureBatchedComplete in a later migration finishes it if nobody did\n")
        sys.stdout.flush()

    def locate(self, app_label: str) -> tuple[str, int]:
        """This operation's migration name and index, found by identity among the
        app's loaded migration modules (Django passes neither to an operation)."""
        package, _ = MigrationLoader.migrations_module(app_label)
        for module_name, module in list(sys.modules.items()):
            if package is None or not module_name.startswith(package + "."):
                continue
            operations = getattr(getattr(module, "Migration", None), "operations", ())
            for index, operation in enumerate(operations):
                if operation is self:
                    return module_name.rsplit(".", 1)[1], index
        raise ImproperlyConfigured(
            f"BatchedRunPython on {self.model}: cannot find the migration of app "
            f"{app_label!r} that holds this operation"
        )


_SIGNATURE = inspect.signature(BatchedRunPython.__init__)
