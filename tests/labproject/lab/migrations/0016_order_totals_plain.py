"""The plain transform 0014 and 0015 are measured against: the price is on the order."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from lab.orders import total_from_unit_price


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0015_order_totals_from_a_join")]
    operations = [BatchedRunPython("lab.Order", transform=total_from_unit_price,
                                   fields=["total"], only=["quantity", "unit_price"],
                                   todo=Q(total__isnull=True, unit_price__isnull=False))]
