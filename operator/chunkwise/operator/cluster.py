"""The operator's API calls besides kopf's own: its Jobs and its resources' status.

Made with the official ``kubernetes`` client, logged in by kopf
(``kopf.login_via_client``), so RBAC is exactly the operator's ServiceAccount's and a
rotated in-cluster token is re-read by the client. 429 and 5xx answers and dropped
connections are retried by the client's urllib3 pool (backoff, Retry-After); every call
has a timeout. An answer that retrying cannot fix (403, 422, ...) becomes
:class:`ApiRefused`, a ``kopf.PermanentError`` that names the refused verb and resource;
anything else, an unanswered call included, a ``kopf.TemporaryError`` with a 5 s delay,
so kopf retries the handler soon (its own delay for an unexpected error is 60 s).
Events go through ``kopf.event`` and owner references through
``kopf.append_owner_reference``, not through here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, cast

import kopf
import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from urllib3.util.retry import Retry

from chunkwise.contract import API_GROUP, API_VERSION, PLURAL

__all__ = ["REFUSED", "ApiRefused", "Cluster"]

_MERGE_PATCH = "application/merge-patch+json"


#: answers that retrying cannot fix, and the API server's reason for each: the request
#: is malformed (400), not allowed by the operator's RBAC (403), not a method of the
#: resource (405), or invalid (422: a schema, a CEL rule, a field that cannot change)
_PERMANENT = {400: "BadRequest", 403: "Forbidden", 405: "MethodNotAllowed", 422: "Invalid"}
#: the Progressing reasons an ApiRefused leaves on a DataMigration
REFUSED = frozenset(_PERMANENT.values())


class ApiRefused(kopf.PermanentError):
    """The API server refused a call for a reason retrying cannot fix: kopf stops
    retrying the handler, and ``reason``/``message`` say what was refused, and for a 403,
    the RBAC rule the operator's ServiceAccount lacks."""

    def __init__(self, verb: str, plural: str, group: str, namespace: str, name: str,
                 exc: ApiException) -> None:
        self.reason = _PERMANENT[int(exc.status)]
        resource = f"{plural}.{group}" if group else plural
        target = f"{resource} {namespace}/{name}" if name else f"{resource} in {namespace}"
        said = _api_message(exc)
        if exc.status == 403:
            rule = (f"{{apiGroups: [\"{group}\"], resources: [\"{plural}\"], "
                    f"verbs: [\"{verb}\"]}}")
            said = f"the operator's ServiceAccount lacks the RBAC rule {rule}; {said}"
        self.message = (f"the API server refused to {verb} {target} (HTTP {exc.status} "
                        f"{self.reason}): {said}. Retrying cannot fix this: the operator "
                        "tries again when the DataMigration's spec changes")
        super().__init__(self.message)


def _api_message(exc: ApiException) -> str:
    """The message of the API server's Status answer, else its first 500 characters."""
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.body or exc.reason or "")[:500]


