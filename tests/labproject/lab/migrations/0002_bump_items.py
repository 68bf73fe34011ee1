"""Per-row transform, not idempotent: counter + 1. Rows with payload "raise" fail."""

from django.db import migrations

from chunkwise.django import BatchedRunPython
from lab.knobs import code_error, note_frozen_objects, pause_at, row_sleep


def bump(item):
    row_sleep()
    pause_at(item.pk)
    note_frozen_objects()
    code_error()
    if item.payload == "raise":
        raise ValueError(f"cannot bump item {item.pk}: payload says raise")
    item.counter += 1


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0001_initial"), ("chunkwise", "0003_checkpoint_verification")]
    operations = [BatchedRunPython("lab.Item", transform=bump, fields=["counter"], batch_size=500)]
