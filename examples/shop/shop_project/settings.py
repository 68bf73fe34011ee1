"""Settings of the example shop. SQLite by default; PostgreSQL when PGDATABASE is set
(libpq's usual PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE variables); MariaDB or
MySQL when MYSQL_DATABASE is set (MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD,
and MYSQL_REPLICA_HOST/MYSQL_REPLICA_PORT for a replica read for replication lag)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["chunkwise.django", "shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("PGDATABASE"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["PGDATABASE"],
            "HOST": os.environ.get("PGHOST", ""),
            "PORT": os.environ.get("PGPORT", ""),
            "USER": os.environ.get("PGUSER", ""),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
        }
    }
elif os.environ.get("MYSQL_DATABASE"):
    try:
        import MySQLdb  # noqa: F401  (mysqlclient, Django's recommended driver)
    except ImportError:  # the image's: PyMySQL, pure Python, no compiler needed
        import pymysql

        pymysql.install_as_MySQLdb()
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ["MYSQL_DATABASE"],
            "HOST": os.environ.get("MYSQL_HOST", ""),
            "PORT": os.environ.get("MYSQL_PORT", ""),
            "USER": os.environ.get("MYSQL_USER", ""),
            "PASSWORD": os.environ.get("MYSQL_PASSWORD", ""),
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
    if os.environ.get("MYSQL_REPLICA_PORT"):
        DATABASES["replica"] = {**DATABASES["default"],
                                "HOST": os.environ.get("MYSQL_REPLICA_HOST", ""),
                                "PORT": os.environ["MYSQL_REPLICA_PORT"]}
        CHUNKWISE_REPLICAS = ["replica"]
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SHOP_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        }
    }
