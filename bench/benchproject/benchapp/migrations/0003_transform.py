from django.db import migrations

from benchapp.logic import classify
from chunkwise.django import BatchedRunPython


def classify_row(customer):
    customer.status = classify(customer.last_login)


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("benchapp", "0002_setbased")]
    operations = [BatchedRunPython("benchapp.Customer", transform=classify_row,
                                   fields=["status"], batch_size=5000)]
