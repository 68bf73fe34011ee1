"""Per row, the price read through the product relation: annotate puts it on the row."""

from django.db import migrations
from django.db.models import F, Q

from chunkwise.django import BatchedRunPython
from lab.orders import total_from_price


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0014_order_totals_from_lookups")]
    operations = [BatchedRunPython("lab.Order", transform=total_from_price, fields=["total"],
                                   annotate={"price": F("product__price")},
                                   only=["quantity"],
                                   todo=Q(total__isnull=True, product__isnull=False))]
