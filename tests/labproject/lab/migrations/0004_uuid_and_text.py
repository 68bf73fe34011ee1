from django.db import migrations
from django.db.models import F

from chunkwise.django import BatchedRunPython


def bump(apps, schema_editor, batch):
    batch.update(counter=F("counter") + 1)


def bump_row(row):
    row.counter += 1


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0003_setbased_items")]
    operations = [
        BatchedRunPython("lab.UuidItem", bump, batch_size=100),
        BatchedRunPython("lab.TextItem", bump, batch_size=100),
        BatchedRunPython("lab.UuidItem", transform=bump_row, fields=["counter"], batch_size=100),
    ]
