"""Ensures a migration that does not exist: chunkwise.E005 names it."""

from django.db import migrations

from chunkwise.django import EnsureBatchedComplete


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("mistakes", "0002_key_not_unique")]
    operations = [EnsureBatchedComplete("mistakes", "0099_never_written")]
