"""Set-based with a todo filter that the work itself empties (status IS NULL -> 'done'),
so a completed run can be verified. Rows with payload "negative" violate the CHECK
constraint and are recorded as failed (their status stays NULL)."""

from django.db import migrations
from django.db.models import Q

from chunkwise.django import BatchedRunPython
from lab.knobs import row_sleep


def mark_done(apps, schema_editor, batch):
    row_sleep()  # once per batch here
    # first: `batch` is the rows still to do, which the next UPDATE empties
    batch.filter(payload="negative").update(score=-1)
    batch.update(status="done")


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("lab", "0006_todo_across_a_relation")]
    operations = [BatchedRunPython("lab.Item", mark_done, todo=Q(status__isnull=True),
                                   batch_size=100)]
