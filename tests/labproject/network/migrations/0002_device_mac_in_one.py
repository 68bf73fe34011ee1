"""As upstream projects write it: the new column, the data step that fills it from the
old one, and the old column's removal, in one migration (chunkwise.E008)."""

from django.db import migrations, models
from django.db.models import F, Q

from chunkwise.django import BatchedRunPython


def copy_mac(apps, schema_editor, batch):
    batch.update(mac=F("mac_address"))


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("network", "0001_initial")]
    operations = [
        migrations.AddField("device", "mac", models.CharField(max_length=17, null=True)),
        BatchedRunPython("network.Device", copy_mac, todo=Q(mac__isnull=True)),
        migrations.RemoveField("device", "mac_address"),
    ]
