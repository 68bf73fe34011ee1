from django.db import migrations
from django.db.models import Case, Q, Value, When

from benchapp.logic import CUTOFF
from chunkwise.django import BatchedRunPython


def classify_batch(apps, schema_editor, batch):
    batch.update(status=Case(
        When(Q(last_login__isnull=True) | Q(last_login__lt=CUTOFF), then=Value("inactive")),
        default=Value("active"),
    ))


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("benchapp", "0001_initial"), ("chunkwise", "0001_initial")]
    operations = [BatchedRunPython("benchapp.Customer", classify_batch, batch_size=5000)]
