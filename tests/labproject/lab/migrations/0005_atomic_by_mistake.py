"""A migration that forgot atomic = False: the operation must refuse clearly."""

from django.db import migrations
from django.db.models import F

from chunkwise.django import BatchedRunPython


def bump(apps, schema_editor, batch):
    batch.update(counter=F("counter") + 1)


class Migration(migrations.Migration):
    dependencies = [("lab", "0004_uuid_and_text")]
    operations = [BatchedRunPython("lab.Item", bump)]
