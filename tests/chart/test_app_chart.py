"""The example application chart (examples/shop/chart): its DataMigrations carry the
release's image tag and the names chunkwise_manifest gives them; its migrate hook defers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chunkwise.contract import data_migration_name
from tests.e2e.testenv.cluster import build_binaries

CHART = Path(__file__).resolve().parents[2] / "examples" / "shop" / "chart"
LONG = "0042_backfill_invoice_totals_for_every_customer"
ENTRIES: list[dict[str, Any]] = [{"app": "shop", "name": "0002_customer_status",
            "spec": {"batch": {"maxRowsPerSecond": 20000}}},
           {"app": "shop", "name": "0005_two_batched_steps", "operation": 1},
           {"app": "billing", "name": LONG},
           {"app": "My_App", "name": "0007__double"}]


@pytest.fixture(scope="module")
def helm() -> Path:
    return build_binaries() / "helm"


def rendered(helm: Path, *args: str) -> list[dict[str, Any]]:
    result = subprocess.run([str(helm), "template", "shop", str(CHART), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_lint(helm: Path) -> None:
    result = subprocess.run([str(helm), "lint", str(CHART)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_data_migrations_take_the_release_tag_and_the_manifest_names(helm: Path) -> None:
    docs = rendered(helm, "--set", "image.tag=1.4.3", "--set-json",
                    f"dataMigrations={json.dumps(ENTRIES)}")
    migrations = [d for d in docs if d["kind"] == "DataMigration"]
    assert [m["metadata"]["name"] for m in migrations] == [
        data_migration_name("shop", "0002_customer_status"),
        data_migration_name("shop", "0005_two_batched_steps", 1),
        data_migration_name("billing", LONG),
        data_migration_name("My_App", "0007__double")]
    assert all(m["spec"]["image"] == "registry.example.com/shop:1.4.3" for m in migrations)
    assert migrations[0]["spec"]["batch"] == {"maxRowsPerSecond": 20000}
    assert migrations[0]["spec"]["migration"] == {"app": "shop", "name": "0002_customer_status"}
    assert migrations[1]["spec"]["migration"]["operation"] == 1
    assert all(len(m["metadata"]["name"]) <= 50 for m in migrations)


def test_the_migrate_hook_defers_and_runs_before_the_release(helm: Path) -> None:
    [job] = [d for d in rendered(helm, "--set", "image.tag=1.4.3") if d["kind"] == "Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert {"name": "CHUNKWISE_DEFER", "value": "1"} in container["env"]
    assert container["command"][-2:] == ["migrate", "--no-input"]
    assert container["image"] == "registry.example.com/shop:1.4.3"
    assert not [d for d in rendered(helm, "--set", "migrate.enabled=false")
                if d["kind"] == "Job"]


def test_values_schema_refuses_an_unknown_key_naming_it(helm: Path) -> None:
    result = subprocess.run([str(helm), "template", "shop", str(CHART), "--set",
                             "image.tga=1.4.3"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "at '/image': additional properties 'tga' not allowed" in result.stderr


def test_every_resource_carries_the_recommended_labels(helm: Path) -> None:
    docs = rendered(helm, "--set-json", f"dataMigrations={json.dumps(ENTRIES[:1])}")
    assert {d["kind"] for d in docs} == {"Job", "DataMigration"}
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "shop"
        assert labels["app.kubernetes.io/instance"] == "shop"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "shop-0.1.0"
