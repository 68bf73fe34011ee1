"""Live retuning: a running worker takes new tunables from its DataMigration's spec.

The worker already patches its status every few seconds, and the API server answers each
patch with the whole resource, spec included: so the worker learns of a changed spec at
no extra call and with no extra RBAC. The batch loop asks between batches.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from chunkwise.contract import WORKER_CONTAINER
from chunkwise.engine import TUNABLES, spec_env

__all__ = ["LiveSpec", "pod_tunables"]

_TUNABLE_ENV = frozenset(t.env for t in TUNABLES)


def pod_tunables(spec: Mapping[str, Any]) -> dict[str, str]:
    """The CHUNKWISE_* tunables a pod started from ``spec`` has: the spec's, then the
    template's ``worker`` container env on top (the operator puts that env after its own,
    so a user may override a tunable on purpose). Complete: a tunable missing here is
    the operation's own or the default, which is what removing it from the spec means."""
    env = spec_env(spec)
    template = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    for container in template:
        if isinstance(container, Mapping) and container.get("name") == WORKER_CONTAINER:
            env.update({e["name"]: str(e["value"]) for e in container.get("env") or []
                        if isinstance(e, Mapping) and e.get("name") in _TUNABLE_ENV
                        and e.get("value") is not None})
    return env


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
        env = pod_tunables(spec)
        with self._lock:
            if env != self._env:
                self._pending = (generation, env)

    def take(self) -> tuple[int, dict[str, str]] | None:
        """New tunables (spec generation, CHUNKWISE_* values) once; None when unchanged.
        The values are all the tunables the spec sets now, not a change to merge."""
        with self._lock:
            pending, self._pending = self._pending, None
            if pending is not None:
                self._env = pending[1]
            return pending
