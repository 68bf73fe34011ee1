"""Benchmark settings: the throwaway PostgreSQL named by libpq's env variables, or with
BENCH_DATABASE=mariadb the throwaway MariaDB named by the MARIADB_* variables (what
tests/support/mariaserver.py's MariaDbServer.env() gives; bench/databases.py sets them)."""

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
if os.environ.get("BENCH_DATABASE") == "mariadb":
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": os.environ.get("MARIADB_DATABASE", "mysql"),
        "HOST": os.environ.get("MARIADB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("MARIADB_PORT", "3306"),
        "USER": os.environ.get("MARIADB_USER", "root"),
        "PASSWORD": "",
        "OPTIONS": {"charset": "utf8mb4"},
    }
