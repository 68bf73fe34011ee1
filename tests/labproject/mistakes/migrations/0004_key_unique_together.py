"""Batches by a field that is unique only together with another (unique_together):
refused, as a key that is not unique is."""

from django.db import migrations

from chunkwise.django import BatchedRunPython


def bump(shelf):
    shelf.counter += 1


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("mistakes", "0003_ensure_a_missing_migration")]
    operations = [BatchedRunPython("mistakes.Shelf", transform=bump, fields=["counter"],
                                   key="room")]
