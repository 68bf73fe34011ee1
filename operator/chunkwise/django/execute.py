"""Run one BatchedRunPython operation: the glue between Django and the engine.

Used by ``migrate`` (through the operation) and by ``manage.py chunkwise_run``.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol, TextIO

from django.core.exceptions import FieldDoesNotExist, FieldError, ImproperlyConfigured
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps
from django.db.models import Field, Q, QuerySet

from chunkwise.contract import Direction, Env, ExitCode, ResourceRef, ShardState
from chunkwise.engine import (
    TUNABLES,
    AnotherRunnerActive,
    BatchRunner,
    Caller,
    CheckpointState,
    DatabaseUnreachable,
    Outcome,
    Reporter,
    RetriesExhausted,
    Retune,
    RunSettings,
    SettingsError,
    Tee,
    tunable_named,
)
from chunkwise.metrics import MetricsReporter, RunLabels, serve_worker_metrics

from .backends import DatabaseBackend, backend_for, backend_problem
from .checkpoints import DjangoCheckpointStore
from .config import parse_port, resolve_settings
from .keys import key_problem
from .models import Checkpoint, FailedRow
from .noop import is_noop
from .operation_ref import OperationRef
from .progress import ProgressBar
from .reporters import tuning_sources
from .target import DjangoBatchTarget

__all__ = ["BatchedWork", "execute", "plan_deferred", "recorded", "rows_to_do",
           "stop_on_signals", "target_for"]

SetBasedCode = Callable[[StateApps, BaseDatabaseSchemaEditor, Any], None]


class BatchedWork(Protocol):
    """What :func:`execute` needs of an operation (``BatchedRunPython`` has it all)."""

    model: str
    key: str
    forward: SetBasedCode | None
    transform: Callable[..., Any] | None
    fields: list[str]
    prepare: Callable[[StateApps, Any], Any] | None
    annotate: dict[str, Any] | None
    only: list[str] | None
    reverse: SetBasedCode | None
    todo: Q | None
    reverse_todo: Q | None
    done: Q | None

    def base_settings(self) -> RunSettings: ...


@contextmanager
def stop_on_signals(stop: threading.Event, stream: TextIO) -> Iterator[None]:
    """SIGTERM/SIGINT: finish the current batch, commit, stop. A second SIGINT aborts at
    once: KeyboardInterrupt, once (the open batch rolls back; the checkpoint still holds),
    which the caller turns into one line; more of them are ignored while it does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    aborted = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        if aborted.is_set():
            return
        if stop.is_set() and signum == signal.SIGINT:
            aborted.set()
            raise KeyboardInterrupt
        stop.set()
        stream.write(f"\n{signal.Signals(signum).name}: finishing the current batch, "
                     "then stopping (Ctrl-C again to abort it)\n")
        stream.flush()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def joins(rows: QuerySet[Any]) -> bool:
    """Whether the SQL of ``rows`` joins another table. A join Django trimmed away (for
    ``fk__isnull=True`` it reads the row's own column) stays among the query's aliases,
    unused: it does not count."""
    return sum(1 for uses in rows.query.alias_refcount.values() if uses) > 1


def one_per_key(rows: QuerySet[Any], todo: Q | None, key: Field[Any, Any]) -> QuerySet[Any]:
    """The rows ``todo`` selects, each once. A filter across a to-many relation
    (``orders__paid=False``) joins, and a join repeats a row once per match: a batch would
    count it twice and a transform would see two copies. With any join the filter becomes
    a semi-join, ``key IN (SELECT key ... WHERE todo)``, which keeps one row per key."""
    if todo is None:
        return rows
    filtered = rows.filter(todo)
    if not joins(filtered):  # the table alone: no row can repeat
        return filtered
    return rows.filter(**{f"{key.name}__in": filtered.values(key.name)})


