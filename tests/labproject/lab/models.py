import uuid

from django.db import models


class Item(models.Model):
    counter = models.IntegerField(default=0)
    status = models.CharField(max_length=10, null=True)
    payload = models.CharField(max_length=20, default="")
    score = models.IntegerField(default=0)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(score__gte=0),
                                              name="lab_item_score_not_negative")]


class UuidItem(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    counter = models.IntegerField(default=0)


class TextItem(models.Model):
    slug = models.CharField(max_length=64, primary_key=True)
    counter = models.IntegerField(default=0)
