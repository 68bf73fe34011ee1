from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("network", "0002_device_mac_in_one")]
    operations = [
        migrations.AddField("port", "mac_upper", models.CharField(max_length=17, null=True)),
    ]
