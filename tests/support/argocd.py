"""Runs the Argo CD health check (argocd/chunkwise.dev/DataMigration/health.lua) as Argo
CD does: the resource as the global ``obj``, under Lua 5.1 (Argo's gopher-lua is 5.1)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lupa import lua51

HEALTH_LUA = (Path(__file__).resolve().parents[2] / "argocd" / "chunkwise.dev" /
              "DataMigration" / "health.lua")
#: the statuses Argo CD knows
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def argo_health(resource: Mapping[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD would show them for ``resource``."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(dict(resource), recursive=True)
    result = runtime.execute(HEALTH_LUA.read_text())
    status, message = str(result["status"]), str(result["message"] or "")
    assert status in ARGO_STATUSES, status
    return status, message
