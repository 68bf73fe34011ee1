"""Keys kept as char(32) hex (MySQL's UUIDField, MariaDB's before 10.7)."""

from django.db import migrations

from chunkwise.django import BatchedRunPython
from lab.bumps import bump, bump_row


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0016_order_totals_plain")]
    operations = [
        BatchedRunPython("lab.HexUuidItem", bump, batch_size=100),
        BatchedRunPython("lab.HexUuidItem", transform=bump_row, fields=["counter"],
                         batch_size=100),
    ]
