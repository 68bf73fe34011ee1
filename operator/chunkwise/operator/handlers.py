"""kopf wiring: thin handlers that hand their inputs to :mod:`.reconcile`."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from .jobs import LABEL_MANAGED_BY
from .kube import KubeApi
from .reconcile import check_stall, job_changed, spec_changed, start_run
from .settings import OperatorSettings

SETTINGS = OperatorSettings.from_env()
_GVP = (SETTINGS.group, SETTINGS.version, SETTINGS.plural)


class _ApiHolder:
    api: KubeApi | None = None


_holder = _ApiHolder()


def api() -> KubeApi:
    if _holder.api is None:
        raise kopf.TemporaryError("not logged in to the API yet", delay=2)
    return _holder.api


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # handler progress in annotations keeps status for the user; kopf's own Events
    # about handlers are noise next to ours
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="chunkwise.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="chunkwise.dev", key="last-handled-spec")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60


@kopf.on.login()
async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        if _holder.api is not None:
            await _holder.api.close()
        _holder.api = KubeApi.from_connection_info(info, SETTINGS)
    return info


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if _holder.api is not None:
        await _holder.api.close()


@kopf.on.create(*_GVP)
async def created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    run = int((body.get("status") or {}).get("run") or 1)
    await start_run(api(), body, patch, run)


@kopf.on.update(*_GVP, field="spec")
async def updated(body: kopf.Body, old: Any, new: Any, patch: kopf.Patch, **_: Any) -> None:
    await spec_changed(api(), body, old, new, patch)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: "chunkwise"})
async def job_event(body: kopf.Body, type: str | None, **_: Any) -> None:  # noqa: A002
    if type == "DELETED":
        return
    await job_changed(api(), body)


@kopf.timer(*_GVP, interval=SETTINGS.stall_check_interval,
            when=lambda status, **_: status.get("phase") == "Running")
async def stall_timer(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    await check_stall(api(), body, patch)
