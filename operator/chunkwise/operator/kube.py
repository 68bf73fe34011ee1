"""A small async Kubernetes API client for what the operator writes: Jobs, its
resources' status, and Events. Built on aiohttp (kopf's own HTTP stack) with the
credentials kopf logged in with, so RBAC is exactly the operator's ServiceAccount's."""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from .settings import OperatorSettings

__all__ = ["Conflict", "KubeApi"]


class Conflict(Exception):
    """409: the object exists already (or changed under us)."""


class KubeApi:
    def __init__(self, server: str, session: aiohttp.ClientSession,
                 settings: OperatorSettings | None = None) -> None:
        self._server = server.rstrip("/")
        self._session = session
        self._settings = settings or OperatorSettings()

    @classmethod
    def from_connection_info(cls, info: kopf.ConnectionInfo,
                             settings: OperatorSettings | None = None) -> KubeApi:
        connector = aiohttp.TCPConnector(ssl=info.as_ssl_context()) \
            if info.server.startswith("https") else aiohttp.TCPConnector()
        session = aiohttp.ClientSession(connector=connector, headers=info.as_http_headers())
        return cls(info.server, session, settings)

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None,
                    content_type: str = "application/json") -> dict[str, Any] | None:
        async with self._session.request(
            method, self._server + path, json=body, headers={"Content-Type": content_type}
        ) as response:
            if response.status == 404 and method == "GET":
                return None
            if response.status == 409:
                raise Conflict(await response.text())
            if response.status >= 400:
                raise kopf.TemporaryError(
                    f"{method} {path}: HTTP {response.status}: {(await response.text())[:500]}",
                    delay=5)
            data: dict[str, Any] = await response.json()
            return data

    # -- paths --------------------------------------------------------------------------

    def _cr_path(self, namespace: str, name: str) -> str:
        s = self._settings
        return f"/apis/{s.group}/{s.version}/namespaces/{namespace}/{s.plural}/{name}"

    @staticmethod
    def _job_path(namespace: str, name: str = "") -> str:
        return f"/apis/batch/v1/namespaces/{namespace}/jobs" + (f"/{name}" if name else "")

    # -- calls --------------------------------------------------------------------------

    async def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create the Job; False if it already existed (a restarted operator's retry)."""
        try:
            await self._call("POST", self._job_path(job["metadata"]["namespace"]), job)
        except Conflict:
            return False
        return True

    async def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        await self._call("PATCH", self._job_path(namespace, name), patch,
                         "application/merge-patch+json")

    async def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call("GET", self._cr_path(namespace, name))

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._call("PATCH", self._cr_path(namespace, name) + "/status",
                         {"status": status}, "application/merge-patch+json")

    async def post_event(self, involved: Mapping[str, Any], type_: str, reason: str,
                         message: str) -> None:
        meta = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            # named like the kubelet names them (<object>.<hex>), so no generateName round trip
            "metadata": {"name": f"{meta['name']}.{time.time_ns():x}",
                         "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion",
                                           f"{self._settings.group}/{self._settings.version}"),
                "kind": involved.get("kind", "DataMigration"), "name": meta["name"],
                "namespace": meta["namespace"], "uid": meta.get("uid"),
            },
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "chunkwise-operator"},
            "reportingComponent": "chunkwise.dev/operator",
        }
        await self._call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)
