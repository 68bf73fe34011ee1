"""kopf wiring: thin handlers that hand their inputs to :mod:`.reconcile`.

The handlers are synchronous (the ``kubernetes`` client blocks); kopf runs them in its
thread pool, and ``kopf.event`` is safe to call from there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf
import kubernetes.client

from chunkwise.contract import ANNOTATION_PREFIX, API_GROUP, API_VERSION, PLURAL, Label

from .cluster import Cluster
from .conditions import Event
from .reconcile import check_stall, job_changed, spec_changed, start_run
from .settings import ControllerSettings

SETTINGS = ControllerSettings.from_env()
_GVP = (API_GROUP, API_VERSION, PLURAL)


class _Connection:
    cluster: Cluster | None = None


_connection = _Connection()


def cluster() -> Cluster:
    if _connection.cluster is None:
        raise kopf.TemporaryError("not logged in to the API yet", delay=2)
    return _connection.cluster


def post(body: Mapping[str, Any], event: Event) -> None:
    kopf.event(cast(kopf.Body, body), type=event.type, reason=event.reason,
               message=event.message)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # handler progress in annotations keeps status for the user; kopf's own Events
    # about handlers are noise next to ours
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-spec")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own login for the official client: in-cluster first, then kubeconfig. Run
    again by kopf when the API answers 401, so our client follows re-logins too."""
    info = kopf.login_via_client(**kwargs)
    configuration = kubernetes.client.Configuration.get_default_copy()
    _connection.cluster = Cluster.from_configuration(configuration, SETTINGS.api_attempts)
    return info


@kopf.on.create(*_GVP)
def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    run = int((body.get("status") or {}).get("run") or 1)
    start_run(cluster(), post, body, patch, run)


@kopf.on.update(*_GVP, field="spec")
def updated(body: kopf.Body, old: Any, new: Any, patch: kopf.Patch, **_: Any) -> None:
    spec_changed(cluster(), post, body, old, new, patch)


@kopf.on.event("batch", "v1", "jobs", labels={Label.MANAGED_BY: Label.MANAGER})
def job_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        return
    job_changed(cluster(), post, body)


@kopf.timer(*_GVP, interval=SETTINGS.stall_check_interval,
            when=lambda status, **_: status.get("phase") == "Running")
def stall_timer(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    check_stall(post, body, patch)
