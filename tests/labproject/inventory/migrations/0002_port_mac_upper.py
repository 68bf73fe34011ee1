from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]
    operations = [
        migrations.AddField("port", "mac_upper", models.CharField(max_length=17, null=True)),
    ]
