"""Data migrations in the shapes large Django projects ship, ported from RunPython to
BatchedRunPython (docs/how-to/port-runpython.md; installed with LAB_PORTING=1)."""

from django.db import models


class Profile(models.Model):
    """Shape 1: a JSON text field normalised row by row (transform=)."""

    prefs = models.TextField(default="{}")


class Customer(models.Model):
    """Shape 2: a column backfilled from the latest row of a related table (forward=)."""

    last_order_at = models.DateTimeField(null=True)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    created = models.DateTimeField()
