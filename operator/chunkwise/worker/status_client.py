"""The worker's only Kubernetes call: a merge patch of its DataMigration's status.

Standard library only, on purpose: the worker runs inside the application's own image,
and the official ``kubernetes`` client would add about 15 MB of dependencies
(google-auth, oauthlib, websocket-client, ...) to every Django image for one PATCH.
Credentials are the pod's ServiceAccount token as the kubelet projects it, re-read
before every call because projected tokens rotate.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chunkwise.contract import API_GROUP, API_VERSION, PLURAL, Env, ResourceRef

__all__ = ["StatusClient"]

#: where the kubelet projects the pod's ServiceAccount token and the cluster's CA
_SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class StatusClient:
    def __init__(self, server: str, token_file: Path, ca_file: Path | None,
                 resource: ResourceRef) -> None:
        self._url = (f"{server.rstrip('/')}/apis/{API_GROUP}/{API_VERSION}/namespaces/"
                     f"{resource.namespace}/{PLURAL}/{resource.name}/status")
        self._token_file = token_file
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self.resource = resource

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> StatusClient | None:
        """None unless run by the operator (CHUNKWISE_RESOURCE) inside a cluster."""
        env = os.environ if env is None else env
        resource = ResourceRef.parse(env.get(Env.RESOURCE))
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        sa_dir = _SA_DIR
        if resource is None or not host or not (sa_dir / "token").exists():
            return None
        host = f"[{host}]" if ":" in host else host
        ca = sa_dir / "ca.crt"
        return cls(f"https://{host}:{port or 443}", sa_dir / "token",
                   ca if ca.exists() else None, resource)

    def patch_status(self, status: Mapping[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Merge-patch the status; returns the resource as the API server now has it
        (spec included: how the worker learns of retuning, at no extra call)."""
        token = self._token_file.read_text().strip()
        request = urllib.request.Request(
            self._url, method="PATCH", data=json.dumps({"status": status}).encode(),
            headers={"Content-Type": "application/merge-patch+json",
                     "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=timeout, context=self._context) as answer:
            body = json.loads(answer.read() or b"{}")
        return body if isinstance(body, dict) else {}
