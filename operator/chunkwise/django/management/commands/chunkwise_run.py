"""manage.py chunkwise_run: run one BatchedRunPython operation outside ``migrate``.

This is what a DataMigration's Job pod runs. Exit statuses are a contract
(chunkwise.engine.ExitCode): 0 done, 65 halted, 69 another runner is active,
75 interrupted by a signal after a committed batch, 64 bad usage, 1 anything else.
"""

from __future__ import annotations

import os
import sys
from argparse import ArgumentParser
from typing import Any, NoReturn

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    SystemCheckError,
)
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.migration import Migration

from chunkwise.contract import Direction, Env, ExitCode
from chunkwise.engine import Caller, Outcome, SettingsError, parse_boolean

from ...backends import backend_for
from ...config import add_arguments, parse_port, resolve_settings
from ...execute import execute
from ...local_shards import MAX_SHARDS, run_shards_here
from ...migration_lookup import MigrationNotFound, find_migration, schema_not_applied
from ...operation_ref import OperationRef
from ...operations import BatchedRunPython
from ...plan import plan_shards, shards_summary
from ...progress import ProgressBar
from ...reporters import NullReporter, with_plugins
from ...retry import RetryRefused, retry_failed, switch
from ...retry_marks import describe, mark_of


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def _shards(raw_count: Any, raw_index: Any) -> tuple[int, int | None]:
    """(shard count, this runner's shard or None for all of them)."""
    try:
        count = int(str(raw_count).strip())
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_SHARDS:
        raise CommandError(f"--shards ({Env.SHARDS}): expected an integer from 1 to "
                           f"{MAX_SHARDS}, got {raw_count!r}", returncode=ExitCode.USAGE)
    if raw_index is None or str(raw_index).strip() == "":
        return count, None
    try:
        index = int(str(raw_index).strip())
    except ValueError:
        index = -1
    if not 0 <= index < count:
        raise CommandError(f"--shard ({Env.SHARD} or {Env.JOB_COMPLETION_INDEX}): expected "
                           f"an integer from 0 to {count - 1} (--shards is {count}), got "
                           f"{raw_index!r}", returncode=ExitCode.USAGE)
    return count, index


def one_line_usage_errors(parser: CommandParser) -> CommandParser:
    """Flags that do not parse are usage errors too: exit 64 with one line, as every other
    bad input to chunkwise's commands (argparse's own is exit 2 with the whole usage)."""

    def error(message: str) -> NoReturn:
        if not parser.called_from_command_line:
            raise CommandError(f"Error: {message}")
        sys.stderr.write(f"{parser.prog}: {message} (see --help)\n")
        sys.exit(ExitCode.USAGE)

    parser.error = error  # type: ignore[method-assign]  # CommandParser has no hook
    return parser


def _direction(raw: str) -> Direction:
    """The flag's (argparse checked it) or the environment's (nobody did)."""
    try:
        return Direction(raw)
    except ValueError:
        raise CommandError(f"--direction ({Env.DIRECTION}): expected {' or '.join(Direction)}, "
                           f"got {raw!r}", returncode=ExitCode.USAGE) from None


