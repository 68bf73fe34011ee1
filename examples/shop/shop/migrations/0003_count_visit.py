"""A per-row transform: Python code on each row, written back with one UPDATE per batch.
Deliberately not idempotent (visits + 1): only the checkpoint keeps it exactly-once."""

from django.db import migrations

from chunkwise.django import BatchedRunPython


def count_visit(customer):
    customer.visits += 1


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("shop", "0002_customer_status")]

    operations = [
        BatchedRunPython(
            model="shop.Customer",
            transform=count_visit,
            fields=["visits"],
            batch_size=5000,
        ),
    ]
