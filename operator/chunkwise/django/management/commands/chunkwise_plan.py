"""manage.py chunkwise_plan APP MIGRATION: ``chunkwise_run --dry-run``.

Rows to do (counted, or estimated by the planner on big tables), rows/s and lock waits
from a few sample batches run inside one transaction that is rolled back, the batch
size the tuner would pick, and an ETA. Writes nothing.
"""

from __future__ import annotations

from typing import Any

from .chunkwise_run import Command as RunCommand


class Command(RunCommand):
    help = ("Plan one BatchedRunPython operation without running it: rows to do, rows/s, "
            "lock waits, batch size and ETA from sample batches that are rolled back; with "
            "--shards N, each shard's over its own key range.")
    plans_only = True  # no --dry-run (always) nor --retry-failed (a retry is no plan)

    def handle(self, *args: Any, **options: Any) -> None:
        options["dry_run"] = True
        super().handle(*args, **options)
