"""An app whose name sorts before "chunkwise" and whose batched migration forgets to
depend on chunkwise's migrations (installed only with LAB_BILLING, see labsite.settings):
Django would run it before the checkpoint tables exist."""

from django.db import models


class Invoice(models.Model):
    counter = models.IntegerField(default=0)
