from django.db import migrations
from django.db.models import Q
from django.db.models.functions import Upper

from chunkwise.django import BatchedRunPython


def fill(apps, schema_editor, batch):
    batch.update(mac_upper=Upper("mac_address"))


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("inventory", "0002_port_mac_upper")]
    operations = [BatchedRunPython("inventory.Port", fill, todo=Q(mac_upper__isnull=True),
                                   # a port without a MAC keeps mac_upper NULL: done as it is
                                   done=Q(mac_address__isnull=True),
                                   reverse=migrations.RunPython.noop)]
