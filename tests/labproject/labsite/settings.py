"""Test settings: "default" is the throwaway PostgreSQL (libpq env vars), "lite" SQLite."""

import os

SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["chunkwise.django", "lab", "later"]
if os.environ.get("LAB_MISTAKES"):  # operations that only the worker can tell are wrong
    INSTALLED_APPS.append("mistakes")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "postgres"),
        "HOST": os.environ.get("PGHOST", "127.0.0.1"),
        "PORT": os.environ.get("PGPORT", "5432"),
        "USER": os.environ.get("PGUSER", "chunkwise"),
    },
    "lite": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("LAB_SQLITE_PATH", "/tmp/chunkwise-lab.sqlite3"),
    },
}
