"""The operator's API client when the API server does not answer: a dropped connection
or a silent one fails the call within its timeout as a kopf.TemporaryError with a short
delay, never hangs a handler thread and never waits out kopf's 60 s default backoff."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import kopf
import kubernetes.client
import pytest

from chunkwise.operator.cluster import Cluster

JOB = {"apiVersion": "batch/v1", "kind": "Job",
       "metadata": {"name": "customer-status-run1", "namespace": "shop"}}


class Server(str):
    """The server's URL; ``accepted`` counts the connections it took."""

    accepted = 0


def _server(answer: bool, response: bytes = b"") -> Iterator[Server]:
    """A TCP server that reads each request, then closes the connection, after sending
    ``response`` if any (``answer=False`` keeps it open and silent instead)."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = Server(f"http://127.0.0.1:{listener.getsockname()[1]}")
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            url.accepted += 1
            conn.recv(65536)
            if answer:
                conn.sendall(response)
                conn.close()
            else:
                held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield url
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture
def dropping() -> Iterator[Server]:
    yield from _server(answer=True)


@pytest.fixture
def silent() -> Iterator[Server]:
    yield from _server(answer=False)


def test_a_dropped_connection_is_retried_then_a_temporary_error(dropping: Server) -> None:
    cluster = Cluster.from_configuration(kubernetes.client.Configuration(host=dropping),
                                         attempts=2, timeout=5)
    with pytest.raises(kopf.TemporaryError) as raised:
        cluster.create_job(JOB)
    assert raised.value.delay == 5
    assert dropping.accepted == 2  # the first attempt and its one retry
    assert "create jobs.batch shop/customer-status-run1: the API server did not answer" \
        in str(raised.value)


def test_a_silent_api_server_fails_the_call_within_its_timeout(silent: Server) -> None:
    cluster = Cluster.from_configuration(kubernetes.client.Configuration(host=silent),
                                         attempts=1, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(kopf.TemporaryError) as raised:
        cluster.patch_status("shop", "customer-status", {"phase": "Running"})
    assert time.monotonic() - started < 5  # the read timeout, not for ever
    assert "patch datamigrations/status.chunkwise.dev shop/customer-status" in str(raised.value)


def test_a_call_to_a_silent_api_server_ends_within_its_timeout_retries_included(
        silent: Server) -> None:
    """The timeout is the whole call's: an unanswered attempt is not tried again with a
    fresh timeout and a backoff (urllib3's Retry(total=4) made the 30 s of the docs
    about 157 s)."""
    cluster = Cluster.from_configuration(kubernetes.client.Configuration(host=silent),
                                         attempts=5, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(kopf.TemporaryError):
        cluster.get_job("shop", "customer-status-run1")
    assert time.monotonic() - started < 1.5
    assert silent.accepted == 1


def test_a_retry_after_beyond_the_timeout_ends_the_call_at_once() -> None:
    """A 429 whose Retry-After the call's time cannot hold is not waited out: the call
    fails now, and kopf retries the handler after that delay."""
    answer = (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\n"
              b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    for server in _server(answer=True, response=answer):
        cluster = Cluster.from_configuration(kubernetes.client.Configuration(host=server),
                                             attempts=5, timeout=2.0)
        started = time.monotonic()
        with pytest.raises(kopf.TemporaryError) as raised:
            cluster.get_job("shop", "customer-status-run1")
        assert time.monotonic() - started < 1.0
        assert server.accepted == 1 and raised.value.delay == 60
