"""A backfill whose todo follows a relation (items with a flagged Stamped row), set-based:
bench/joined_todo.py times it against 0011, the same work with a todo on the table alone."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from lab.bumps import bump


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0009_key_admits_null")]
    operations = [BatchedRunPython("lab.Item", bump, todo=Q(stamped__flag=True, counter=0),
                                   batch_size=5000)]
