"""A new table filled from a column: one PortMac per port with a MAC, by batch.insert_select.
todo leaves out the ports already copied (an anti-join on the new table), so a run, a
re-run or a run after a kill copies each port once."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from lab.macs import copy_macs


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0011_backfill_on_the_table")]
    operations = [BatchedRunPython("lab.Port", copy_macs,
                                   todo=Q(mac_address__isnull=False, macs__isnull=True),
                                   batch_size=1000)]
