"""A todo filter across a to-many relation: an item with three flagged Stamped rows
matches three times in a join. Per-row and not idempotent (counter + 1)."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython


def bump(item):
    item.counter += 1


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0005_atomic_by_mistake")]
    operations = [BatchedRunPython("lab.Item", transform=bump, fields=["counter"],
                                   todo=Q(stamped__flag=True), batch_size=50)]
