"""A throwaway Prometheus server, built from the upstream Go module once and cached
(tests/e2e/testenv/build-prometheus.sh says why not Debian's package).

Started on a free loopback port with the given config in a temporary directory, asked
through its HTTP API. The API is two JSON GETs, so this uses urllib rather than a client
library (the one on PyPI pulls in pandas and matplotlib's whole stack).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .pgserver import free_port

__all__ = ["PrometheusServer", "prometheus_binaries", "running_prometheus"]

BUILD = Path(__file__).resolve().parents[1] / "e2e" / "testenv" / "build-prometheus.sh"


def prometheus_binaries() -> Path:
    """The directory holding ``prometheus`` and ``promtool`` (instant when cached)."""
    result = subprocess.run(["bash", str(BUILD)], stdout=subprocess.PIPE, text=True, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class PrometheusServer:
    url: str
    directory: Path
    process: subprocess.Popen[bytes]

    def api(self, path: str, **params: str | float) -> Any:
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's series (each ``{"metric": {...}, "value": [t, "v"]}``)."""
        params: dict[str, str | float] = {"query": expr}
        if at is not None:
            params["time"] = at
        return list(self.api("query", **params)["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Any]:
        return list(self.api("query_range", query=expr, start=start, end=end,
                             step=step)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def log(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")


@contextlib.contextmanager
def running_prometheus(config: dict[str, Any], files: dict[str, str] | None = None
                       ) -> Iterator[PrometheusServer]:
    """Prometheus with ``config`` (prometheus.yml as a dict) and ``files`` beside it."""
    binary = prometheus_binaries() / "prometheus"
    directory = Path(tempfile.mkdtemp(prefix="chunkwise-prometheus-"))
    for name, text in (files or {}).items():
        (directory / name).write_text(text)
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with open(directory / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [str(binary), f"--config.file={directory / 'prometheus.yml'}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=directory)
    server = PrometheusServer(f"http://127.0.0.1:{port}", directory, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"prometheus exited: {server.log()}"
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"prometheus not ready: {server.log()}"
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(directory, ignore_errors=True)
