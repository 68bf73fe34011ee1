from django.db import models


class Customer(models.Model):
    email = models.CharField(max_length=254)
    last_login = models.DateTimeField(null=True)
    status = models.CharField(max_length=10, null=True)
    touched = models.IntegerField(default=0)  # what the simulated application writes
