from django.apps import AppConfig


class ChunkwiseConfig(AppConfig):
    name = "chunkwise.django"
    label = "chunkwise"
    verbose_name = "chunkwise batched data migrations"
    default_auto_field = "django.db.models.BigAutoField"
