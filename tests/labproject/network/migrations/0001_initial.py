from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = [("chunkwise", "0003_checkpoint_verification")]
    operations = [
        migrations.CreateModel(
            name="Device",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("mac_address", models.CharField(max_length=17, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="Port",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("mac_address", models.CharField(max_length=17, null=True)),
            ],
        ),
    ]
