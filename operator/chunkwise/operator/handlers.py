"""kopf wiring: thin handlers that hand their inputs to :mod:`.reconcile`.

The handlers are synchronous (the ``kubernetes`` client blocks); kopf runs them in its
thread pool, and ``kopf.event`` is safe to call from there. The one exception is the
metrics endpoint: it is served from kopf's event loop, the thread that also updates the
index it reads, so a scrape never sees an index halfway through a change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import kopf
import kubernetes.client
from aiohttp import web
from kubernetes.config import incluster_config
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from chunkwise.contract import (
    ANNOTATION_PREFIX,
    API_GROUP,
    API_VERSION,
    PLURAL,
    Label,
    Phase,
    throttle_of,
)
from chunkwise.metrics import MigrationCollector, MigrationView

from .cluster import ApiRefused, Cluster
from .conditions import Event
from .reconcile import (
    announce_retune,
    announce_throttle,
    check_pods,
    check_stall,
    decided,
    job_changed,
    job_deleted,
    migration_of_job,
    refused_create,
    resync,
    say_refused,
    spec_changed,
    start_run,
    sum_progress,
    write_status,
)
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


@contextmanager
def said_if_refused(body: Mapping[str, Any] | None) -> Iterator[None]:
    """A call the API server refused for good (403, 422, ...) is said on the
    DataMigration, then raised on as the kopf.PermanentError it is: kopf stops retrying
    it, where a TemporaryError would retry it every 5 s for ever."""
    try:
        yield
    except ApiRefused as refusal:
        if body is not None:
            say_refused(cluster(), post, body, refusal)
        raise


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


MigrationIndex = kopf.Index[tuple[str, str], dict[str, Any]]


@kopf.index(*_GVP)
def migrations(namespace: str | None, name: str, status: kopf.Status,
               **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Every DataMigration's phase, progress and throttle, kept by kopf from its watch stream: what
    the metrics are computed from at scrape time. kopf drops a deleted one's entry."""
    return {(namespace or "", name): {"phase": status.get("phase"),
                                       "progress": dict(status.get("progress") or {}),
                                       "throttle": throttle_of(status)}}


def _views(index: MigrationIndex) -> Iterator[MigrationView]:
    for (namespace, name), store in index.items():
        for status in store:
            yield namespace, name, status


@kopf.on.startup()
async def serve_metrics(memo: kopf.Memo, **kwargs: Any) -> None:
    """``/metrics`` at ``--metrics`` (host:port; '' serves none). kopf passes the index as
    the ``migrations`` keyword (an index's name is its function's)."""
    index: MigrationIndex = kwargs["migrations"]
    address = str(memo.get("metrics_address") or "")
    if not address:
        return
    host, _sep, port = address.rpartition(":")
    registry = CollectorRegistry()
    registry.register(MigrationCollector(lambda: _views(index)))
    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(registry))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    memo["metrics_runner"] = runner


@kopf.on.cleanup()
async def stop_metrics(memo: kopf.Memo, **_: Any) -> None:
    runner = memo.get("metrics_runner")
    if isinstance(runner, web.AppRunner):
        await runner.cleanup()


@kopf.on.login()
def login(logger: kopf.Logger, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own login for the official client: in-cluster first, then kubeconfig. Run
    again by kopf when the API answers 401, so our client follows re-logins too. Says
    which way it went at INFO (kopf says it at DEBUG only): the first thing to check when
    the operator is refused."""
    info = kopf.login_via_client(logger=logger, **kwargs)
    configuration = kubernetes.client.Configuration.get_default_copy()
    if info is not None:
        # the in-cluster loader sets the projected token's CA, never a kubeconfig's
        in_cluster = configuration.ssl_ca_cert == incluster_config.SERVICE_CERT_FILENAME
        logger.info(f"logged in to {info.server} "
                    + ("with in-cluster configuration (the pod's ServiceAccount token)"
                       if in_cluster else "with a kubeconfig file"))
    _connection.cluster = Cluster.from_configuration(configuration, SETTINGS.api_attempts,
                                                     SETTINGS.api_timeout)
    return info


# The handlers write the status themselves (reconcile.write_status: with a precondition,
# never out of an ended phase), not through kopf's patch, which has neither.

@kopf.on.create(*_GVP)
def created(body: kopf.Body, **_: Any) -> None:
    run = int((body.get("status") or {}).get("run") or 1)
    wanted: dict[str, Any] = {}
    with said_if_refused(body):
        start_run(cluster(), post, body, wanted, run)
        write_status(cluster(), post, body, decided(body, wanted.get("status")))


@kopf.on.update(*_GVP, field="spec")
def updated(body: kopf.Body, old: Any, new: Any, **_: Any) -> None:
    wanted: dict[str, Any] = {}
    with said_if_refused(body):
        spec_changed(cluster(), post, body, old, new, wanted)
        write_status(cluster(), post, body, decided(body, wanted.get("status")))


@kopf.on.event(*_GVP)
def migration_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Every change of a DataMigration, status included (kopf's change handlers see only
    the spec): a worker that applied new tunables, or that waits on the database's
    health, is announced here, and a sharded run's progress summed from its shards."""
    if type == "MODIFIED":
        with said_if_refused(body):
            announce_retune(cluster(), post, body)
            announce_throttle(cluster(), post, body)
            sum_progress(cluster(), post, body, memo)


@kopf.on.event("batch", "v1", "jobs", labels={Label.MANAGED_BY: Label.MANAGER})
def job_event(body: kopf.Body, type: str | None, **_: Any) -> None:
    try:
        if type == "DELETED":
            job_deleted(cluster(), post, body)
            return
        job_changed(cluster(), post, body)
    except ApiRefused as refusal:
        migration = migration_of_job(cluster(), body)
        if migration is not None:
            say_refused(cluster(), post, migration, refusal)
        raise


@kopf.timer(*_GVP, interval=SETTINGS.stall_check_interval,
            when=lambda status, **_: refused_create(status) or (
                bool(status.get("run")) and status.get("phase") not in Phase.ENDED))
def resync_timer(body: kopf.Body, **_: Any) -> None:
    """Level-triggered: every DataMigration that has not ended is converged from a fresh
    read of its Job, at the operator's start (a timer's first tick is at once) and every
    interval, so a missed or failed Job event is made up for within one interval; a
    refused create is tried again. kopf retries a timer that failed, as it never retries
    an event handler."""
    with said_if_refused(body):
        resync(cluster(), post, body)


@kopf.timer(*_GVP, interval=SETTINGS.stall_check_interval,
            when=lambda status, **_: status.get("phase") == Phase.RUNNING)
def stall_timer(body: kopf.Body, **_: Any) -> None:
    with said_if_refused(body):
        check_stall(cluster(), post, body)


@kopf.timer(*_GVP, interval=SETTINGS.stall_check_interval,
            when=lambda status, **_: status.get("phase") in Phase.ACTIVE)
def pods_timer(body: kopf.Body, **_: Any) -> None:
    with said_if_refused(body):
        check_pods(cluster(), post, body)
