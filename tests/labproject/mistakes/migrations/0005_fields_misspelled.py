"""Writes a field the model does not have (a typo): refused in one line, exit 64."""

from django.db import migrations

from chunkwise.django import BatchedRunPython


def bump(visit):
    visit.counter += 1


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("mistakes", "0004_key_unique_together")]
    operations = [BatchedRunPython("mistakes.Visit", transform=bump, fields=["countr"])]
