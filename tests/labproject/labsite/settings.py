"""Test settings: "default" is the throwaway PostgreSQL (libpq env vars), or with
LAB_DATABASE=mariadb the throwaway MariaDB (MARIADB_* env vars); "lite" is SQLite."""

import os
import warnings
from typing import Any

# chunkwise's own deprecated calls are errors in the lab's manage.py runs too, as in pytest
# (pyproject.toml's filterwarnings), on each Django of the matrix (noxfile.py)
for category in (DeprecationWarning, PendingDeprecationWarning):
    warnings.filterwarnings("error", category=category, module=r"chunkwise(\.|$)")

SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = ["chunkwise.django", "lab", "later",
                  # chunkwise's admin pages, as a project that has the admin sees them
                  # (tests/django/test_admin_*.py); the other tests migrate only the apps
                  # they name, so these tables exist only where a test makes them
                  "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                  "django.contrib.sessions", "django.contrib.messages",
                  "django.contrib.staticfiles"]
if os.environ.get("LAB_MISTAKES"):  # operations that only the worker can tell are wrong
    INSTALLED_APPS.append("mistakes")
if os.environ.get("LAB_BILLING"):  # a batched migration without chunkwise's (E006)
    INSTALLED_APPS.append("billing")
if os.environ.get("LAB_LAYOUT"):  # migration layouts: "bad" (E008, E009) or "good"
    INSTALLED_APPS.append({"bad": "network", "good": "inventory"}[os.environ["LAB_LAYOUT"]])
if os.environ.get("LAB_PORTING"):  # real migrations' shapes, ported (docs how-to)
    INSTALLED_APPS.append("porting")
if os.environ.get("LAB_SETTING_TYPO"):  # a misspelled setting (chunkwise.E007)
    CHUNKWISE_DEFFER = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "labsite.urls"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "static/"
# the lab keeps mistakes on purpose (lab 0005 is atomic, mistakes 0002 batches by a key
# that is not unique, mistakes 0003 ensures a migration that does not exist) to test how a
# run refuses them; the system checks that name them first would stop every command.
# LAB_CHECKS=1 lets them speak.
SILENCED_SYSTEM_CHECKS = [] if os.environ.get("LAB_CHECKS") else \
    ["chunkwise.E001", "chunkwise.E004", "chunkwise.E005"]
DATABASES: dict[str, dict[str, Any]] = {
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
# the throwaway MariaDB of tests/support/mariaserver.py (MariaDbServer.env sets these)
if os.environ.get("LAB_DATABASE") == "mariadb":
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": os.environ.get("MARIADB_DATABASE", "mysql"),
        "HOST": os.environ.get("MARIADB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("MARIADB_PORT", "3306"),
        "USER": os.environ.get("MARIADB_USER", "root"),
        "PASSWORD": "",
        "OPTIONS": {"charset": "utf8mb4"},
    }
    if os.environ.get("MARIADB_REPLICA_PORT"):  # a replica of it, read for replication lag
        DATABASES["replica"] = {**DATABASES["default"],
                                "PORT": os.environ["MARIADB_REPLICA_PORT"]}
        CHUNKWISE_REPLICAS = ["replica"]
if os.environ.get("LAB_OTHER_ENGINE"):  # a database chunkwise does not run on (E003)
    DATABASES["other"] = {"ENGINE": os.environ["LAB_OTHER_ENGINE"], "NAME": "other"}
