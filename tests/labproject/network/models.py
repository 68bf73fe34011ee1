"""Migration layouts that lose data when migrate defers the data step or is run again
after a crash (installed only with LAB_LAYOUT=bad, see labsite.settings)."""

from django.db import models


class Device(models.Model):
    """All in one migration: AddField, the data step, RemoveField (chunkwise.E008)."""

    mac = models.CharField(max_length=17, null=True)


class Port(models.Model):
    """Split in three, but the RemoveField does not wait for the data step (E009)."""

    mac_upper = models.CharField(max_length=17, null=True)
