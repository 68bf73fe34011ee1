"""The operator's API calls besides kopf's own: its Jobs and its resources' status.

Made with the official ``kubernetes`` client, logged in by kopf
(``kopf.login_via_client``), so RBAC is exactly the operator's ServiceAccount's and a
rotated in-cluster token is re-read by the client. Every call ends within its timeout,
retries included: 429 and 5xx answers and dropped or refused connections are retried
(backoff, Retry-After) while the call has time left. An answer that retrying cannot fix
(403, 422, ...) becomes
:class:`ApiRefused`, a ``kopf.PermanentError`` that names the refused verb and resource;
anything else, an unanswered call included, a ``kopf.TemporaryError`` with a 5 s delay,
so kopf retries the handler soon (its own delay for an unexpected error is 60 s).
Events go through ``kopf.event`` and owner references through
``kopf.append_owner_reference``, not through here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf
import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from chunkwise.contract import API_GROUP, API_VERSION, PLURAL

__all__ = ["REFUSED", "ApiRefused", "Cluster"]

_MERGE_PATCH = "application/merge-patch+json"


#: answers that retrying cannot fix, and the API server's reason for each: the request
#: is malformed (400), not allowed by the operator's RBAC (403), not a method of the
#: resource (405), or invalid (422: a schema, a CEL rule, a field that cannot change)
_PERMANENT = {400: "BadRequest", 403: "Forbidden", 405: "MethodNotAllowed", 422: "Invalid"}
#: the Progressing reasons an ApiRefused leaves on a DataMigration
REFUSED = frozenset(_PERMANENT.values())
#: how the API server's RBAC authorizer says no ("... cannot create resource "jobs" in
#: API group "batch" ..."); an admission webhook's 403 says something else
_RBAC_DENIAL = re.compile(r"cannot [a-z]+ resource ")


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
        if exc.status == 403 and _RBAC_DENIAL.search(said):  # not a webhook's, say
            rule = (f"{{apiGroups: [\"{group}\"], resources: [\"{plural}\"], "
                    f"verbs: [\"{verb}\"]}}")
            said = f"the operator's ServiceAccount lacks the RBAC rule {rule}; {said}"
        self.message = (f"the API server refused to {verb} {target} (HTTP {exc.status} "
                        f"{self.reason}): {said}. Retrying at once cannot fix this: the "
                        "operator tries again when the DataMigration's spec changes, and a "
                        "refused create or check at its next check")
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
    """The operator's calls. Each call, its retries included, ends within ``timeout``
    seconds: an attempt waits for its answer only as long as the call has left (at most
    5 s to connect), and a retry (of a 429 or 5xx answer, or a dropped or refused
    connection, up to ``attempts`` tries, with backoff or the answer's Retry-After) is
    made only if its wait still fits in that time."""

    def __init__(self, client: kubernetes.client.ApiClient, timeout: float = 30.0,
                 attempts: int = 1) -> None:
        self._batch = kubernetes.client.BatchV1Api(client)
        self._core = kubernetes.client.CoreV1Api(client)
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._timeout, self._attempts = timeout, attempts

    @classmethod
    def from_configuration(cls, configuration: kubernetes.client.Configuration,
                           attempts: int, timeout: float = 30.0) -> Cluster:
        # the retries are the Cluster's own, within each call's time; urllib3's would
        # give every attempt a fresh timeout (5 attempts of 30 s, plus backoff)
        configuration.retries = False
        return cls(kubernetes.client.ApiClient(configuration), timeout, attempts)

    def create_job(self, job: Mapping[str, Any]) -> bool:
        """Create the Job; False if it already existed (a restarted operator's retry)."""
        namespace = job["metadata"]["namespace"]
        # the client takes a plain dict as well as its models
        _found, status = self._call(
            _What("create", "jobs", "batch", namespace, job["metadata"].get("name", "")),
            lambda timeout: self._batch.create_namespaced_job(
                namespace, cast(Any, job), _request_timeout=timeout), passing={409})
        return status is None

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        found, status = self._call(
            _What("get", "jobs", "batch", namespace, name),
            lambda timeout: self._batch.read_namespaced_job(name, namespace,
                                                            _request_timeout=timeout),
            passing={404})
        if status == 404:
            return None
        return cast(dict[str, Any], self._batch.api_client.sanitize_for_serialization(found))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        found, _status = self._call(
            _What("list", "pods", "", namespace, ""),
            lambda timeout: self._core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=timeout))
        return self._items(found)

    def list_events(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Events in ``namespace`` matching a field selector (involvedObject.name, reason)."""
        found, _status = self._call(
            _What("list", "events", "", namespace, ""),
            lambda timeout: self._core.list_namespaced_event(
                namespace, field_selector=selector, _request_timeout=timeout))
        return self._items(found)

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its pods; a Job already gone is fine."""
        self._call(_What("delete", "jobs", "batch", namespace, name),
                   lambda timeout: self._batch.delete_namespaced_job(
                       name, namespace, propagation_policy="Background",
                       _request_timeout=timeout), passing={404})

    def _items(self, found: Any) -> list[dict[str, Any]]:
        """A list answer's items as plain dicts, as the API sends them."""
        plain = self._core.api_client.sanitize_for_serialization(found)
        return list(cast(dict[str, Any], plain).get("items") or [])

    def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._call(_What("patch", "jobs", "batch", namespace, name),
                   lambda timeout: self._batch.patch_namespaced_job(
                       name, namespace, dict(patch), _content_type=_MERGE_PATCH,
                       _request_timeout=timeout))

    def get_migration(self, namespace: str, name: str) -> dict[str, Any] | None:
        found, status = self._call(
            _What("get", PLURAL, API_GROUP, namespace, name),
            lambda timeout: self._custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name, _request_timeout=timeout),
            passing={404})
        return None if status == 404 else cast(dict[str, Any], found)

    def patch_migration(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        self._call(_What("patch", PLURAL, API_GROUP, namespace, name),
                   lambda timeout: self._custom.patch_namespaced_custom_object(
                       API_GROUP, API_VERSION, namespace, PLURAL, name, dict(patch),
                       _content_type=_MERGE_PATCH, _request_timeout=timeout))

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any],
                     resource_version: str | None = None) -> bool:
        """Merge-patch the status; with ``resource_version``, only if the resource is
        still at that version (the API server's precondition): False when it moved on
        (409 Conflict), for the caller to read it again and decide afresh."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        _done, conflict = self._call(
            _What("patch", f"{PLURAL}/status", API_GROUP, namespace, name),
            lambda timeout: self._custom.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, namespace, PLURAL, name, body,
                _content_type=_MERGE_PATCH, _request_timeout=timeout),
            passing={409} if resource_version is not None else frozenset())
        return conflict is None

    def _call(self, what: _What, send: Callable[[tuple[float, float]], Any],
              passing: frozenset[int] | set[int] = frozenset()) -> tuple[Any, int | None]:
        """One API call, retried within its time: (the answer, None), or (None, the HTTP
        status) for an error status in ``passing`` (a 404 on a get, a 409 on a create);
        any other failure raises ApiRefused or kopf.TemporaryError."""
        deadline = time.monotonic() + self._timeout
        for attempt in range(1, self._attempts + 1):
            left = deadline - time.monotonic()
            try:
                return send((min(_CONNECT_TIMEOUT, left), left)), None
            except ApiException as exc:
                if exc.status in passing:
                    return None, int(exc.status)
                if exc.status not in _RETRIED:
                    raise _failed(what, exc) from None
                wait = _retry_after(exc)
                error = _temporary(what, exc)
            except urllib3.exceptions.HTTPError as unanswered:  # dropped, refused, timed out
                wait = None
                error = kopf.TemporaryError(f"{what}: the API server did not answer "
                                            f"({unanswered}); retrying in 5 s", delay=5)
            pause = _BACKOFF * 2 ** (attempt - 1) if wait is None else wait
            if attempt == self._attempts or time.monotonic() + pause >= deadline:
                if wait is not None and wait > (error.delay or 0):  # the server asked
                    error = kopf.TemporaryError(str(error), delay=wait)
                raise error from None
            time.sleep(pause)
        raise AssertionError("unreachable: the last attempt returns or raises")


#: HTTP answers worth another try within the call: too many requests, the server's errors
_RETRIED = frozenset({429, 500, 502, 503, 504})
#: the first retry's pause (s); it doubles with each
_BACKOFF = 0.5
#: the longest an attempt waits to connect (s), within the call's time
_CONNECT_TIMEOUT = 5.0


def _retry_after(exc: ApiException) -> float | None:
    """The answer's Retry-After, in seconds (the API server sends whole seconds)."""
    value = (exc.headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class _What:
    """The call, as errors name it: ``create jobs.batch shop/customer-status-run1``."""

    verb: str
    plural: str
    group: str
    namespace: str
    name: str

    def __str__(self) -> str:
        resource = f"{self.plural}.{self.group}" if self.group else self.plural
        return f"{self.verb} {resource} {self.namespace}/{self.name}"


#: 403s that are not RBAC's: a quota frees up, a terminating namespace goes away
_PASSING_FORBIDDEN = ("exceeded quota", "is being terminated")


def _failed(what: _What, exc: ApiException) -> kopf.PermanentError | kopf.TemporaryError:
    passing = exc.status == 403 and any(text in _api_message(exc)
                                        for text in _PASSING_FORBIDDEN)
    if exc.status in _PERMANENT and not passing:
        return ApiRefused(what.verb, what.plural, what.group, what.namespace, what.name, exc)
    return _temporary(what, exc)


def _temporary(what: _What, exc: ApiException) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"{what}: HTTP {exc.status} {exc.reason}: "
                               f"{_api_message(exc)}", delay=5)
