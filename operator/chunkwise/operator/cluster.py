"""The operator's API calls besides kopf's own: its Jobs and its resources' status.

Made with the official ``kubernetes`` client, logged in by kopf
(``kopf.login_via_client``), so RBAC is exactly the operator's ServiceAccount's and a
rotated in-cluster token is re-read by the client. 429 and 5xx answers are retried by
the client's urllib3 pool (backoff, Retry-After); anything else becomes a
``kopf.TemporaryError`` so kopf retries the handler. Events go through ``kopf.event``
and owner references through ``kopf.append_owner_reference``, not through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import kopf
import kubernetes.client
from kubernetes.client.exceptions import ApiException
from urllib3.util.retry import Retry

from chunkwise.contract import API_GROUP, API_VERSION, PLURAL

__all__ = ["Cluster"]

_MERGE_PATCH = "application/merge-patch+json"


class Cluster:
    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self._batch = kubernetes.client.BatchV1Api(client)
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)

    @classmethod
    def from_configuration(cls, configuration: kubernetes.client.Configuration,
                           attempts: int) -> Cluster:
        configuration.retries = Retry(
            total=attempts - 1, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,  # POST too: creating a Job twice is a 409, never a duplicate
            respect_retry_after_header=True, raise_on_status=False)
        return cls(kubernetes.client.ApiClient(configuration))

    def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create the Job; False if it already existed (a restarted operator's retry)."""
        try:
            # the client takes a plain dict as well as its models
            self._batch.create_namespaced_job(job["metadata"]["namespace"], cast(Any, job))
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise _temporary("create Job", exc) from None
        return True

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self._batch.read_namespaced_job(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _temporary(f"get Job {namespace}/{name}", exc) from None
        return cast(dict[str, Any], self._batch.api_client.sanitize_for_serialization(found))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        try:
            found = self._core.list_namespaced_pod(namespace, label_selector=selector)
        except ApiException as exc:
            raise _temporary(f"list pods in {namespace}", exc) from None
        return self._items(found)

    def list_events(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Events in ``namespace`` matching a field selector (involvedObject.name, reason)."""
        try:
            found = self._core.list_namespaced_event(namespace, field_selector=selector)
        except ApiException as exc:
            raise _temporary(f"list events in {namespace}", exc) from None
        return self._items(found)

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its pods; a Job already gone is fine."""
        try:
            self._batch.delete_namespaced_job(name, namespace,
                                              propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise _temporary(f"delete Job {namespace}/{name}", exc) from None

    def _items(self, found: Any) -> list[dict[str, Any]]:
        """A list answer's items as plain dicts, as the API sends them."""
        plain = self._core.api_client.sanitize_for_serialization(found)
        return list(cast(dict[str, Any], plain).get("items") or [])

    def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        try:
            self._batch.patch_namespaced_job(name, namespace, dict(patch),
                                             _content_type=_MERGE_PATCH)
        except ApiException as exc:
            raise _temporary(f"patch Job {namespace}/{name}", exc) from None

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = cast(dict[str, Any], self._custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _temporary(f"get {namespace}/{name}", exc) from None
        return found

    def patch_migration(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        try:
            self._custom.patch_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name, dict(patch),
                _content_type=_MERGE_PATCH)
        except ApiException as exc:
            raise _temporary(f"patch {namespace}/{name}", exc) from None

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            self._custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status},
                _content_type=_MERGE_PATCH)
        except ApiException as exc:
            raise _temporary(f"patch status of {namespace}/{name}", exc) from None


def _temporary(what: str, exc: ApiException) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"{what}: HTTP {exc.status} {exc.reason}: "
                               f"{str(exc.body or '')[:500]}", delay=5)
