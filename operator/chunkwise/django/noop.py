"""Code that does nothing: ``RunPython.noop``, which upstream data migrations give as
their reverse, and chunkwise's own with a batched signature."""

from __future__ import annotations

from typing import Any

from django.db.migrations import RunPython

__all__ = ["batched_noop", "is_noop"]


def batched_noop(apps: Any, schema_editor: Any, batch: Any) -> None:
    """``BatchedRunPython.noop``: as ``reverse``, migrating backwards runs no batch."""
    return None


def is_noop(code: object) -> bool:
    return code is RunPython.noop or code is batched_noop
