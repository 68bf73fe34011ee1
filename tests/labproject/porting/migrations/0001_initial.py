import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [("chunkwise", "0003_checkpoint_verification")]
    operations = [
        migrations.CreateModel(
            name="Profile",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("prefs", models.TextField(default="{}")),
            ],
        ),
        migrations.CreateModel(
            name="Customer",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("last_order_at", models.DateTimeField(null=True)),
            ],
        ),
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("created", models.DateTimeField()),
                ("customer", models.ForeignKey(on_delete=models.deletion.CASCADE,
                                               related_name="orders", to="porting.customer")),
            ],
        ),
        migrations.CreateModel(  # shape 3: mac_address moves to a table of its own (0004-0006)
            name="Interface",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=64)),
                ("mac_address", models.CharField(max_length=32, null=True)),
            ],
        ),
        migrations.CreateModel(  # shape 4: line items' totals from their products' prices
            name="Product",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("price", models.DecimalField(decimal_places=2, max_digits=10)),
            ],
        ),
        migrations.CreateModel(
            name="LineItem",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, primary_key=True, serialize=False)),
                ("quantity", models.IntegerField(default=1)),
                ("total", models.DecimalField(decimal_places=2, max_digits=12, null=True)),
                ("product", models.ForeignKey(null=True, on_delete=models.deletion.SET_NULL,
                                              to="porting.product")),
            ],
        ),
    ]
