"""Keys of any orderable type, stored as text in the checkpoint and read back typed."""

from __future__ import annotations

from typing import Any

from django.db.models import Field

__all__ = ["Key", "KeyCodec"]

Key = Any


class KeyCodec:
    """Keys are stored as text and read back through the key field, so any type round-trips."""

    def __init__(self, field: Field[Any, Any]) -> None:
        self._field = field

    def dump(self, key: Key | None) -> str | None:
        return None if key is None else str(key)

    def load(self, text: str | None) -> Key | None:
        return None if text is None else self._field.to_python(text)