class Command(BaseCommand):
    help = ("Run one BatchedRunPython operation in committed batches, resuming from its "
            "checkpoint. Arguments fall back to CHUNKWISE_* environment variables.")
    #: chunkwise_plan: this command that only plans, without the flags that choose
    plans_only = False

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return one_line_usage_errors(super().create_parser(prog_name, subcommand, **kwargs))

    def check(self, *args: Any, **kwargs: Any) -> None:
        """Django's system checks (chunkwise.E001...) run before the command: a project
        they fault is a usage error, exit 64, which a DataMigration's Job does not retry
        (SystemCheckError's own exit 1 would be retried in vain), and the operator is told
        why."""
        try:
            super().check(*args, **kwargs)
        except SystemCheckError as exc:
            with_plugins(NullReporter()).finished(
                Outcome(ExitCode.USAGE, "InvalidConfiguration", str(exc).strip()))
            raise SystemCheckError(str(exc), returncode=ExitCode.USAGE) from None

    @staticmethod
    def _add_what_to_do(parser: ArgumentParser) -> None:
        """The flags that make the command do something else than run."""
        parser.add_argument("--dry-run", action="store_true", default=None,
                            help="plan instead of running: rows to do, rows/s and lock waits "
                                 "from a few sample batches that are rolled back, the batch "
                                 f"size the tuner would pick, an ETA; writes nothing (as "
                                 f"chunkwise_plan) [env {Env.DRY_RUN}; spec.dryRun]")
        parser.add_argument("--retry-failed", action="store_true", default=None,
                            help="instead of running: run the operation's code again on the "
                                 "rows its run recorded as failed (every shard), once the "
                                 "run is done and the code or the data is fixed; a row that "
                                 "fails again stays recorded [env "
                                 f"{Env.RETRY_FAILED}; spec.retryFailed]")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("app_label", nargs="?", default=_env(Env.APP),
                            help=f"app of the migration [env {Env.APP}]")
        parser.add_argument("migration_name", nargs="?", default=_env(Env.MIGRATION),
                            help=f"migration name or unique prefix [env {Env.MIGRATION}]")
        parser.add_argument("--operation", type=int,
                            default=_env(Env.OPERATION),
                            help="index of the operation in the migration; default: the only "
                                 f"BatchedRunPython in it [env {Env.OPERATION}]")
        parser.add_argument("--direction", choices=[d.value for d in Direction],
                            default=_env(Env.DIRECTION, Direction.FORWARD),
                            help="forward runs forward/transform, backward runs reverse "
                                 f"[env {Env.DIRECTION}]")
        parser.add_argument("--database", default=_env(Env.DATABASE, DEFAULT_DB_ALIAS),
                            help=f"database alias [env {Env.DATABASE}]")
        parser.add_argument("--shards", default=_env(Env.SHARDS, "1"), metavar="N",
                            help="split the key space into N shards balanced by row count "
                                 "and run them in parallel (without --shard: all N here, one "
                                 f"thread each) [env {Env.SHARDS}; spec.parallelism]")
        parser.add_argument("--shard", default=_env(Env.SHARD, _env(Env.JOB_COMPLETION_INDEX)),
                            metavar="I", help="run only shard I of N (0-based) [env "
                                              f"{Env.SHARD}, else {Env.JOB_COMPLETION_INDEX}]")
        if self.plans_only:  # no choice of what to do: chunkwise_plan only plans
            parser.set_defaults(dry_run=True, retry_failed=None)
        else:
            self._add_what_to_do(parser)
        parser.add_argument("--samples", type=int, default=3, metavar="N",
                            help="sample batches of a dry run (default 3)")
        parser.add_argument("--metrics-port", default=_env(Env.METRICS_PORT), metavar="PORT",
                            help="serve live Prometheus metrics at :PORT/metrics while the run "
                                 f"goes on [env {Env.METRICS_PORT}; bind address from "
                                 f"{Env.METRICS_ADDRESS}, default every interface]")
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            exit_code = self._run(options)
        except CommandError as exc:
            if exc.returncode == ExitCode.USAGE:  # the operator reads why from the worker
                with_plugins(NullReporter()).finished(
                    Outcome(ExitCode.USAGE, "InvalidConfiguration", str(exc)))
            raise
        sys.exit(exit_code)

    def _run(self, options: dict[str, Any]) -> int:
        app_label, name = options["app_label"], options["migration_name"]
        if not app_label or not name:
            raise CommandError(f"app_label and migration_name are required (or set "
                               f"{Env.APP} and {Env.MIGRATION})",
                               returncode=ExitCode.USAGE)
        alias = options["database"]
        if alias not in connections:
            raise CommandError(f"--database: no database alias {alias!r} in settings.DATABASES",
                               returncode=ExitCode.USAGE)
        connection = connections[alias]
        loader = MigrationLoader(connection)
        try:
            migration = find_migration(loader, app_label, name)
        except MigrationNotFound as exc:
            raise CommandError(str(exc), returncode=ExitCode.USAGE) from None
        index = self._operation_index(migration, options["operation"])
        problem = schema_not_applied(loader, migration, alias)
        if problem:
            raise CommandError(problem, returncode=ExitCode.USAGE)
        operation = migration.operations[index]
        assert isinstance(operation, BatchedRunPython)
        state = loader.project_state((migration.app_label, migration.name), at_end=False)
        for earlier in migration.operations[:index]:
            earlier.state_forwards(migration.app_label, state)
        shards, shard = _shards(options["shards"], options["shard"])
        ref = OperationRef(migration.app_label, migration.name, index,
                           _direction(options["direction"]),
                           shard=shard or 0, shard_count=shards)
        flags = {k: v for k, v in options.items() if v is not None}
        try:
            settings = resolve_settings(operation.base_settings(), os.environ, flags,
                                        Caller.of(os.environ, command=True))
            metrics_port = parse_port(options["metrics_port"],
                                      f"--metrics-port ({Env.METRICS_PORT})")
            # the flag, else the env var (the operator's spec.dryRun), read as every boolean
            dry_run = options["dry_run"] or parse_boolean(
                os.environ.get(Env.DRY_RUN) or "false", Env.DRY_RUN)
            retry = options["retry_failed"] or parse_boolean(
                os.environ.get(Env.RETRY_FAILED) or "false", Env.RETRY_FAILED)
            caller = Caller.of(os.environ, command=True)
            if retry and dry_run:
                pod = caller is Caller.POD
                raise CommandError(
                    f"{switch(caller)} and {'spec.dryRun' if pod else '--dry-run'} ask for "
                    "two runs at once: a retry writes, a dry run writes nothing; "
                    f"{'set one of them to false' if pod else 'give one of them'}",
                    returncode=ExitCode.USAGE)
            if dry_run:
                return self._plan(operation, ref, state.apps, alias, settings,
                                  options["samples"], every_shard=shard is None)
            if retry or self._marked_for_retry(ref, alias, caller, shard):
                return self._retry(operation, ref, state.apps, alias, settings, flags, caller)
            if shard is None and shards > 1:
                return run_shards_here(operation, ref, state.apps, alias, settings, flags,
                                       caller)
            reporter = with_plugins(ProgressBar(str(ref), sys.stderr,
                                                lock_waits=backend_for(alias).row_locks))
            with connection.schema_editor(atomic=False) as schema_editor:
                outcome = execute(operation, ref, state.apps, schema_editor, settings=settings,
                                  env={}, stream=sys.stderr, reporter=reporter,
                                  metrics_port=metrics_port, flags=flags, caller=caller)
        except (SettingsError, ImproperlyConfigured) as exc:  # retrying cannot fix either
            raise CommandError(str(exc), returncode=ExitCode.USAGE) from None
        return int(outcome.exit_code)

    @staticmethod
    def _marked_for_retry(ref: OperationRef, alias: str, caller: Caller,
                          shard: int | None) -> bool:
        """A run by hand of the whole operation (not one shard of it, not a pod, which
        does what its spec says) takes up a mark made in the admin: the run is done, so
        instead of saying so it retries the failed rows someone asked to retry."""
        if caller is not Caller.COMMAND or shard is not None:
            return False
        whole = OperationRef(ref.app_label, ref.migration, ref.operation, ref.direction)
        mark = mark_of(whole, alias)
        if mark is None:
            return False
        sys.stderr.write(f"{whole}: done, and {describe(mark)}: retrying them (as "
                         "--retry-failed does)\n")
        return True

    def _retry(self, operation: BatchedRunPython, ref: OperationRef, apps: Any, alias: str,
               settings: Any, flags: dict[str, Any], caller: Caller) -> int:
        """The failed rows of every shard, in one process: the shard flags do not apply."""
        whole = OperationRef(ref.app_label, ref.migration, ref.operation, ref.direction)
        reporter = with_plugins(ProgressBar(f"{whole} retry", sys.stderr,
                                            lock_waits=backend_for(alias).row_locks))
        with connections[alias].schema_editor(atomic=False) as schema_editor:
            try:
                outcome = retry_failed(operation, whole, apps, schema_editor, settings=settings,
                                       caller=caller, reporter=reporter, stream=sys.stderr,
                                       flags=flags)
            except RetryRefused as exc:
                raise CommandError(str(exc), returncode=ExitCode.USAGE) from None
        return int(outcome.exit_code)

    def _plan(self, operation: BatchedRunPython, ref: OperationRef, apps: Any, alias: str,
              settings: Any, samples: int, every_shard: bool) -> int:
        """The plan of ``ref``'s shard, or with ``every_shard`` of each of its shards (the
        run's own split) and a line over all of them."""
        if not 1 <= samples <= 100:
            raise CommandError(f"--samples: expected an integer from 1 to 100, got {samples}",
                               returncode=ExitCode.USAGE)
        with connections[alias].schema_editor(atomic=False) as schema_editor:
            plans = plan_shards(operation, ref, apps, schema_editor, settings, samples,
                                only=None if every_shard else ref.shard)
        lines = [line for shard, plan in plans for line in plan.lines(str(shard))]
        if len(plans) == 1:
            [(shard, plan)] = plans
            said = "; ".join(" ".join(line.split()) for line in plan.lines(str(shard))[1:])
            status: Any = plan.as_status()
        else:  # shards of one process: run here, at once where the database has many writers
            said = shards_summary(ref, [plan for _, plan in plans],
                                  at_once=backend_for(alias).parallel_writers)
            lines.append(said)
            status = None
        self.stdout.write("\n".join(lines))
        with_plugins(NullReporter()).finished(Outcome(
            ExitCode.DONE, "DryRunCompleted", "dry run, nothing was written: " + said,
            plan=status))
        return int(ExitCode.DONE)

    def _operation_index(self, migration: Migration, wanted: Any) -> int:
        batched = [i for i, op in enumerate(migration.operations)
                   if isinstance(op, BatchedRunPython)]
        if wanted is None or wanted == "":
            if not batched:
                raise CommandError(
                    f"migration_name: {migration.app_label}.{migration.name} has no "
                    "BatchedRunPython operation; chunkwise_run runs one of those (migrate "
                    "applies the rest)", returncode=ExitCode.USAGE)
            if len(batched) > 1:
                raise CommandError(
                    f"--operation: {migration.app_label}.{migration.name} has "
                    f"{len(batched)} BatchedRunPython operations, at indexes "
                    f"{', '.join(map(str, batched))}; name one with --operation INDEX",
                    returncode=ExitCode.USAGE)
            return batched[0]
        index = int(wanted)
        if index not in batched:
            raise CommandError(
                f"--operation: expected the index of a BatchedRunPython operation in "
                f"{migration.app_label}.{migration.name} (one of {batched}), got {index}",
                returncode=ExitCode.USAGE)
        return index
