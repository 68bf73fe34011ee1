"""kmock's Kubernetes emulator with resourceVersion, as the API server keeps it: every
write gives the object a new one, and a write that names one (a precondition, as in
``{"metadata": {"resourceVersion": "7"}, "status": {...}}``) is refused with 409
Conflict unless it is the object's current one. Use it in a module with
``pytestmark = pytest.mark.kmock(cls=VersionedEmulator)``."""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp.web
import attrs
from kmock._internal import enums, rendering
from kmock._internal.k8s import KubernetesEmulator, KubernetesError

__all__ = ["VersionedEmulator"]

_VERSIONS = itertools.count(1)


@attrs.frozen
class _Conflict(KubernetesError):
    status: int = 409
    reason: str = "Conflict"
    message: str = ("Operation cannot be fulfilled: the object has been modified; please "
                    "apply your changes to the latest version and try again")


class VersionedEmulator(KubernetesEmulator):
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        writes = (enums.action.CREATE, enums.action.UPDATE)
        if request.resource is not None and request.action in writes \
                and isinstance(request.data, dict):
            meta: dict[str, Any] = request.data.setdefault("metadata", {})
            if request.action == enums.action.UPDATE and request.name is not None:
                key = (request.resource, request.namespace, request.name)
                wanted = meta.get("resourceVersion")
                if wanted is not None and key in self._objects \
                        and not self._objects[key].deleted:
                    current = self._objects[key].get("metadata", {}).get("resourceVersion")
                    if str(wanted) != str(current):
                        return await self._render_error(_Conflict())
            meta["resourceVersion"] = str(next(_VERSIONS))
        return await super()._handle(request)
