"""0010's work with a todo on the table alone (payload marks the same items)."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from lab.bumps import bump


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0010_backfill_across_a_relation")]
    operations = [BatchedRunPython("lab.Item", bump, todo=Q(payload="flagged", counter=0),
                                   batch_size=5000)]
