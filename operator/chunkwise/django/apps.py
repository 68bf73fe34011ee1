from django.apps import AppConfig
from django.db.models.signals import pre_migrate


class ChunkwiseConfig(AppConfig):
    name = "chunkwise.django"
    label = "chunkwise"
    verbose_name = "chunkwise batched data migrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  # registers the system checks (chunkwise.E001...)
        from .migrate_guard import refuse_unsafe_plans

        # sent once per app with models; chunkwise's own is enough to see the whole plan
        pre_migrate.connect(refuse_unsafe_plans, sender=self,
                            dispatch_uid="chunkwise.refuse_unsafe_plans")
