import uuid
from typing import Any

from django.db import models


class Item(models.Model):
    counter = models.IntegerField(default=0)
    status = models.CharField(max_length=10, null=True)
    payload = models.CharField(max_length=20, default="")
    score = models.IntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(score__gte=0),
                                              name="lab_item_score_not_negative")]


class UuidItem(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    counter = models.IntegerField(default=0)


class HexUuidField(models.UUIDField):  # type: ignore[type-arg]
    """A UUID kept as 32 hex characters: the column a UUIDField has on MySQL and on
    MariaDB before 10.7, and the field Django 5.0's release notes give MariaDB projects
    that keep such columns after upgrading."""

    def db_type(self, connection: Any) -> str:
        return "char(32)"

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        value = super().get_db_prep_value(value, connection, prepared)
        return value.hex if isinstance(value, uuid.UUID) else value


class HexUuidItem(models.Model):
    id = HexUuidField(primary_key=True, default=uuid.uuid4)
    counter = models.IntegerField(default=0)


class TextItem(models.Model):
    slug = models.CharField(max_length=64, primary_key=True)
    counter = models.IntegerField(default=0)


class CodedItem(models.Model):
    """A key whose column is not its field's name (``db_column``)."""

    code = models.IntegerField(primary_key=True, db_column="item_code")
    counter = models.IntegerField(default=0)


class Book(models.Model):
    """A unique key that admits NULL (lab 0009 batches by it): refused, since NULL keys
    have no place in key order."""

    code = models.CharField(max_length=20, unique=True, null=True)
    counter = models.IntegerField(default=0)


class Stamped(models.Model):
    """Every field type the binary fetch handles, to compare it with Django's own values."""

    at = models.DateTimeField()
    day = models.DateField()
    amount = models.DecimalField(max_digits=12, decimal_places=3)
    ref = models.UUIDField()
    ratio = models.FloatField()
    flag = models.BooleanField()
    note = models.TextField()
    item = models.ForeignKey(Item, null=True, on_delete=models.SET_NULL)


class Document(models.Model):
    """A JSONField: its values need Django's converter, so the text path is used."""

    data = models.JSONField(default=dict)


class Port(models.Model):
    """A port whose MAC address moves to a table of its own: lab 0012 copies it (the new
    table references the port), lab 0013 also points the port at its new row (as
    NetBox's MACAddress migration does), both with batch.insert."""

    mac_address = models.CharField(max_length=17, null=True)
    primary_mac = models.ForeignKey("PortMac", null=True, on_delete=models.SET_NULL,
                                    related_name="+")


class PortMac(models.Model):
    port = models.ForeignKey(Port, on_delete=models.CASCADE, related_name="macs")
    address = models.CharField(max_length=17)
    added = models.DateTimeField(auto_now_add=True)


class Product(models.Model):
    name = models.CharField(max_length=40, default="")
    price = models.DecimalField(max_digits=10, decimal_places=2)


class Order(models.Model):
    """A UUID key, and a total computed from the product's price: looked up once per batch
    (lab 0014, prepare=), read through a join (lab 0015, annotate=), or from the price
    copied onto the order (lab 0016, the plain transform the other two are measured
    against)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    product = models.ForeignKey(Product, null=True, on_delete=models.SET_NULL)
    quantity = models.IntegerField(default=1)
    unit_price = models.DecimalField(max_digits=10, decimal_places=2, null=True)
    total = models.DecimalField(max_digits=12, decimal_places=2, null=True)
    note = models.CharField(max_length=60, default="")
