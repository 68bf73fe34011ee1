"""Set-based forward, not idempotent; rows with payload "negative" violate a CHECK."""

from django.db import migrations
from django.db.models import F

from chunkwise.django import BatchedRunPython


def bump(apps, schema_editor, batch):
    batch.update(counter=F("counter") + 1)
    batch.filter(payload="negative").update(score=-1)


def unbump(apps, schema_editor, batch):
    batch.update(counter=F("counter") - 1)


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0002_bump_items")]
    operations = [BatchedRunPython("lab.Item", bump, reverse=unbump, batch_size=500)]
