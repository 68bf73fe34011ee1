"""Live retuning: a running worker takes new tunables from its DataMigration's spec.

The worker already patches its status every few seconds, and the API server answers each
patch with the whole resource, spec included: so the worker learns of a changed spec at
no extra call and with no extra RBAC. The batch loop asks between batches.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from chunkwise.engine import TUNABLES, spec_env

__all__ = ["LiveSpec"]

_TUNABLE_ENV = frozenset(t.env for t in TUNABLES)


class LiveSpec:
    def __init__(self, started_with: Mapping[str, str]) -> None:
        self._lock = threading.Lock()
        #: the tunables in force: what the pod started with (the Job's CHUNKWISE_* env)
        self._env = {k: v for k, v in started_with.items() if k in _TUNABLE_ENV}
        self._pending: tuple[int, dict[str, str]] | None = None

    def offer(self, resource: Mapping[str, Any]) -> None:
        """The resource from a status patch's answer; keeps its tunables if they differ."""
        spec = resource.get("spec")
        generation = (resource.get("metadata") or {}).get("generation")
        if not isinstance(spec, Mapping) or not isinstance(generation, int):
            return
        env = spec_env(spec)
        with self._lock:
            if env != self._env:
                self._pending = (generation, env)

    def take(self) -> tuple[int, dict[str, str]] | None:
        """New tunables (spec generation, CHUNKWISE_* values) once; None when unchanged."""
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None:
                self._env = pending[1]
            return pending
