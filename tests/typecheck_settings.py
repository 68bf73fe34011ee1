"""Minimal Django settings for mypy's django-stubs plugin only; never used at run time."""

SECRET_KEY = "typecheck-only"
INSTALLED_APPS = ["chunkwise.django", "django.contrib.admin", "django.contrib.auth",
                  "django.contrib.contenttypes"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
