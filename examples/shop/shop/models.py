from django.db import models


class Customer(models.Model):
    email = models.EmailField(unique=True)
    last_login = models.DateTimeField(null=True)
    #: null until the data migration has classified the customer
    status = models.CharField(max_length=10, null=True)
    #: bumped by the per-row example; shows every row was changed exactly once
    visits = models.IntegerField(default=0)

    class Meta:
        # from release 0004 on (after 0002 classified every customer)
        constraints = [models.CheckConstraint(condition=models.Q(status__isnull=False),
                                              name="shop_customer_status_set")]

    def __str__(self) -> str:
        return self.email
