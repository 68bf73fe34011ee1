"""Per row, with per-batch lookups: prepare loads the batch's products' prices once, and
the transform gets them beside each row (a UUID key; only the fields it reads)."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from lab.orders import prices, total_from_prices


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0013_link_port_macs")]
    operations = [BatchedRunPython("lab.Order", transform=total_from_prices, fields=["total"],
                                   prepare=prices, only=["product", "quantity"],
                                   todo=Q(total__isnull=True, product__isnull=False))]
