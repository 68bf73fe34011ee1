"""What only the worker can know is wrong (the app, the migration, the operation, the
direction, the database): the DataMigration ends Failed after exactly one pod (exit 64
through the podFailurePolicy, never a crash loop), and its condition, Event and
status.worker name the problem."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import LAB_IMAGE, Shop

pytestmark = pytest.mark.e2e

MIGRATION = """
apiVersion: chunkwise.dev/v1alpha1
kind: DataMigration
metadata: {{name: {name}}}
spec:
  image: {image}
  migration: {migration}
  direction: {direction}
  database: {database}
  template:
    spec:
      serviceAccountName: shop-migrator
      containers: [{{name: worker, envFrom: [{{secretRef: {{name: shop-db}}}}], env: {env}}}]
"""
#: the test project's image: its `mistakes` app (switched on by LAB_MISTAKES) holds an
#: operation keyed on a field that is not unique
LAB = (LAB_IMAGE, "[{name: LAB_MISTAKES, value: '1'}]")
SHOP = ("registry.example.com/shop:1.4.2", "[]")

CASES = {  # name: (migration, direction, database, what the condition's message says)
    "key-not-unique": ("{app: mistakes, name: '0002'}", "forward", "default",
                       "BatchedRunPython key: mistakes.Visit.email must be the primary key "
                       "or a unique field (keyset batching needs one row per key; rows "
                       "sharing a key would be skipped or done twice)"),
    "unknown-app": ("{app: nosuchapp, name: '0002'}", "forward", "default",
                    "app_label: no installed app is called 'nosuchapp'"),
    "unknown-migration": ("{app: shop, name: '0999'}", "forward", "default",
                          "There is no migration for 'shop' with the prefix '0999'"),
    "operation-out-of-range": ("{app: shop, name: '0002', operation: 5}", "forward", "default",
                               "--operation: expected the index of a BatchedRunPython "
                               "operation in shop.0002_customer_status (one of [0]), got 5"),
    "not-batched": ("{app: shop, name: '0001'}", "forward", "default",
                    "migration_name: shop.0001_initial has no BatchedRunPython operation"),
    "irreversible": ("{app: shop, name: '0003'}", "backward", "default",
                     "direction: backward runs the operation's reverse= code, and "
                     "shop.0003_count_visit[0] has none (it is irreversible)"),
    "unknown-database": ("{app: shop, name: '0002'}", "forward", "replica",
                         "--database: no database alias 'replica' in settings.DATABASES"),
}


def test_what_only_the_worker_knows_fails_once_with_the_reason(shop: Shop) -> None:
    # mistakes 0002 runs on the schema its 0001 makes: applied here, as a deploy would have
    # (else the worker refuses the run for that first, before it judges the key)
    shop.pg.sql("CREATE TABLE mistakes_visit (id bigserial PRIMARY KEY, email varchar(100) "
                "NOT NULL, counter integer NOT NULL)", shop.database)
    shop.query("INSERT INTO django_migrations (app, name, applied) VALUES ('mistakes', "
               "'0001_initial', now()) RETURNING app")
    for name, (migration, direction, database, _) in CASES.items():
        image, env = LAB if name == "key-not-unique" else SHOP
        shop.apply(MIGRATION.format(name=name, migration=migration, direction=direction,
                                    database=database, image=image, env=env))
    for name, (_, _, _, message) in CASES.items():
        body = shop.wait_phase(name, "Failed", timeout=120)
        status = body["status"]
        succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
        assert succeeded["status"] == "False" and succeeded["reason"] == "InvalidConfiguration"
        assert message in succeeded["message"], (name, succeeded["message"])
        assert status["worker"]["exitCode"] == 64 and message in status["worker"]["message"]
        [job] = [j for j in shop.jobs() if j["metadata"]["labels"][
            "chunkwise.dev/datamigration"] == name]
        assert job["status"].get("failed") == 1, (name, job["status"])  # one pod, no retry
        pods = [p for p in shop.pods() if p["metadata"]["labels"].get(
            "chunkwise.dev/datamigration") == name]
        assert len(pods) == 1, name
        assert "Traceback" not in shop.pod_log(pods[0]["metadata"]["name"]), name
        assert "Failed" in shop.events(name)
