"""Work that several lab migrations run: add one to every row's counter."""

from typing import Any

from django.db.models import F, QuerySet


def bump(apps: Any, schema_editor: Any, batch: QuerySet[Any]) -> None:
    """Set-based."""
    batch.update(counter=F("counter") + 1)


def bump_row(row: Any) -> None:
    """Per row."""
    row.counter += 1