def rows_to_do(operation: BatchedWork, ref: OperationRef, apps: StateApps,
               alias: str) -> tuple[QuerySet[Any], Field[Any, Any]]:
    """The rows the operation still has to do in ``ref``'s direction, and its key."""
    unsupported = backend_problem(alias)  # chunkwise.E003 says it first, unless skipped
    if unsupported:
        raise ImproperlyConfigured(unsupported)
    # a name the migration's models do not have is a mistake retrying cannot fix: one line
    # and exit 64 (ImproperlyConfigured), not a traceback and exit 1, which a Job retries
    try:
        model = apps.get_model(operation.model)
    except LookupError:
        raise ImproperlyConfigured(
            f"BatchedRunPython model: {operation.model!r} is not a model of "
            f"{ref.app_label} as it stands at {ref.migration}") from None
    try:
        key_field = model._meta.pk if operation.key == "pk" else \
            model._meta.get_field(operation.key)
        for name in operation.fields:
            model._meta.get_field(name)
    except FieldDoesNotExist as exc:
        raise ImproperlyConfigured(f"BatchedRunPython key or fields: {exc}") from None
    problem = key_problem(operation.model, key_field, model._meta.unique_together,
                          model._meta.constraints)
    if problem:  # chunkwise.E004 says it first, unless the checks were skipped
        raise ImproperlyConfigured(problem)
    todo_q = operation.todo if ref.direction == Direction.FORWARD else operation.reverse_todo
    rows = model._base_manager.db_manager(alias).all()
    try:
        return one_per_key(rows, todo_q, key_field), key_field
    except FieldError as exc:
        name = "todo" if ref.direction == Direction.FORWARD else "reverse_todo"
        raise ImproperlyConfigured(f"BatchedRunPython {name}: {exc}") from None


def target_for(operation: BatchedWork, ref: OperationRef, apps: StateApps,
               schema_editor: BaseDatabaseSchemaEditor, todo: QuerySet[Any],
               key_field: Field[Any, Any], lock_first: bool = False) -> DjangoBatchTarget:
    """The batch target for ``ref``'s direction: the transform, or the set-based code."""
    alias = schema_editor.connection.alias
    within = _bounded_semi_join(operation, ref, todo, key_field)
    if ref.direction == Direction.FORWARD and operation.forward is None:
        prepare = operation.prepare
        return DjangoBatchTarget(alias, todo, key_field, transform=operation.transform,
                                 fields=operation.fields, lock_first=lock_first,
                                 within=within, annotate=operation.annotate,
                                 only=operation.only,
                                 prepare=None if prepare is None
                                 else lambda batch: prepare(apps, batch))
    code = operation.forward if ref.direction == Direction.FORWARD else operation.reverse
    if code is None:
        raise ImproperlyConfigured(
            f"direction: backward runs the operation's reverse= code, and "
            f"{ref.operation_name} has none (it is irreversible)")
    return DjangoBatchTarget(alias, todo, key_field,
                             forward=lambda batch: code(apps, schema_editor, batch),
                             lock_first=lock_first, within=within)


def _bounded_semi_join(operation: BatchedWork, ref: OperationRef, todo: QuerySet[Any],
                       key: Field[Any, Any]) -> Callable[[Q], QuerySet[Any]] | None:
    """For a todo that joins (see one_per_key): the rows to do within given key bounds,
    with the bounds inside the semi-join as well as outside it; None for a todo on the
    table alone, which a range bounds already."""
    todo_q = operation.todo if ref.direction == Direction.FORWARD else operation.reverse_todo
    rows = todo.model._base_manager.db_manager(todo.db).all()
    if todo_q is None or not joins(rows.filter(todo_q)):
        return None
    return lambda bounds: one_per_key(rows.filter(bounds), todo_q, key)


def plan_deferred(operation: BatchedWork, ref: OperationRef, apps: StateApps,
                  alias: str) -> CheckpointState:
    """Plan the run without running it: the checkpoint, its row estimate and its
    high-water mark are fixed now, so rows the new release inserts later are left to it."""
    todo, key_field = rows_to_do(operation, ref, apps, alias)
    return DjangoCheckpointStore(ref, alias, todo, key_field).plan_deferred()


