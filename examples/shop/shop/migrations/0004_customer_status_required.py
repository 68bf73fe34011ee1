"""A later release: every customer must have a status now. The constraint needs the data
0002 migrates, so this migration first ensures 0002 is complete. Where a DataMigration
finished it, that is a no-op; where nobody ran it, it finishes here, in batches; where a
DataMigration is still running it, migrate stops at once and names it."""

from django.db import migrations, models

from chunkwise.django import EnsureBatchedComplete


class Migration(migrations.Migration):
    atomic = False  # finishing 0002 here, if it must, commits batch by batch
    dependencies = [("shop", "0003_count_visit")]

    operations = [
        EnsureBatchedComplete("shop", "0002_customer_status"),
        migrations.AddConstraint(
            model_name="customer",
            constraint=models.CheckConstraint(condition=models.Q(status__isnull=False),
                                              name="shop_customer_status_set"),
        ),
    ]
