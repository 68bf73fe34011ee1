"""A later release of the lab: it needs lab.0002's data, waiting up to 60 s for whoever
runs it now."""

from django.db import migrations

from chunkwise.django import EnsureBatchedComplete


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0002_bump_items")]
    operations = [EnsureBatchedComplete("lab", "0002", wait=60)]
