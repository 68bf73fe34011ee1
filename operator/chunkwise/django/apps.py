from django.apps import AppConfig


class ChunkwiseConfig(AppConfig):
    name = "chunkwise.django"
    label = "chunkwise"
    verbose_name = "chunkwise batched data migrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  # registers the system checks (chunkwise.E001...)
