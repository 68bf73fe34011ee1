"""Mistakes a user can make in a BatchedRunPython that only the worker can see. Installed
only when LAB_MISTAKES is set (see labsite.settings), so `migrate` of the lab never
meets them."""

from django.db import models


class Visit(models.Model):
    #: not unique: many visits share an email, so it cannot be a keyset key
    email = models.CharField(max_length=100)
    counter = models.IntegerField(default=0)


class Shelf(models.Model):
    #: unique only together with ``row``: a keyset over ``room`` alone would repeat rows
    room = models.CharField(max_length=10)
    row = models.IntegerField()
    counter = models.IntegerField(default=0)

    class Meta:
        unique_together = [("room", "row")]
