"""NetBox's shape: a PortMac per port, and the port pointing at it (batch.insert returns
the new ids, batch.write sets them). The port's own primary_mac says it is done."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from lab.macs import link_macs


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0012_copy_port_macs")]
    operations = [BatchedRunPython("lab.Port", link_macs,
                                   todo=Q(mac_address__isnull=False, primary_mac__isnull=True),
                                   batch_size=1000)]
