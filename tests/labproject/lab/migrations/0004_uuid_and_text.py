from django.db import migrations

from chunkwise.django import BatchedRunPython
from lab.bumps import bump, bump_row


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0003_setbased_items")]
    operations = [
        BatchedRunPython("lab.UuidItem", bump, batch_size=100),
        BatchedRunPython("lab.TextItem", bump, batch_size=100),
        BatchedRunPython("lab.UuidItem", transform=bump_row, fields=["counter"], batch_size=100),
    ]