class Cluster:
    def __init__(self, client: kubernetes.client.ApiClient, timeout: float = 30.0) -> None:
        self._batch = kubernetes.client.BatchV1Api(client)
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)
        #: the client's (connect, read) timeout, passed with every call
        self._timeout = (min(5.0, timeout), timeout)

    @classmethod
    def from_configuration(cls, configuration: kubernetes.client.Configuration,
                           attempts: int, timeout: float = 30.0) -> Cluster:
        configuration.retries = Retry(
            total=attempts - 1, backoff_factor=0.5, status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,  # POST too: creating a Job twice is a 409, never a duplicate
            respect_retry_after_header=True, raise_on_status=False)
        return cls(kubernetes.client.ApiClient(configuration), timeout)

    def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create the Job; False if it already existed (a restarted operator's retry)."""
        namespace = job["metadata"]["namespace"]
        with _call("create", "jobs", "batch", namespace, job["metadata"].get("name", ""),
                   passing={409}) as answer:
            # the client takes a plain dict as well as its models
            self._batch.create_namespaced_job(namespace, cast(Any, job),
                                              _request_timeout=self._timeout)
        return answer.status is None

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        with _call("get", "jobs", "batch", namespace, name, passing={404}) as answer:
            found = self._batch.read_namespaced_job(name, namespace,
                                                    _request_timeout=self._timeout)
        if answer.status == 404:
            return None
        return cast(dict[str, Any], self._batch.api_client.sanitize_for_serialization(found))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        with _call("list", "pods", "", namespace, ""):
            found = self._core.list_namespaced_pod(namespace, label_selector=selector,
                                                   _request_timeout=self._timeout)
        return self._items(found)

    def list_events(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Events in ``namespace`` matching a field selector (involvedObject.name, reason)."""
        with _call("list", "events", "", namespace, ""):
            found = self._core.list_namespaced_event(namespace, field_selector=selector,
                                                     _request_timeout=self._timeout)
        return self._items(found)

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its pods; a Job already gone is fine."""
        with _call("delete", "jobs", "batch", namespace, name, passing={404}):
            self._batch.delete_namespaced_job(name, namespace,
                                              propagation_policy="Background",
                                              _request_timeout=self._timeout)

    def _items(self, found: Any) -> list[dict[str, Any]]:
        """A list answer's items as plain dicts, as the API sends them."""
        plain = self._core.api_client.sanitize_for_serialization(found)
        return list(cast(dict[str, Any], plain).get("items") or [])

    def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        with _call("patch", "jobs", "batch", namespace, name):
            self._batch.patch_namespaced_job(name, namespace, dict(patch),
                                             _content_type=_MERGE_PATCH,
                                             _request_timeout=self._timeout)

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        with _call("get", PLURAL, API_GROUP, namespace, name, passing={404}) as answer:
            found = cast(dict[str, Any], self._custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name,
                _request_timeout=self._timeout))
        return None if answer.status == 404 else found

    def patch_migration(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        with _call("patch", PLURAL, API_GROUP, namespace, name):
            self._custom.patch_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name, dict(patch),
                _content_type=_MERGE_PATCH, _request_timeout=self._timeout)

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        with _call("patch", f"{PLURAL}/status", API_GROUP, namespace, name):
            self._custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status},
                _content_type=_MERGE_PATCH, _request_timeout=self._timeout)


class _Answer:
    """What a :func:`_call` ended with: ``status`` is a passing error's HTTP status, or
    None when the call succeeded."""

    status: int | None = None


@contextlib.contextmanager
def _call(verb: str, plural: str, group: str, namespace: str, name: str,
          passing: frozenset[int] | set[int] = frozenset()) -> Iterator[_Answer]:
    """One API call: an error status in ``passing`` is an answer, not an error (a 404 on
    a get, a 409 on a create); any other becomes ApiRefused or kopf.TemporaryError."""
    answer = _Answer()
    try:
        yield answer
    except ApiException as exc:
        if exc.status in passing:
            answer.status = int(exc.status)
            return
        raise _failed(verb, plural, group, namespace, name, exc) from None
    except urllib3.exceptions.HTTPError as error:  # dropped, refused, timed out: no answer
        what = f"{plural}.{group}" if group else plural
        raise kopf.TemporaryError(f"{verb} {what} {namespace}/{name}: the API server did "
                                  f"not answer ({error}); retrying in 5 s", delay=5) from None


#: 403s that are not RBAC's: a quota frees up, a terminating namespace goes away
_PASSING_FORBIDDEN = ("exceeded quota", "is being terminated")


def _failed(verb: str, plural: str, group: str, namespace: str, name: str,
            exc: ApiException) -> kopf.PermanentError | kopf.TemporaryError:
    passing = exc.status == 403 and any(text in _api_message(exc)
                                        for text in _PASSING_FORBIDDEN)
    if exc.status in _PERMANENT and not passing:
        return ApiRefused(verb, plural, group, namespace, name, exc)
    what = f"{plural}.{group}" if group else plural
    return kopf.TemporaryError(f"{verb} {what} {namespace}/{name}: HTTP {exc.status} "
                               f"{exc.reason}: {_api_message(exc)}", delay=5)
