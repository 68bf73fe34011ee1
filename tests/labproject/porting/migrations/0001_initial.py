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
    ]
