"""Shape 3, first of three: the schema the data step needs, as Django writes it (atomic).
Upstream, the data step and the RemoveField follow in this same migration."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("porting", "0003_backfill_last_order")]
    operations = [
        migrations.CreateModel(
            name="MACAddress",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("mac_address", models.CharField(max_length=17)),
                ("interface", models.ForeignKey(on_delete=models.deletion.CASCADE,
                                                related_name="mac_addresses",
                                                to="porting.interface")),
            ],
        ),
        migrations.AddField("interface", "primary_mac_address",
                            models.ForeignKey(null=True, on_delete=models.deletion.SET_NULL,
                                              related_name="+", to="porting.macaddress")),
    ]
