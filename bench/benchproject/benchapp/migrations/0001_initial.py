from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Customer",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("email", models.CharField(max_length=254)),
                ("last_login", models.DateTimeField(null=True)),
                ("status", models.CharField(max_length=10, null=True)),
                ("touched", models.IntegerField(default=0)),
            ],
        ),
    ]
