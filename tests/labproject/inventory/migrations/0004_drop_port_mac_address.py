"""Drops the column 0003 reads, after ensuring 0003 is complete: under CHUNKWISE_DEFER=1
migrate finishes 0003 here, inline, if no DataMigration did."""

from django.db import migrations

from chunkwise.django import EnsureBatchedComplete


class Migration(migrations.Migration):
    atomic = False  # finishing 0003 here, if it must, commits batch by batch
    dependencies = [("inventory", "0003_fill_port_mac_upper")]
    operations = [EnsureBatchedComplete("inventory", "0003_fill_port_mac_upper"),
                  migrations.RemoveField("port", "mac_address")]
