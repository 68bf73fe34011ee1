"""Shape 1 ported: the per-row code unchanged, as a transform; chunkwise reads each batch
once and writes it back in one statement."""

from django.db import migrations

from chunkwise.django import BatchedRunPython
from porting.plain import normalise


def normalise_row(row):
    row.prefs = normalise(row.prefs)


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("porting", "0001_initial")]
    operations = [
        BatchedRunPython("porting.Profile", transform=normalise_row, fields=["prefs"],
                         batch_size=2000, reverse=migrations.RunPython.noop),
    ]
