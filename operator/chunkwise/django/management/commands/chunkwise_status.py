"""manage.py chunkwise_status: every checkpoint, and the rows that failed."""

from __future__ import annotations

import datetime
import difflib
import json
from argparse import ArgumentParser
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from chunkwise.contract import Direction, ExitCode, OperationName, ShardState, json_key

from ...checkpoints import holder_alive, runner_alive
from ...models import Checkpoint, FailedRow
from ...operation_ref import OperationRef


class Command(BaseCommand):
    help = "Show the checkpoint of every batched operation and, with --failed, the failed rows."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("app_label", nargs="?", help="only this app")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias")
        parser.add_argument("--failed", action="store_true", help="list the failed rows too")
        parser.add_argument("--limit", type=int, default=50,
                            help="failed rows to show per checkpoint (default 50)")
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoints = Checkpoint.objects.using(options["database"]).order_by(
            "app_label", "migration", "operation", "direction", "shard")
        if options["app_label"]:
            checkpoints = checkpoints.filter(app_label=options["app_label"])
        records = [self._record(cp, options) for cp in checkpoints]
        if options["app_label"] and not records:
            self._check_app_label(options["app_label"], options["database"])
        if options["json"]:
            self.stdout.write(json.dumps(records, indent=2, default=str))
            return
        if not records:
            self.stdout.write("no checkpoints yet")
            return
        header = ("MIGRATION", "OP", "DIRECTION", "SHARD", "STATE", "ROWS", "ESTIMATED", "DONE%",
                  "FAILED", "REMAINING", "MISSED", "VERIFIED", "LAST KEY", "HEARTBEAT", "OWNER")
        rows = [header] + [(
            f"{r['app_label']}.{r['migration']}", str(r["operation"]), r["direction"],
            f"{r['shard']}/{r['shard_count']}", r["state"], f"{r['rows_processed']:,}",
            f"{r['rows_estimated']:,}", f"{r['percent']:.1f}", f"{r['failed_rows']:,}",
            _count(r["rows_remaining"]), _count(r["rows_missed"]), _ago(r["verified_at"]),
            _shown(r["last_key"]), _ago(r["heartbeat_at"]), r["owner"]) for r in records]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        for record in records:
            if record["message"]:
                name = OperationName(record["app_label"], record["migration"],
                                     record["operation"])
                self.stdout.write(f"\n{name}: {record['message']}")
            for failure in record.get("failures", []):
                self.stdout.write(f"  failed key {failure['key']}: {failure['error_class']}: "
                                  f"{failure['message']}")
            if record.get("failures_truncated"):
                shown = len(record["failures"])
                self.stdout.write(f"  ... {record['failed_rows'] - shown:,} more failed rows "
                                  f"(showing {shown}; --limit N shows more)")

    def _record(self, cp: Checkpoint, options: dict[str, Any]) -> dict[str, Any]:
        percent = 100.0 if cp.state == ShardState.DONE else (
            100.0 * cp.rows_processed / cp.rows_estimated if cp.rows_estimated else 0.0)
        state = cp.state
        if state == ShardState.RUNNING and not self._alive(cp, options):
            state = "stale"  # nobody says "running" for it: its runner is gone
        key = _key_reader(cp)
        record: dict[str, Any] = {
            "app_label": cp.app_label, "migration": cp.migration, "operation": cp.operation,
            "direction": cp.direction, "shard": cp.shard, "shard_count": cp.shard_count,
            "state": state, "rows_processed": cp.rows_processed,
            "rows_estimated": cp.rows_estimated, "percent": min(percent, 100.0),
            "failed_rows": cp.failed_rows, "batches": cp.batches,
            "lock_wait_seconds": cp.lock_wait_seconds, "last_key": key(cp.last_key),
            "heartbeat_at": cp.heartbeat_at, "heartbeat_age": _ago(cp.heartbeat_at),
            "owner": cp.owner, "message": cp.message,
            # the check after a completed run with a todo filter: rows up to the high-water
            # mark still matching it, and of those the ones not recorded as failed
            "rows_remaining": cp.rows_remaining, "rows_missed": cp.rows_missed,
            "verified_at": cp.verified_at,
        }
        if options["failed"]:
            failures = list(FailedRow.objects.using(options["database"]).filter(
                checkpoint=cp).order_by("id")[: options["limit"]])
            record["failures"] = [
                {"key": key(f.key), "error_class": f.error_class, "message": f.message}
                for f in failures
            ]
            record["failures_truncated"] = len(failures) < cp.failed_rows
        return record


    @staticmethod
    def _check_app_label(label: str, alias: str) -> None:
        """A label that is neither an installed app nor one with checkpoints is a typo, not
        an app with nothing run yet (an app removed since keeps its checkpoints shown)."""
        installed = {config.label for config in apps.get_app_configs()}
        if label in installed:
            return
        known = installed | set(
            Checkpoint.objects.using(alias).values_list("app_label", flat=True).distinct())
        close = difflib.get_close_matches(label, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else \
            f" (installed: {', '.join(sorted(known))})"
        raise CommandError(f"app_label: no installed app is called {label!r}{hint}",
                           returncode=ExitCode.USAGE)

    @staticmethod
    def _alive(cp: Checkpoint, options: dict[str, Any]) -> bool:
        """PostgreSQL: whether a live session holds the runner lock, however long a
        paced or throttled run has waited since its last batch; elsewhere whether the
        runner's process lives (on this host), or else the heartbeat's age."""
        if cp.direction not in set(Direction):
            # a row an older chunkwise wrote for a direction it should have refused: no
            # runner can hold its lock
            return holder_alive(cp.owner, cp.heartbeat_at)
        ref = OperationRef(cp.app_label, cp.migration, cp.operation, Direction(cp.direction),
                           cp.shard, cp.shard_count)
        alive = runner_alive(options["database"], ref)
        if alive is not None:
            return alive
        return holder_alive(cp.owner, cp.heartbeat_at)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _shown(key: Any) -> str:
    """A key for the table: ``-`` before the first batch committed (nothing is done)."""
    return "-" if key is None else str(key)


def _ago(moment: datetime.datetime | None) -> str:
    """How long ago, in the largest unit that keeps it readable; ``-`` for never."""
    if moment is None:
        return "-"
    seconds = (timezone.now() - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _key_reader(cp: Checkpoint) -> Any:
    """Keys are stored as text; read them back through the model's key field, so JSON
    shows an integer key as a number (text if the model is gone from the project)."""
    try:
        field = apps.get_model(cp.model)._meta.get_field(cp.key_field)
    except (LookupError, ValueError, FieldDoesNotExist):
        return lambda text: text

    def read(text: str | None) -> Any:
        return None if text is None else json_key(field.to_python(text))

    return read
