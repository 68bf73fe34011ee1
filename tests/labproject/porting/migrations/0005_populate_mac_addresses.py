"""Shape 3, second of three: the data step alone. Per batch, one INSERT of the new rows
(batch.insert sets their ids) and one UPDATE pointing each interface at its own
(batch.write), in the batch's transaction: a crash neither loses nor doubles a row. An
interface's own primary_mac_address says it is done; one without a MAC is not to do."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from porting.plain import canonical_mac


def populate(apps, schema_editor, batch):
    mac_address = apps.get_model("porting", "MACAddress")
    interfaces = list(batch.only("mac_address"))
    macs = [mac_address(mac_address=canonical_mac(row.mac_address), interface_id=row.pk)
            for row in interfaces]
    batch.insert(mac_address, macs)
    for row, mac in zip(interfaces, macs, strict=True):
        row.primary_mac_address_id = mac.pk
    batch.write(interfaces, ["primary_mac_address"])


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("porting", "0004_macaddress")]
    operations = [
        BatchedRunPython("porting.Interface", populate,
                         todo=Q(mac_address__isnull=False, primary_mac_address__isnull=True),
                         batch_size=2000, reverse=migrations.RunPython.noop),
    ]
