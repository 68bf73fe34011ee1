"""Batches by a key that is not unique: refused before any row is read."""

from django.db import migrations

from chunkwise.django import BatchedRunPython


def bump(visit):
    visit.counter += 1


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("mistakes", "0001_initial"), ("chunkwise", "0001_initial")]
    operations = [BatchedRunPython("mistakes.Visit", transform=bump, fields=["counter"],
                                   key="email")]
