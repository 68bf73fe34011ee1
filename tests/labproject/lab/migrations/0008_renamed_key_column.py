"""A key field whose column has another name (db_column): set-based, then per row."""

from django.db import migrations

from chunkwise.django import BatchedRunPython
from lab.bumps import bump, bump_row


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0007_mark_items_done")]
    operations = [
        BatchedRunPython("lab.CodedItem", bump, batch_size=100),
        BatchedRunPython("lab.CodedItem", transform=bump_row, fields=["counter"], batch_size=100),
    ]
