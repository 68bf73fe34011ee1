"""Benchmark settings: the throwaway PostgreSQL named by libpq's env variables."""

import os

SECRET_KEY = "bench-only"
USE_TZ = True
INSTALLED_APPS = ["chunkwise.django", "benchapp"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "chunkwise"),
    }
}
