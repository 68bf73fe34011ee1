"""Data migrations in the shapes large Django projects ship, ported from RunPython to
BatchedRunPython (docs/how-to/port-runpython.md; installed with LAB_PORTING=1)."""

import uuid

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


class Interface(models.Model):
    """Shape 3: its MAC address moved from a text column (mac_address, dropped by 0006) to
    a table of its own, the interface pointing at its new row, as NetBox's MACAddress
    migration does; split in three migrations (0004, 0005, 0006)."""

    name = models.CharField(max_length=64)
    primary_mac_address = models.ForeignKey("MACAddress", null=True, on_delete=models.SET_NULL,
                                            related_name="+")


class MACAddress(models.Model):
    mac_address = models.CharField(max_length=17)
    interface = models.ForeignKey(Interface, on_delete=models.CASCADE,
                                  related_name="mac_addresses")


class Product(models.Model):
    price = models.DecimalField(max_digits=10, decimal_places=2)


class LineItem(models.Model):
    """Shape 4: a UUID key, a nullable product, and a total from the product's price,
    looked up once per batch (0007, prepare=)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    product = models.ForeignKey(Product, null=True, on_delete=models.SET_NULL)
    quantity = models.IntegerField(default=1)
    total = models.DecimalField(max_digits=12, decimal_places=2, null=True)
