"""Toxiproxy between a client and the API server: its connections cut, reset and slowed
for real (TCP, the TLS inside untouched), as a network or an overloaded API server does.

``build-toxiproxy.sh`` builds ``toxiproxy-server`` (cached); it is started here on a free
loopback port and driven through its HTTP JSON API with urllib (PyPI's client,
toxiproxy-python, has had no release since 2019; the API is a few calls). A proxy
listens where pods reach it (the node's address: the API server's serving certificate
names it) and forwards to the API server; what a test does to a proxy:

- ``disable()``: its listener closes and its connections drop: every new connection is
  refused, as from an API server that is down, until ``enable()``;
- a toxic (``add_toxic``): ``reset_peer`` (each connection reset: "connection reset by
  peer"), ``timeout`` (data stops; the connection closed after ``timeout`` ms, or held
  open while it is 0), ``latency`` (each chunk of data delayed ``latency`` ms, give or take
  ``jitter``), until ``remove_toxic``.

Toxics act on the connections already open too, not only on new ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.pgserver import free_port

from .cluster import Cluster

HERE = Path(__file__).resolve().parent

__all__ = ["Proxy", "Toxiproxy", "build_toxiproxy", "running_toxiproxy"]


def build_toxiproxy() -> Path:
    """build-toxiproxy.sh's bin directory (instant with a warm cache)."""
    result = subprocess.run(["bash", str(HERE / "build-toxiproxy.sh")], stdout=subprocess.PIPE,
                            text=True, check=True)
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class Toxiproxy:
    api: str  # http://127.0.0.1:PORT

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                text = answer.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"toxiproxy {method} {path}: {error.code} "
                               f"{error.read()[:300]!r}") from None
        return json.loads(text) if text.strip() else None

    def proxy(self, name: str, listen: str, upstream: str) -> Proxy:
        """A new proxy from ``listen`` (host:port; port 0 picks a free one) to ``upstream``."""
        made = self.call("POST", "/proxies", {"name": name, "listen": listen,
                                              "upstream": upstream, "enabled": True})
        return Proxy(self, name, str(made["listen"]))

    def answers(self) -> bool:
        try:  # /version answers plain text
            with urllib.request.urlopen(f"{self.api}/version", timeout=2):
                return True
        except OSError:
            return False


@dataclass
class Proxy:
    toxiproxy: Toxiproxy
    name: str
    listen: str  # host:port, as toxiproxy bound it

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def disable(self) -> None:
        """Refuse every connection, and drop the open ones."""
        self.toxiproxy.call("POST", f"/proxies/{self.name}", {"enabled": False})

    def enable(self) -> None:
        self.toxiproxy.call("POST", f"/proxies/{self.name}", {"enabled": True})

    def add_toxic(self, kind: str, stream: str = "downstream", toxicity: float = 1.0,
                  **attributes: int) -> str:
        """A toxic of type ``kind`` on ``stream`` (downstream: the API server's answers;
        upstream: the client's requests); its name, for ``remove_toxic``."""
        name = f"{kind}_{stream}"
        self.toxiproxy.call("POST", f"/proxies/{self.name}/toxics", {
            "name": name, "type": kind, "stream": stream, "toxicity": toxicity,
            "attributes": attributes})
        return name

    def remove_toxic(self, name: str) -> None:
        self.toxiproxy.call("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def heal(self) -> None:
        """Enabled, with no toxic."""
        self.enable()
        for toxic in self.toxiproxy.call("GET", f"/proxies/{self.name}/toxics") or []:
            self.remove_toxic(toxic["name"])

    @contextlib.contextmanager
    def refused(self) -> Iterator[None]:
        self.disable()
        try:
            yield
        finally:
            self.enable()

    @contextlib.contextmanager
    def toxic(self, kind: str, stream: str = "downstream", **attributes: int) -> Iterator[None]:
        name = self.add_toxic(kind, stream, **attributes)
        try:
            yield
        finally:
            self.remove_toxic(name)


@contextlib.contextmanager
def running_toxiproxy(cluster: Cluster) -> Iterator[Toxiproxy]:
    """toxiproxy-server on a free loopback port, one of the cluster's processes (its log
    beside theirs, in the failure reports), stopped afterwards."""
    port = free_port()
    cluster.start_process("toxiproxy", [str(build_toxiproxy() / "toxiproxy-server"),
                                        "-host", "127.0.0.1", "-port", str(port)],
                          env={**os.environ, "LOG_LEVEL": "info"})  # not each byte's trace
    toxiproxy = Toxiproxy(f"http://127.0.0.1:{port}")
    try:
        cluster.wait_for("toxiproxy's API", toxiproxy.answers, timeout=30, every=0.2)
        yield toxiproxy
    finally:
        cluster.stop_processes(["toxiproxy"])
