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

    def __str__(self) -> str:
        return f"{self.checkpoint}: key {self.key}: {self.error_class}"
