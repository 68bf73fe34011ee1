"""Shape 3, last of three: drops the column 0005 reads, after ensuring 0005 is complete.
Under CHUNKWISE_DEFER=1, migrate finishes here, inline, what no DataMigration did."""

from django.db import migrations

from chunkwise.django import EnsureBatchedComplete


class Migration(migrations.Migration):
    atomic = False  # finishing 0005 here, if it must, commits batch by batch
    dependencies = [("porting", "0005_populate_mac_addresses")]
    operations = [
        EnsureBatchedComplete("porting", "0005_populate_mac_addresses"),
        migrations.RemoveField("interface", "mac_address"),
    ]