def execute(
    operation: BatchedWork,
    ref: OperationRef,
    apps: StateApps,
    schema_editor: BaseDatabaseSchemaEditor,
    *,
    settings: RunSettings | None = None,
    env: Mapping[str, str] | None = None,
    reporter: Reporter | None = None,
    stream: TextIO | None = None,
    stop: threading.Event | None = None,
    metrics_port: int | None = None,
    flags: Mapping[str, Any] | None = None,
    shards_one_at_a_time: bool = False,
    caller: Caller | None = None,
) -> Outcome:
    """Run ``operation`` to the end (or a halt, or a signal). Settings, and the metrics port
    unless ``metrics_port`` is given, come from ``env`` (default: the process's) and the
    command line's ``flags``; ``settings`` are those, when the caller resolved them already.
    A live retune resolves the new tunables the same way, from the operation's own.
    ``shards_one_at_a_time``: the caller runs ``ref``'s shards one after another, so this
    one may take the whole rows/s cap. ``caller``: who runs it (default: ``migrate``, or
    a DataMigration's pod), which decides how messages name a tunable."""
    connection = schema_editor.connection
    stream = stream or sys.stderr
    if is_noop(operation.forward if ref.direction == Direction.FORWARD else operation.reverse):
        return Outcome(ExitCode.DONE, "NoOp", f"its {ref.direction} code is a no-op "
                                              "(RunPython.noop): no row to change")
    env = os.environ if env is None else env
    caller = caller or Caller.of(os.environ, command=False)
    if metrics_port is None:
        metrics_port = parse_port(env.get(Env.METRICS_PORT), Env.METRICS_PORT)
    if connection.in_atomic_block:
        raise ImproperlyConfigured(
            f"{ref}: BatchedRunPython commits batch by batch, so its migration needs "
            "`atomic = False` (it is running inside a transaction)"
        )
    todo, key_field = rows_to_do(operation, ref, apps, connection.alias)
    forward_direction = ref.direction == Direction.FORWARD
    target = target_for(operation, ref, apps, schema_editor, todo, key_field)
    base = operation.base_settings()
    run_settings = settings or resolve_settings(base, env, flags, caller)
    backend = backend_for(connection.alias)
    refuse_non_transactional(backend, todo.model._meta.db_table)
    stream.write(f"{ref}: {backend.describe()}\n")
    at_once = 1 if shards_one_at_a_time else ref.shard_count
    run_settings = _for_this_run(run_settings, ref, backend, stream, at_once, caller)
    store = DjangoCheckpointStore(ref, connection.alias, todo, key_field,
                                  has_todo=(operation.todo if forward_direction
                                            else operation.reverse_todo) is not None,
                                  done=operation.done if forward_direction else None)
    stop = stop or threading.Event()
    reporter = reporter or ProgressBar(str(ref), stream,
                                       lock_waits=backend.row_locks)
    if metrics_port:
        reporter = _with_metrics(reporter, ref, metrics_port, stream)
    health = backend.health_probe(todo.model._meta.db_table)
    runner = BatchRunner(target, store, run_settings, reporter, stop,
                         retune=_live_retune(base, flags, ref, backend, reporter,
                                             stream, at_once, caller),
                         health=health, caller=caller)
    with stop_on_signals(stop, stream), _startup_heap_frozen():
        try:
            outcome = runner.run()
        except (AnotherRunnerActive, RetriesExhausted) as exc:
            message = str(exc)
            if isinstance(exc, DatabaseUnreachable):
                db = connection.settings_dict
                message += (f"; database {connection.alias!r} is {connection.vendor} "
                            f"{db.get('NAME')!r} at {db.get('HOST') or 'localhost'}:"
                            f"{db.get('PORT') or 'default port'}; the next run resumes from "
                            "the checkpoint")
            if isinstance(exc, AnotherRunnerActive) and caller is Caller.COMMAND:
                message += "; wait for it to finish, or stop it"  # migrate says its own
            outcome = Outcome(exc.exit_code, type(exc).__name__, message)
            stream.write(f"{ref}: {outcome.message}\n")
            if isinstance(exc, RetriesExhausted):
                _mark_stopped(store, outcome.message)
        except KeyboardInterrupt:  # a second Ctrl-C: said in one line, not a traceback
            outcome = Outcome(ExitCode.INTERRUPTED, "Interrupted", ABORTED)
            stream.write(f"\n{ref}: {outcome.message}\n")
            _mark_stopped(store, outcome.message)
        finally:
            target.close()
    if outcome.exit_code == 0:
        _forget_other_direction(ref, connection.alias)
    failed = outcome.state.tally.failed_rows if outcome.state else 0
    if failed and caller is not Caller.POD and outcome.reason != "AlreadyDone":
        stream.write(f"{ref}: {failed_rows_hint(ref, failed, done=outcome.exit_code == 0)}\n")
    return outcome


#: what a run stopped by a second Ctrl-C says (and its checkpoint keeps)
ABORTED = "aborted by a second Ctrl-C: the open batch was rolled back, the checkpoint is intact"

#: where the docs say how to retry recorded failed rows
OPERATE_DOCS = "https://chunkwise.github.io/chunkwise/how-to/operate/"


