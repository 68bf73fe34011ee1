"""Drops the column 0004 reads, with nothing to ensure 0004 ran first (chunkwise.E009):
under CHUNKWISE_DEFER=1, 0004 is only planned and every value is lost."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("network", "0004_fill_port_mac_upper")]
    operations = [migrations.RemoveField("port", "mac_address")]
