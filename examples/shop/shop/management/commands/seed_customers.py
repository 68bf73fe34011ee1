"""manage.py seed_customers N: insert N customers fast (multi-row INSERTs in big
transactions), last logins spread over the past three years."""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections, transaction
from django.utils import timezone


class Command(BaseCommand):
    help = "Insert N example customers (ids continue after the highest existing id)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("count", type=int, help="customers to insert")
        parser.add_argument("--database", default="default")
        parser.add_argument("--chunk", type=int, default=10_000, help="rows per INSERT")

    def handle(self, *args: Any, **options: Any) -> None:
        count, chunk = options["count"], options["chunk"]
        if count < 0 or chunk < 1:
            raise CommandError("count: expected >= 0; --chunk: expected >= 1")
        connection = connections[options["database"]]
        from shop.models import Customer

        table = connection.ops.quote_name(Customer._meta.db_table)
        now = timezone.now()
        start_id = (Customer.objects.using(connection.alias).order_by("-id")
                    .values_list("id", flat=True).first() or 0) + 1
        if connection.vendor == "sqlite":
            chunk = min(chunk, 32_000 // 3)
        started = time.monotonic()
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            for offset in range(0, count, chunk):
                ids = range(start_id + offset, start_id + min(offset + chunk, count))
                rows = [(i, f"customer{i}@example.com",
                         now - timedelta(days=(i * 7919) % 1095, seconds=i % 86400))
                        for i in ids]
                placeholders = ", ".join(["(%s, %s, %s, 0)"] * len(rows))
                cursor.execute(
                    f"INSERT INTO {table} (id, email, last_login, visits) VALUES {placeholders}",
                    [value for row in rows for value in row],
                )
                done = offset + len(rows)
                if sys.stderr.isatty():
                    sys.stderr.write(f"\rseeded {done:,}/{count:,}")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT setval(pg_get_serial_sequence('{Customer._meta.db_table}',"
                               " 'id'), (SELECT max(id) FROM " + table + "))")
                cursor.execute(f"ANALYZE {table}")
        elapsed = time.monotonic() - started
        self.stdout.write(f"seeded {count:,} customers in {elapsed:.1f}s")
