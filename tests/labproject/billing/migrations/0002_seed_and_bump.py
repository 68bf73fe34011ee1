"""Two mistakes at once, as a user made them: no dependency on chunkwise's migrations
(chunkwise.E006), and a RunPython beside the batched operation, which commits on its own
and would run again after a failure (chunkwise.W001)."""

from typing import Any

from django.db import migrations
from lab.bumps import bump

from chunkwise.django import BatchedRunPython


def seed(apps: Any, schema_editor: Any) -> None:
    invoice = apps.get_model("billing", "Invoice")
    invoice.objects.using(schema_editor.connection.alias).bulk_create(
        invoice() for _ in range(100))


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("billing", "0001_initial")]
    operations = [migrations.RunPython(seed), BatchedRunPython("billing.Invoice", bump)]
