"""Batches by a unique key that admits NULL: refused before any row is read (chunkwise.E004,
and the run itself when the checks are skipped)."""

from django.db import migrations

from chunkwise.django import BatchedRunPython
from lab.bumps import bump


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0008_renamed_key_column")]
    operations = [BatchedRunPython("lab.Book", bump, key="code", batch_size=100)]
