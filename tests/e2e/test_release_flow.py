"""The release flow on the real control plane, as a CI pipeline runs it.

Release 1 has the schema (the shop database starts at shop.0001). Release 2 adds the
batched 0002_customer_status; its `migrate` runs with CHUNKWISE_DEFER=1 and returns at
once, and `chunkwise_manifest | kubectl apply -f -` makes the DataMigration that does the
work. Release 3 adds 0004_customer_status_required: EnsureBatchedComplete, then a CHECK
constraint that needs every customer classified. (The releases share the example's
source tree; each `migrate` targets its release's last migration.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import SEEDED, SHOP, SHOP_IMAGE, Shop, pg_shop_env
from tests.support.argocd import argo_health

pytestmark = pytest.mark.e2e
NAME = "shop-0002-customer-status"  # chunkwise_manifest's name for it


def manage(shop: Shop, *args: str, defer: bool = True) -> subprocess.CompletedProcess[str]:
    """A pipeline step: the release's manage.py against the production database."""
    env = {**pg_shop_env(shop.pg, shop.database), "CHUNKWISE_DEFER": "1" if defer else "0"}
    return subprocess.run([sys.executable, str(SHOP / "manage.py"), *args], env=env, cwd=SHOP,
                          capture_output=True, text=True, timeout=600)


def release_2(shop: Shop) -> None:
    started = time.monotonic()
    migrated = manage(shop, "migrate", "shop", "0002")
    assert migrated.returncode == 0, migrated.stderr
    assert time.monotonic() - started < 30
    assert (f"deferred shop.0002_customer_status[0] ({SEEDED:,} rows to do, up to key "
            f"{SEEDED})") in migrated.stdout
    assert unclassified(shop) == SEEDED  # planned, nothing run
    [(state, estimated)] = shop.query("SELECT state, rows_estimated FROM chunkwise_checkpoint")
    assert (state, estimated) == ("deferred", SEEDED)


def manifest(shop: Shop, **batch: Any) -> str:
    printed = manage(shop, "chunkwise_manifest", "--image", SHOP_IMAGE, "-n", shop.namespace,
                     "--service-account", "shop-migrator", "--env-from-secret", "shop-db")
    assert printed.returncode == 0, printed.stderr
    [document] = list(yaml.safe_load_all(printed.stdout))
    assert document["metadata"]["name"] == NAME
    assert document["spec"]["migration"] == {"app": "shop", "name": "0002_customer_status",
                                             "operation": 0}
    if batch:
        document["spec"]["batch"] = batch
    return yaml.safe_dump(document)


def release_3(shop: Shop) -> subprocess.CompletedProcess[str]:
    return manage(shop, "migrate", "shop", "0004")


def unclassified(shop: Shop) -> int:
    return int(shop.query("SELECT count(*) FROM shop_customer WHERE status IS NULL")[0][0])


def constraint_holds(shop: Shop) -> bool:
    found = shop.query("SELECT 1 FROM pg_constraint WHERE conname = 'shop_customer_status_set'")
    return bool(found)


def test_deferred_then_applied_then_finalized(shop: Shop) -> None:
    release_2(shop)
    shop.apply(manifest(shop, size=1000, maxRowsPerSecond=10_000))
    seen = set()

    def succeeded() -> bool:
        body = shop.k8s.api("GET", f"/apis/chunkwise.dev/v1alpha1/namespaces/"
                                   f"{shop.namespace}/datamigrations/{NAME}")
        if body is None:
            return False
        seen.add(argo_health(body)[0])
        return bool(body.get("status", {}).get("phase") == "Succeeded")

    shop.k8s.wait_for("the DataMigration to succeed", succeeded, timeout=180, every=0.3)
    # how a pipeline waits: kubectl wait on the Succeeded condition
    waited = shop.k8s.kubectl("wait", "--for=condition=Succeeded", f"datamigration/{NAME}",
                              "-n", shop.namespace, "--timeout=60s")
    assert "condition met" in waited.stdout
    assert "Progressing" in seen and argo_health(shop.dmig(NAME)) == (
        "Healthy", "Completed: every row was processed")
    assert unclassified(shop) == 0
    finalized = release_3(shop)
    assert finalized.returncode == 0, finalized.stderr
    assert "shop.0002_customer_status[0] forward is complete\n" in finalized.stdout
    assert "finishing it here" not in finalized.stdout and constraint_holds(shop)
    # release 3 deferred its own new batched migration (0003) and nothing else
    again = manage(shop, "chunkwise_manifest", "--image", SHOP_IMAGE)
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(again.stdout)] == [
        "shop-0003-count-visit"]


def test_nobody_applied_it_so_release_3_finishes_it_inline(shop: Shop) -> None:
    release_2(shop)
    finalized = release_3(shop)
    assert finalized.returncode == 0, finalized.stderr
    assert "done (Completed): all rows processed" in finalized.stderr
    assert unclassified(shop) == 0 and constraint_holds(shop)
    [(state, rows)] = shop.query("SELECT state, rows_processed FROM chunkwise_checkpoint "
                                 "WHERE migration = '0002_customer_status'")
    assert (state, rows) == ("done", SEEDED)


def test_still_running_when_release_3_migrates_fails_fast_naming_it(shop: Shop) -> None:
    release_2(shop)
    shop.apply(manifest(shop, size=500, minSize=100, maxSize=500, maxRowsPerSecond=1000))
    shop.k8s.wait_for("the worker's first batches", lambda: (shop.dmig(NAME).get("status", {})
                      .get("progress", {}).get("rowsProcessed", 0)) >= 500, timeout=120)
    started = time.monotonic()
    blocked = release_3(shop)
    assert blocked.returncode == 69 and time.monotonic() - started < 20  # EX_UNAVAILABLE
    assert f"already being run by DataMigration {shop.namespace}/{NAME}" in blocked.stderr
    assert (f"kubectl wait --for=condition=Succeeded datamigration/{NAME} -n "
            f"{shop.namespace}") in blocked.stderr
    assert not constraint_holds(shop) and "Traceback" not in blocked.stderr
    shop.k8s.kubectl("wait", "--for=condition=Succeeded", f"datamigration/{NAME}", "-n",
                     shop.namespace, "--timeout=120s")
    finalized = release_3(shop)
    assert finalized.returncode == 0, finalized.stderr
    assert unclassified(shop) == 0 and constraint_holds(shop)