def failed_rows_hint(ref: OperationRef, failed: int, done: bool = True) -> str:
    """What a local user can do about the rows a run recorded as failed. A retry runs
    only once the run is done: a run that stopped (halted) is finished first."""
    backward = " --direction backward" if ref.direction == Direction.BACKWARD else ""
    retry = (f"manage.py chunkwise_run {ref.app_label} {ref.migration}{backward} "
             f"--retry-failed runs them again")
    if not done:
        retry = (f"finish the run first (it resumes from the checkpoint), then {retry}")
    return (f"{failed:,} failed rows are recorded: manage.py chunkwise_status "
            f"{ref.app_label} --failed lists them; once the code or the data is fixed, "
            f"{retry} ({OPERATE_DOCS})")


@contextmanager
def _startup_heap_frozen() -> Iterator[None]:
    """Keep the cyclic garbage collector off what existed before the run (Django, its
    apps, the migration graph): a batch makes thousands of tuples and rows, which set off
    full collections that walked all of it, 8% of a per-row transform's run time."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the caller's process (migrate) goes on as before


def recorded(ref: OperationRef, alias: str) -> tuple[str, str, int]:
    """Where ``ref``'s operation stands in ``ref``'s direction, over every shard: its
    state ("done" only when every shard is), who last held an unfinished shard
    ("DataMigration ns/name", or host and pid), and its shard count; ("", "", 1) before
    any run or plan."""
    rows = list(Checkpoint.objects.using(alias).filter(
        app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
        direction=ref.direction).values_list("state", "owner", "shard_count"))
    if not rows:
        return "", "", 1
    left = [(state, owner) for state, owner, _ in rows if state != ShardState.DONE]
    if not left:
        return ShardState.DONE, rows[0][1], rows[0][2]
    owner = next((owner for _, owner in left if owner), "")
    return left[0][0], owner, rows[0][2]


def _with_metrics(reporter: Reporter, ref: OperationRef, port: int, stream: TextIO) -> Reporter:
    """``reporter`` plus live metrics served on ``port``; a port that cannot be bound costs
    the metrics, never the run. Where it runs (address, DataMigration) is the process's."""
    address = os.environ.get(Env.METRICS_ADDRESS, "")
    try:
        metrics = serve_worker_metrics(port, address)
    except OSError as exc:
        stream.write(f"{ref}: warning: cannot serve metrics on {address or '*'}:{port} ({exc}); "
                     "running without them\n")
        return reporter
    resource = ResourceRef.parse(os.environ.get(Env.RESOURCE))
    labels = (RunLabels(resource.namespace, resource.name, ref.shard) if resource else
              RunLabels("", str(ref.operation_name), ref.shard))
    stream.write(f"{ref}: metrics at http://{address or '0.0.0.0'}:{port}/metrics\n")
    return Tee([reporter, MetricsReporter(metrics, labels)])


def refuse_unreadable(backend: DatabaseBackend, settings: RunSettings, caller: Caller) -> None:
    """A health figure the database cannot give is refused when a threshold asks for it:
    read as "nothing to wait for", it would never throttle."""
    refused = backend.unreadable()
    for tunable in TUNABLES:
        why = refused.get(tunable.spec)
        if why and getattr(getattr(settings, tunable.group), tunable.field):
            raise SettingsError(f"{caller.knob(tunable)}: {why}; unset it for database "
                                f"{backend.alias!r} ({backend.name})")


def refuse_non_transactional(backend: DatabaseBackend, table: str) -> None:
    """A batch's rows and its checkpoint commit together or not at all: refused where
    one of their tables cannot roll back (MyISAM), before anything runs."""
    found = backend.non_transactional([table, Checkpoint._meta.db_table,
                                       FailedRow._meta.db_table])
    if found:
        named = ", ".join(f"{name} ({engine})" for name, engine in sorted(found.items()))
        raise ImproperlyConfigured(
            f"table {named} of database {backend.alias!r} cannot roll back a transaction: "
            "a batch's rows and its checkpoint must commit together; convert it to InnoDB "
            "(ALTER TABLE ... ENGINE=InnoDB)")


