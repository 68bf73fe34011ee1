"""The worker's only Kubernetes call: a merge patch of its DataMigration's status.

Standard library only (the worker runs in the application's image). Credentials are
the pod's ServiceAccount token, as the kubelet projects it; the directory can be
moved with CHUNKWISE_SERVICEACCOUNT_DIR (the e2e test harness projects it elsewhere).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["StatusClient"]

_DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class StatusClient:
    def __init__(self, server: str, token_file: Path, ca_file: Path | None, namespace: str,
                 name: str, group: str = "chunkwise.dev", version: str = "v1alpha1") -> None:
        self._url = (f"{server.rstrip('/')}/apis/{group}/{version}/namespaces/{namespace}/"
                     f"datamigrations/{name}/status")
        self._token_file = token_file
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self.resource = f"{namespace}/{name}"

    @classmethod
    def from_environment(cls, env: dict[str, str] | None = None) -> StatusClient | None:
        """None unless run by the operator (CHUNKWISE_RESOURCE) inside a cluster."""
        env = dict(os.environ) if env is None else env
        resource = env.get("CHUNKWISE_RESOURCE", "")
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        sa_dir = Path(env.get("CHUNKWISE_SERVICEACCOUNT_DIR", _DEFAULT_SA_DIR))
        if "/" not in resource or not host or not (sa_dir / "token").exists():
            return None
        namespace, name = resource.split("/", 1)
        host = f"[{host}]" if ":" in host else host
        ca = sa_dir / "ca.crt"
        return cls(f"https://{host}:{port or 443}", sa_dir / "token",
                   ca if ca.exists() else None, namespace, name)

    def patch_status(self, status: dict[str, Any], timeout: float = 5.0) -> None:
        token = self._token_file.read_text().strip()  # re-read: projected tokens rotate
        request = urllib.request.Request(
            self._url, method="PATCH", data=json.dumps({"status": status}).encode(),
            headers={"Content-Type": "application/merge-patch+json",
                     "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=timeout, context=self._context):
            pass
