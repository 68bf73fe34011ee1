"""Checkpoint and failed-row tables. They live in the migrated database itself, so a
batch and its checkpoint commit in one transaction."""

from __future__ import annotations

from django.db import models

from chunkwise.contract import Direction, OperationName, ShardState


class Checkpoint(models.Model):
    """Where one operation, in one direction, on one shard, has got to."""

    app_label = models.CharField(max_length=100)
    migration = models.CharField(max_length=255)
    operation = models.PositiveIntegerField(help_text="index in the migration's operations")
    direction = models.CharField(max_length=8, default=Direction.FORWARD)
    shard = models.PositiveIntegerField(default=0)
    shard_count = models.PositiveIntegerField(default=1)
    model = models.CharField(max_length=200, help_text="app_label.Model")
    key_field = models.CharField(max_length=100)
    #: keys are stored as text and read back with the key field's to_python()
    lower_key = models.TextField(null=True, help_text="exclusive lower bound of this shard")
    last_key = models.TextField(null=True, help_text="every row up to here is done")
    high_water_key = models.TextField(null=True, help_text="inclusive upper bound, fixed at start")
    rows_estimated = models.BigIntegerField(default=0)
    rows_processed = models.BigIntegerField(default=0)
    failed_rows = models.BigIntegerField(default=0)
    batches = models.BigIntegerField(default=0)
    consecutive_failed_batches = models.IntegerField(default=0)
    lock_wait_seconds = models.FloatField(default=0.0)
    state = models.CharField(max_length=12, default=ShardState.RUNNING,
                             choices=[(state.value, state.name.title()) for state in ShardState])
    message = models.TextField(blank=True, default="")
    owner = models.CharField(max_length=255, blank=True, default="")
    planned = models.BooleanField(default=False)
    #: after a completed run with a todo filter: rows up to high_water_key still matching
    #: it, and how many of those were not recorded as failed (expected: 0 and 0)
    rows_remaining = models.BigIntegerField(null=True)
    rows_missed = models.BigIntegerField(null=True)
    verified_at = models.DateTimeField(null=True)
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(null=True)
    completed_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app_label", "migration", "operation", "direction", "shard"],
                name="chunkwise_checkpoint_identity",
            )
        ]

    def __str__(self) -> str:
        return (f"{OperationName(self.app_label, self.migration, self.operation)} "
                f"{self.direction} shard {self.shard}/{self.shard_count}")


class FailedRow(models.Model):
    """A row skipped because its batch failed for a reason retrying cannot fix."""

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE, related_name="failures")
    key = models.TextField()
    error_class = models.CharField(max_length=200)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # the admin's list of failed rows, newest first, by error class or by run: a
            # page is a walk down one of these, never a sort of a million rows
            models.Index(fields=["error_class", "id"], name="chunkwise_failed_by_class"),
            models.Index(fields=["checkpoint", "id"], name="chunkwise_failed_by_run"),
        ]

    def __str__(self) -> str:
        return f"{self.checkpoint}: key {self.key}: {self.error_class}"


class Run(Checkpoint):
    """The admin's face of the checkpoints: one run is an operation in one direction, its
    shards folded into it (see :mod:`.runs`). A proxy, so that Django gives it a view
    permission of its own and the one action, marking its failed rows for retry, a
    permission of chunkwise's own; only view, since nothing may change a checkpoint by
    hand."""

    class Meta:
        proxy = True
        verbose_name = "run"
        default_permissions = ("view",)
        permissions = [("retry_failed_rows", "Can mark a run's failed rows for retry")]

    def __str__(self) -> str:  # the run, not its shard 0, whose row it is
        return f"{OperationName(self.app_label, self.migration, self.operation)} {self.direction}"


class RetryRequest(models.Model):
    """A run's failed rows marked for retry (in the admin): the next retry of that run
    (``chunkwise_run --retry-failed``, or a plain ``chunkwise_run`` of it by hand, which
    takes the mark up) runs them and removes the mark. A table of its own, not a column of
    Checkpoint: the runner, which ``migrate`` runs before this table may exist, reads and
    writes checkpoints and failed rows only (see :mod:`.retry_marks`)."""

    app_label = models.CharField(max_length=100)
    migration = models.CharField(max_length=255)
    operation = models.PositiveIntegerField()
    direction = models.CharField(max_length=8)
    #: who asked (their username: chunkwise does not need django.contrib.auth)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField()

    class Meta:
        default_permissions = ()  # made by the admin's action, under its permission only
        constraints = [
            models.UniqueConstraint(fields=["app_label", "migration", "operation", "direction"],
                                    name="chunkwise_retryrequest_identity")
        ]

    def __str__(self) -> str:
        return (f"{OperationName(self.app_label, self.migration, self.operation)} "
                f"{self.direction}: retry requested by {self.requested_by}")