def _live_retune(base: RunSettings, flags: Mapping[str, Any] | None, ref: OperationRef,
                 backend: DatabaseBackend, reporter: Reporter, stream: TextIO,
                 at_once: int, caller: Caller) -> Retune | None:
    """New settings from the installed tuning sources (in a Job: the DataMigration's
    spec), resolved as at start: the operation's own, then the spec's values, then the
    command line's. ``base`` must not hold the env the run started with: a tunable the
    spec no longer sets goes back to the operation's own value or the default."""
    sources = tuning_sources()
    if not sources:
        return None

    def retune() -> tuple[int, RunSettings] | None:
        for source in sources:
            update = source()
            if update is None:
                continue
            generation, env = update
            try:
                settings = resolve_settings(base, env, flags, caller)
            except SettingsError as exc:  # the API server checks these; say it, keep going
                reporter.notice(f"spec generation {generation} not applied: {exc}")
                continue
            try:
                return generation, _for_this_run(settings, ref, backend, stream, at_once,
                                                 caller)
            except SettingsError as exc:  # a figure this database cannot give
                reporter.notice(f"spec generation {generation} not applied: {exc}")
                continue
        return None

    return retune


def _for_this_run(settings: RunSettings, ref: OperationRef, backend: DatabaseBackend,
                  stream: TextIO, at_once: int, caller: Caller) -> RunSettings:
    """Settings as this run uses them, at start and after a retune: a health figure the
    database cannot give is refused, a timeout it counts in coarser units is given as it
    counts it (and said); SQLite locks the whole database in a batch, so the share of rows
    a batch locks means nothing there; shards share the limits set for the whole run."""
    refuse_unreadable(backend, settings, caller)
    honoured = backend.honoured(settings.timeouts)
    if honoured != settings.timeouts:
        lock = tunable_named("timeouts.lock")
        stream.write(f"{ref}: note: {caller.knob(lock)} {settings.timeouts.lock:g}s waits "
                     f"{honoured.lock:g}s on {backend.name}, which counts lock waits in "
                     "whole seconds (innodb_lock_wait_timeout)\n")
        settings = dataclasses.replace(settings, timeouts=honoured)
    if not backend.row_locks:
        settings = dataclasses.replace(settings, batch=dataclasses.replace(
            settings.batch, max_locked_fraction=0.0))
    if ref.shard_count > 1:
        settings = _share_run_limits(settings, ref, stream, at_once)
    return settings


def _share_run_limits(run_settings: RunSettings, ref: OperationRef, stream: TextIO,
                      at_once: int) -> RunSettings:
    """With shards, the limits a user sets for the whole migration are split between
    them, so that all of them together never pass it: ``haltOn.failedRows`` (shard i of
    N gets failedRows // N, plus one for the first failedRows % N shards) and
    ``batch.maxRowsPerSecond`` (the cap / the shards running at once: it protects the
    database, which sees them all). Rates and a run of failed batches are a shard's own,
    and the health thresholds judge the database, whoever reads it."""
    halt_on, batch = run_settings.halt_on, run_settings.batch
    failed_rows = halt_on.failed_rows // ref.shard_count + \
        (1 if ref.shard < halt_on.failed_rows % ref.shard_count else 0)
    rate = batch.max_rows_per_second / at_once
    shared = []
    if failed_rows != halt_on.failed_rows:
        shared.append(f"haltOn.failedRows {halt_on.failed_rows}: this one halts past "
                      f"{failed_rows}")
    if rate != batch.max_rows_per_second:
        shared.append(f"batch.maxRowsPerSecond {batch.max_rows_per_second:g}: this one "
                      f"runs at most {rate:g} rows/s")
    if shared:
        stream.write(f"{ref}: the whole run's limits are shared by its {ref.shard_count} "
                     f"shards: {'; '.join(shared)}\n")
    return dataclasses.replace(
        run_settings, halt_on=dataclasses.replace(halt_on, failed_rows=failed_rows),
        batch=dataclasses.replace(batch, max_rows_per_second=rate))


def _mark_stopped(store: DjangoCheckpointStore, message: str) -> None:
    """A run that gave up is not "running" any more; say so if the database lets us
    (it may be the very thing that is down: then the heartbeat's age tells)."""
    try:
        store.finish(ShardState.INTERRUPTED, message)
    except Exception:  # best effort; the checkpoint itself is intact
        pass


def _forget_other_direction(ref: OperationRef, alias: str) -> None:
    """After a complete run one way, the other way starts from scratch next time."""
    Checkpoint.objects.using(alias).filter(
        app_label=ref.app_label, migration=ref.migration, operation=ref.operation,
        direction=ref.direction.opposite).delete()
