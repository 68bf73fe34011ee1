"""The classic data migration: customers whose last login is over a year old become
inactive, the rest active. Set-based: two UPDATEs per batch of keys."""

from datetime import timedelta

from django.db import migrations
from django.db.models import Q
from django.utils import timezone

from chunkwise.django import BatchedRunPython


def mark_status(apps, schema_editor, batch):
    cutoff = timezone.now() - timedelta(days=365)
    batch.filter(Q(last_login__lt=cutoff) | Q(last_login__isnull=True)).update(status="inactive")
    batch.filter(last_login__gte=cutoff).update(status="active")


def clear_status(apps, schema_editor, batch):
    batch.update(status=None)


class Migration(migrations.Migration):
    atomic = False  # every batch commits on its own
    dependencies = [("shop", "0001_initial"), ("chunkwise", "0003_checkpoint_verification")]

    operations = [
        BatchedRunPython(
            model="shop.Customer",
            todo=Q(status__isnull=True),  # rows still to do: re-runs skip finished rows
            forward=mark_status,
            reverse=clear_status,
            reverse_todo=Q(status__isnull=False),
            batch_size=5000,
        ),
    ]
