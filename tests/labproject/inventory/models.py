"""The same change as network.Port, laid out so that no value can be lost (installed only
with LAB_LAYOUT=good): the schema change, the data step alone, then the removal after an
EnsureBatchedComplete of it."""

from django.db import models


class Port(models.Model):
    mac_upper = models.CharField(max_length=17, null=True)
