"""Shape 4 ported: the per-row code as a transform, with its lookups made once per batch
by prepare (the prices of the batch's products, in one query), whose result the transform
gets beside each row. only= reads just the fields the code uses; the UUID primary key is
the keyset key as it is. Line items without a product match no todo: left alone."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from porting.plain import line_total


def prices(apps, batch):
    product = apps.get_model("porting", "Product")
    return dict(product.objects.using(batch.db).filter(pk__in=batch.values("product_id"))
                .values_list("pk", "price"))


def total(item, prices):
    item.total = line_total(item.quantity, prices[item.product_id])


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("porting", "0006_remove_interface_mac_address")]
    operations = [
        BatchedRunPython("porting.LineItem", transform=total, fields=["total"],
                         prepare=prices, only=["product", "quantity"],
                         todo=Q(total__isnull=True, product__isnull=False),
                         batch_size=2000, reverse=migrations.RunPython.noop),
    ]
