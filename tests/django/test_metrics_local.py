"""Live metrics outside Kubernetes: ``migrate`` with CHUNKWISE_METRICS_PORT serves them
while it runs (the example shop on SQLite), and a bad port is refused by name."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from chunkwise.contract import Env, ExitCode
from tests.django.test_sqlite import shop, sqlite_env
from tests.support.pgserver import free_port
from tests.support.shop import SHOP


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample the endpoint serves, by name; empty while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_migrate_serves_live_metrics_while_it_runs(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"],
                 ["seed_customers", "20000"]):
        assert shop(db, *args).returncode == 0
    port = free_port()
    env = sqlite_env(db) | {Env.METRICS_PORT: str(port), "CHUNKWISE_BATCH_SIZE": "1000",
                            "CHUNKWISE_MAX_BATCH_SIZE": "1000",
                            "CHUNKWISE_MAX_ROWS_PER_SECOND": "10000"}
    migrate = subprocess.Popen([sys.executable, str(SHOP / "manage.py"), "migrate", "shop",
                                "0002"], env=env, cwd=SHOP, stderr=subprocess.PIPE, text=True)
    seen: dict[str, list[tuple[dict[str, str], float]]] = {}
    deadline = time.monotonic() + 60
    while not any(value > 0 for _, value in seen.get("chunkwise_rows_processed_total", [])):
        assert migrate.poll() is None, "migrate ended before a scrape saw a batch"
        assert time.monotonic() < deadline, "no rows in the metrics"
        seen = scrape(port)
        time.sleep(0.05)
    _, err = migrate.communicate(timeout=120)
    assert migrate.returncode == 0, err
    assert f"metrics at http://0.0.0.0:{port}/metrics" in err
    [(labels, rows)] = seen["chunkwise_rows_processed_total"]
    assert labels == {"namespace": "", "migration": "shop.0002_customer_status[0]",
                      "shard": "0"}
    assert 0 < rows < 20000
    assert seen["chunkwise_batch_duration_seconds_count"][0][1] >= 1
    assert seen["chunkwise_rows_estimated"][0][1] == 20000


def test_a_bad_metrics_port_is_refused_naming_it(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    for args in (["migrate", "chunkwise"], ["migrate", "shop", "0001"]):  # 0002's schema
        assert shop(db, *args).returncode == 0
    result = shop(db, "chunkwise_run", "shop", "0002", "--metrics-port", "99999")
    assert result.returncode == ExitCode.USAGE
    assert ("--metrics-port (CHUNKWISE_METRICS_PORT): expected a TCP port number 1-65535, "
            "got '99999'") in result.stderr
