"""The user's path on a real control plane: kubectl apply, the operator, the real Job
controller, a worker pod (a container on the real node, from the shop's image) against a
real PostgreSQL."""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import pytest

from tests.e2e.conftest import REPO, SEEDED, OperatorDeployment, Shop
from tests.support.argocd import argo_health

pytestmark = pytest.mark.e2e
EXAMPLES = REPO / "examples" / "k8s"

COUNT_VISIT = """
apiVersion: chunkwise.dev/v1alpha1
kind: DataMigration
metadata: {{name: {name}}}
spec:
  image: registry.example.com/shop:1.4.2
  migration: {{app: shop, name: 0003_count_visit}}
  batch: {{size: 500, minSize: 100, maxSize: 500, maxRowsPerSecond: {rate}}}
  haltOn: {{failedRows: {failed_rows}, failureRate: "1", consecutiveFailedBatches: 100}}
  stallAfter: 1h
  template:
    spec:
      serviceAccountName: shop-migrator
      containers: [{{name: worker, envFrom: [{{secretRef: {{name: shop-db}}}}]}}]
"""


def count_visit(name: str = "count-visit", rate: int = 4000, failed_rows: int = 100) -> str:
    return COUNT_VISIT.format(name=name, rate=rate, failed_rows=failed_rows)


def visits(shop: Shop) -> dict[int, int]:
    return {int(v): int(n) for v, n in shop.query(
        "SELECT visits, count(*) FROM shop_customer GROUP BY visits")}


def wait_rows(shop: Shop, name: str, at_least: int = 1) -> None:
    shop.k8s.wait_for(f"{name} progress", lambda: shop.dmig(name).get("status", {}).get(
        "progress", {}).get("rowsProcessed", 0) >= at_least, timeout=120, every=0.2)


def test_user_path_apply_run_succeed(shop: Shop) -> None:
    shop.apply(EXAMPLES / "customer-status.yaml")
    body = shop.wait_phase("customer-status", "Succeeded")
    status = body["status"]
    assert status["progress"]["rowsProcessed"] == SEEDED
    assert status["progress"]["percent"] == 100 and status["progress"]["percentText"] == "100%"
    assert status["worker"]["state"] == "done"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Succeeded"]["reason"] == "Completed"
    # its todo filter (status IS NULL) was checked after the run: nothing left, nothing missed
    assert {k: v for k, v in status["verification"].items() if k != "checkedAt"} == {
        "rowsRemaining": 0, "failedRows": 0, "missedRows": 0, "upToKey": SEEDED}
    assert conditions["Verified"]["status"] == "True"
    assert conditions["Verified"]["reason"] == "NoRowsMissed"
    assert shop.query("SELECT count(*) FROM shop_customer WHERE status IS NULL") == [(0,)]
    assert shop.query("SELECT count(*) FROM shop_customer") == [(SEEDED,)]
    table = shop.k8s.kubectl("get", "dmig", "-n", shop.namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "ROWS/S", "ETA", "FAILED", "AGE"]
    assert row.split()[:3] == ["customer-status", "Succeeded", "100%"]
    wide = shop.k8s.kubectl("get", "datamigrations.chunkwise.dev", "-n", shop.namespace,
                            "-o", "wide").stdout
    assert "customer-status-run1" in wide and "shop.0002_customer_status" in wide
    assert wide.splitlines()[0].split()[6:9] == ["VERIFIED", "SHARDS", "THROTTLED"]
    assert " True " in wide.splitlines()[1]  # (the empty ETA column shifts a split row)
    events = shop.events("customer-status")
    assert events[0] == "JobCreated" and "Succeeded" in events
    [job] = shop.jobs()
    assert job["metadata"]["ownerReferences"][0]["kind"] == "DataMigration"
    assert job["status"].get("succeeded") == 1


def test_crash_is_retried_by_the_job_and_resumes_exactly_once(shop: Shop) -> None:
    shop.apply(count_visit(rate=3000))
    wait_rows(shop, "count-visit", 2000)
    [pod] = [p for p in shop.pods() if p["status"].get("phase") == "Running"]
    shop.kill(pod)
    body = shop.wait_phase("count-visit", "Succeeded", timeout=240)
    assert visits(shop) == {1: SEEDED}  # every row exactly once across the crash
    [job] = shop.jobs()
    assert job["status"].get("failed") == 1 and job["status"].get("succeeded") == 1
    assert body["status"]["progress"]["rowsProcessed"] == SEEDED
    log = shop.pod_logs()
    assert "resuming after key" in log


def test_halt_fails_the_job_at_once_then_a_raised_threshold_resumes(shop: Shop) -> None:
    # visits at the integer maximum: +1 overflows (SQLSTATE 22003), a row error
    shop.query("UPDATE shop_customer SET visits = 2147483647 WHERE id % 4000 = 7 RETURNING id")
    shop.apply(count_visit(rate=0, failed_rows=2))
    body = shop.wait_phase("count-visit", "Halted")
    halted = {c["type"]: c for c in body["status"]["conditions"]}["Halted"]
    assert halted["status"] == "True" and halted["reason"] == "FailedRowsExceeded"
    assert "haltOn.failedRows=2" in halted["message"]
    assert argo_health(body) == ("Degraded", f"Halted: FailedRowsExceeded: {halted['message']}")
    [job] = shop.jobs()
    assert job["status"].get("failed") == 1  # podFailurePolicy: no retry of a halt
    assert "Halted" in shop.events("count-visit")
    done_before = shop.query("SELECT count(*) FROM shop_customer WHERE visits = 1")[0][0]
    shop.patch_spec("count-visit", {"haltOn": {"failedRows": 10}})
    body = shop.wait_phase("count-visit", "Succeeded")
    assert body["status"]["run"] == 2 and body["status"]["progress"]["failedRows"] == 5
    assert visits(shop) == {1: SEEDED - 5, 2147483647: 5}
    assert done_before > 0
    assert len(shop.jobs()) == 2


def test_suspend_stops_after_a_batch_and_resume_continues(shop: Shop) -> None:
    shop.apply(count_visit(rate=3000))
    wait_rows(shop, "count-visit", 1000)
    shop.patch_spec("count-visit", {"suspend": True})
    assert argo_health(shop.wait_phase("count-visit", "Suspended"))[0] == "Suspended"
    shop.k8s.wait_for("worker pod gone", lambda: not shop.pods(), timeout=60)
    log = shop.pod_logs()
    partial = visits(shop)
    assert set(partial) == {0, 1} and 0 < partial[1] < SEEDED, (partial, log)
    time.sleep(1)
    assert visits(shop) == partial  # nothing runs while suspended
    shop.patch_spec("count-visit", {"suspend": False})
    shop.wait_phase("count-visit", "Succeeded")
    assert visits(shop) == {1: SEEDED}
    events = shop.events("count-visit")
    assert "Suspended" in events and "Resumed" in events


def test_created_suspended_example_waits_until_resumed(shop: Shop) -> None:
    shop.apply(EXAMPLES / "count-visit-suspended.yaml")
    shop.wait_phase("count-visit", "Suspended")
    time.sleep(1)
    assert not shop.pods() and visits(shop) == {0: SEEDED}
    shop.patch_spec("count-visit", {"suspend": False})
    shop.wait_phase("count-visit", "Succeeded")
    assert visits(shop) == {1: SEEDED}


def test_delete_removes_the_job_and_its_pods(shop: Shop) -> None:
    shop.apply(count_visit(rate=2000))
    wait_rows(shop, "count-visit", 500)
    assert shop.jobs() and shop.pods()
    shop.k8s.kubectl("delete", "dmig", "count-visit", "-n", shop.namespace)
    shop.k8s.wait_for("Job garbage-collected", lambda: not shop.jobs(), timeout=120)
    shop.k8s.wait_for("pods garbage-collected", lambda: not shop.pods(), timeout=120)


def test_operator_restart_mid_run_makes_no_second_job(shop: Shop,
                                                      operator: OperatorDeployment) -> None:
    shop.apply(count_visit(rate=3000))
    wait_rows(shop, "count-visit", 1000)
    before = shop.dmig("count-visit")["status"]
    operator.kill(signal.SIGKILL)  # its container; the kubelet starts it again
    body = shop.wait_phase("count-visit", "Succeeded")
    assert len(shop.jobs()) == 1
    assert body["status"]["run"] == before["run"] == 1
    assert body["status"]["startedAt"] == before["startedAt"]
    assert visits(shop) == {1: SEEDED}


STALLING = """
apiVersion: chunkwise.dev/v1alpha1
kind: DataMigration
metadata: {name: stalls}
spec:
  image: registry.example.com/shop:1.4.2
  migration: {app: shop, name: 0003_count_visit}
  batch: {size: 500, minSize: 100, maxSize: 500, pause: 8s}
  stallAfter: 3s
  template:
    spec:
      serviceAccountName: shop-migrator
      containers: [{name: worker, envFrom: [{secretRef: {name: shop-db}}]}]
"""


def test_a_checkpoint_older_than_stall_after_marks_stalled_then_clears(shop: Shop) -> None:
    shop.apply(STALLING)
    shop.wait_phase("stalls", "Running")

    def stalled_is(value: str) -> bool:
        conditions = shop.dmig("stalls").get("status", {}).get("conditions", [])
        return any(c["type"] == "Stalled" and c["status"] == value for c in conditions)

    shop.k8s.wait_for("Stalled=True", lambda: stalled_is("True"), timeout=60)
    condition = {c["type"]: c for c in shop.dmig("stalls")["status"]["conditions"]}["Stalled"]
    assert condition["reason"] == "CheckpointTooOld" and "spec.stallAfter is 3s" in \
        condition["message"]
    shop.k8s.wait_for("Stalled=False again", lambda: stalled_is("False"), timeout=60)
    events = shop.events("stalls")
    assert "Stalled" in events and "Unstalled" in events
    shop.k8s.kubectl("delete", "dmig", "stalls", "-n", shop.namespace)


def test_a_job_that_finished_while_the_operator_was_down_is_read_on_restart(
        shop: Shop, operator: OperatorDeployment) -> None:
    """The operator died between creating the Job and recording the run; the Job ran to
    the end while it was down. Restarted, it finds that Job (no second one) and reports
    its outcome, instead of leaving the migration Pending for ever."""
    from chunkwise.operator.jobs import build_job

    operator.stop(signal.SIGKILL)
    try:
        shop.apply(count_visit(rate=0))
        body = shop.dmig("count-visit")
        job = build_job(body, run=1)  # exactly what the operator creates first
        shop.k8s.api("POST", f"/apis/batch/v1/namespaces/{shop.namespace}/jobs", job)
        shop.k8s.wait_for("the Job to finish with nobody watching", lambda: [
            j for j in shop.jobs() if j["status"].get("succeeded") == 1], timeout=180)
        assert "phase" not in (shop.dmig("count-visit").get("status") or {})
    finally:
        operator.start()
    body = shop.wait_phase("count-visit", "Succeeded", timeout=60)
    assert body["status"]["run"] == 1 and len(shop.jobs()) == 1
    assert "Succeeded" in shop.events("count-visit")
    assert visits(shop) == {1: SEEDED}


def test_a_job_deleted_by_hand_is_made_again_and_resumes(shop: Shop) -> None:
    shop.apply(count_visit(rate=3000))
    wait_rows(shop, "count-visit", 2000)
    shop.k8s.kubectl("delete", "job", "count-visit-run1", "-n", shop.namespace,
                     "--wait=false")
    body = shop.wait_phase("count-visit", "Succeeded", timeout=240)
    assert "JobRecreated" in shop.events("count-visit")
    assert [j["metadata"]["name"] for j in shop.jobs()] == ["count-visit-run1"]
    assert body["status"]["run"] == 1
    assert visits(shop) == {1: SEEDED}  # every row exactly once across the deletion


def test_a_worker_pod_deleted_by_hand_finishes_its_batch_and_the_next_resumes(
        shop: Shop) -> None:
    """kubectl delete pod: the kubelet sends SIGTERM, the worker commits the batch in
    flight and exits 75 (interrupted) well within terminationGracePeriodSeconds; the Job
    makes a new pod, which resumes from the checkpoint: nothing lost or doubled."""
    shop.apply(count_visit(rate=3000))
    wait_rows(shop, "count-visit", 2000)
    [pod] = [p for p in shop.pods() if p["status"].get("phase") == "Running"]
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    started = time.monotonic()
    gone = shop.delete_pod_watching(pod["metadata"]["name"])
    assert time.monotonic() - started < grace  # it stopped on SIGTERM, not on SIGKILL
    [worker] = [s for s in gone["status"]["containerStatuses"] if s["name"] == "worker"]
    assert worker["state"]["terminated"]["exitCode"] == 75, worker
    body = shop.wait_phase("count-visit", "Succeeded", timeout=240)
    assert len(shop.jobs()) == 1 and body["status"]["run"] == 1
    assert len(shop.pods()) >= 1
    assert visits(shop) == {1: SEEDED}
    assert "resuming after key" in shop.pod_logs()


def test_the_operator_killed_five_times_at_random_moments_of_a_run(
        shop: Shop, operator: OperatorDeployment) -> None:
    """SIGKILL the operator at five random moments, from right after the apply (before or
    while it creates the Job and records the run) to late in the run: one Job only, ever,
    and every row exactly once."""
    import random

    rng = random.Random(20261122)
    jobs_seen: set[str] = set()
    shop.apply(count_visit(rate=1500))
    for kill in range(5):
        if kill:  # the first kill lands right after the apply, the others mid-run
            wait_rows(shop, "count-visit", kill * 3000)
        time.sleep(rng.uniform(0, 0.5))
        operator.stop(signal.SIGKILL)
        jobs_seen |= {j["metadata"]["name"] for j in shop.jobs()}
        operator.start()
        jobs_seen |= {j["metadata"]["name"] for j in shop.jobs()}
    body = shop.wait_phase("count-visit", "Succeeded", timeout=240)
    assert jobs_seen <= {"count-visit-run1"} and len(shop.jobs()) == 1
    assert body["status"]["run"] == 1
    assert visits(shop) == {1: SEEDED}


def test_an_image_that_cannot_be_pulled_shows_on_the_migration(shop: Shop) -> None:
    """The registry has no such tag: the kubelet's own ErrImagePull and ImagePullBackOff
    show on the DataMigration (condition and Warning Event) instead of a silent
    Pending."""
    shop.apply(count_visit().replace("registry.example.com/shop:1.4.2",
                                     "registry.example.com/shop:9.9.9-typo"))

    def progressing() -> dict[str, Any] | None:
        conditions = (shop.dmig("count-visit").get("status") or {}).get("conditions", [])
        found = next((c for c in conditions if c["type"] == "Progressing"), None)
        return found if found and found["reason"] == "ImagePullBackOff" else None

    condition = shop.k8s.wait_for("the pull error on the DataMigration", progressing,
                                  timeout=60)
    assert condition["status"] == "False"
    assert 'Back-off pulling image "registry.example.com/shop:9.9.9-typo"' in \
        condition["message"]
    assert shop.dmig("count-visit")["status"]["phase"] == "Pending"
    assert argo_health(shop.dmig("count-visit")) == (
        "Degraded", f"ImagePullBackOff: {condition['message']}")
    assert "ImagePullBackOff" in shop.events("count-visit")
    assert visits(shop) == {0: SEEDED}  # nothing ran
    # the user fixes the tag: the stuck run's Job is replaced by a new run, which succeeds
    shop.patch_spec("count-visit", {"image": "registry.example.com/shop:1.4.2"})
    body = shop.wait_phase("count-visit", "Succeeded", timeout=120)
    assert body["status"]["run"] == 2 and "RunReplaced" in shop.events("count-visit")
    assert [j["metadata"]["name"] for j in shop.jobs()] == ["count-visit-run2"]
    assert visits(shop) == {1: SEEDED}


def test_a_pod_the_api_server_refuses_shows_on_the_migration(shop: Shop) -> None:
    """The test's namespace enforces the restricted Pod Security Standard: it refuses a worker
    whose template allows privilege escalation: the Job controller's FailedCreate (an Event
    on the Job only) reaches the DataMigration's condition and Events; fixing the template
    replaces the run, which succeeds."""
    shop.apply(count_visit().replace(
        "containers: [{name: worker, envFrom: [{secretRef: {name: shop-db}}]}]",
        "containers: [{name: worker, envFrom: [{secretRef: {name: shop-db}}],"
        " securityContext: {allowPrivilegeEscalation: true}}]"))

    def progressing() -> dict[str, Any] | None:
        conditions = (shop.dmig("count-visit").get("status") or {}).get("conditions", [])
        found = next((c for c in conditions if c["type"] == "Progressing"), None)
        return found if found and found["reason"] == "FailedCreate" else None

    condition = shop.k8s.wait_for("the refused pod on the DataMigration", progressing,
                                  timeout=60)
    assert condition["status"] == "False"
    assert condition["message"].startswith("Job count-visit-run1 cannot create its pod: ")
    assert 'violates PodSecurity "restricted:latest"' in condition["message"]
    assert "allowPrivilegeEscalation" in condition["message"]
    assert shop.dmig("count-visit")["status"]["phase"] == "Pending"
    assert "FailedCreate" in shop.events("count-visit") and not shop.pods()
    shop.patch_spec("count-visit", {"template": {"spec": {"containers": [
        {"name": "worker", "envFrom": [{"secretRef": {"name": "shop-db"}}]}]}}})
    body = shop.wait_phase("count-visit", "Succeeded", timeout=120)
    assert body["status"]["run"] == 2 and "RunReplaced" in shop.events("count-visit")
    assert visits(shop) == {1: SEEDED}


def test_a_drained_node_does_not_count_against_the_backoff_limit(shop: Shop) -> None:
    """kubectl drain evicts the worker pod: the API server marks it DisruptionTarget, the
    worker finishes its batch on SIGTERM, and the Job's podFailurePolicy ignores that
    failure. The node is cordoned, so the new pod waits unscheduled; after uncordon it
    runs, and with backoffLimit 0 the run still succeeds."""
    shop.apply(count_visit(rate=3000).replace("stallAfter: 1h",
                                              "stallAfter: 1h\n  backoffLimit: 0"))
    wait_rows(shop, "count-visit", 2000)
    [pod] = [p for p in shop.pods() if p["status"].get("phase") == "Running"]
    node = pod["spec"]["nodeName"]
    try:
        shop.k8s.kubectl("drain", node, "--pod-selector",
                         "chunkwise.dev/datamigration=count-visit", "--delete-emptydir-data",
                         "--ignore-daemonsets", "--timeout=120s")

        def waiting_unscheduled() -> bool:
            return any(p["metadata"]["name"] != pod["metadata"]["name"]
                       and not p["spec"].get("nodeName") for p in shop.pods())

        shop.k8s.wait_for("the next pod, unscheduled on the cordoned node",
                          waiting_unscheduled, timeout=60)
        assert shop.dmig("count-visit")["status"]["phase"] != "Failed"
    finally:
        shop.k8s.kubectl("uncordon", node)
    body = shop.wait_phase("count-visit", "Succeeded", timeout=240)
    [job] = shop.jobs()
    assert job["spec"]["backoffLimit"] == 0 and job["status"].get("succeeded") == 1
    assert body["status"]["run"] == 1
    assert visits(shop) == {1: SEEDED}


def test_a_worker_over_its_memory_limit_is_oom_killed_and_the_migration_says_so(
        shop: Shop) -> None:
    """A memory limit the worker cannot start under: the kernel kills the container
    (OOMKilled, exit 137), the Job retries it until backoffLimit, and the DataMigration
    says which limit was passed and what to change, as a condition and Events."""
    shop.apply(count_visit().replace("stallAfter: 1h", "stallAfter: 1h\n  backoffLimit: 1")
               .replace("containers: [{name: worker, envFrom: [{secretRef: {name: shop-db}}]}]",
                        "containers: [{name: worker, envFrom: [{secretRef: {name: shop-db}}],"
                        " resources: {limits: {memory: 24Mi}}}]"))
    body = shop.wait_phase("count-visit", "Failed", timeout=180)
    succeeded = {c["type"]: c for c in body["status"]["conditions"]}["Succeeded"]
    assert succeeded["reason"] == "OOMKilled", succeeded
    assert "the worker container was OOMKilled (exit code 137): it used more than its " \
        "memory limit of 24Mi; raise spec.template.spec.containers[worker].resources." \
        "limits.memory" in succeeded["message"]
    killed = [s["state"]["terminated"] for p in shop.pods()
              for s in p["status"]["containerStatuses"]]
    assert [k["reason"] for k in killed] == ["OOMKilled", "OOMKilled"]  # backoffLimit 1
    events = shop.events("count-visit")
    assert "OOMKilled" in events and events[-1] == "Failed"
    assert visits(shop) == {0: SEEDED}


def test_a_dry_run_plans_writes_nothing_then_the_real_run_follows(shop: Shop) -> None:
    """spec.dryRun: the worker plans (rows, rows/s, lock waits, batch size, ETA from sample
    batches that are rolled back) into status.plan; nothing is written. Turning dryRun off
    starts the real run."""
    manifest = (EXAMPLES / "customer-status.yaml").read_text().replace(
        "  batch: {size: 5000", "  dryRun: true\n  batch: {size: 5000")
    shop.apply(manifest)
    body = shop.wait_phase("customer-status", "Succeeded")
    status = body["status"]
    succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
    assert succeeded["reason"] == "DryRunCompleted"
    assert succeeded["message"].startswith("dry run, nothing was written: rows to do 20,000")
    plan = status["plan"]
    assert plan["rowsToDo"] == SEEDED and plan["rowsCounted"] is True
    assert plan["sampleBatches"] == 3 and plan["rowsPerSecond"] > 0 and plan["batchSize"] > 0
    assert shop.query("SELECT count(*) FROM shop_customer WHERE status IS NOT NULL") == [(0,)]
    assert shop.query("SELECT count(*) FROM chunkwise_checkpoint") == [(0,)]
    shop.patch_spec("customer-status", {"dryRun": False})
    body = shop.k8s.wait_for("the real run", lambda: (lambda b: b if b["status"].get("run") == 2
                             and b["status"].get("phase") == "Succeeded" else None)(
                                 shop.dmig("customer-status")), timeout=180)
    succeeded = {c["type"]: c for c in body["status"]["conditions"]}["Succeeded"]
    assert succeeded["reason"] == "Completed" and "plan" not in body["status"]
    assert shop.query("SELECT count(*) FROM shop_customer WHERE status IS NULL") == [(0,)]


def test_retuning_a_running_migration_takes_effect_in_the_same_pod(shop: Shop) -> None:
    """batch.maxRowsPerSecond raised while Running: the worker applies it between two
    batches, within seconds, without a new pod; status.tuning and a Retuned Event say so."""
    shop.apply(count_visit(rate=500))  # 20,000 rows at 500 rows/s: 40 s as started
    wait_rows(shop, "count-visit", 1000)
    [pod] = [p["metadata"]["name"] for p in shop.pods() if p["status"].get("phase") == "Running"]
    shop.patch_spec("count-visit", {"batch": {"maxRowsPerSecond": 50_000}})
    generation = shop.dmig("count-visit")["metadata"]["generation"]
    changed = time.monotonic()
    tuning = shop.k8s.wait_for("the worker to apply it", lambda: (lambda t: t if t.get(
        "generation") == generation else None)(shop.dmig("count-visit")["status"].get(
            "tuning") or {}), timeout=30, every=0.2)
    assert time.monotonic() - changed < 10
    assert tuning["pod"] == pod
    assert tuning["changes"] == {"batch.maxRowsPerSecond": {"from": "500", "to": "50000"}}
    shop.wait_phase("count-visit", "Succeeded", timeout=60)
    assert [p["metadata"]["name"] for p in shop.pods()] == [pod]  # no new pod
    assert visits(shop) == {1: SEEDED}
    events = shop.events("count-visit")
    assert "Retuning" in events and "Retuned" in events
    assert "SpecChangeDeferred" not in events


def test_a_throttled_run_waits_shows_why_and_goes_on_when_retuned(
        shop: Shop, operator: OperatorDeployment) -> None:
    """spec.throttle.query says "slow down" (a release freeze in a table of the app's
    database): the worker waits before its first batch; the DataMigration shows
    Throttled=True with the reading, a Throttled Event, and kubectl describe says it.
    Raising the throttle live (a query that says go) frees the same pod within seconds."""
    shop.pg.sql("CREATE TABLE hold_migrations (reason text)", shop.database)
    shop.pg.sql("INSERT INTO hold_migrations VALUES ('release freeze')", shop.database)
    manifest = count_visit().replace("  stallAfter: 1h\n", "  stallAfter: 1h\n  throttle: {"
                                     "query: 'SELECT count(*) FROM hold_migrations', "
                                     "checkInterval: 500ms}\n")
    shop.apply(manifest)

    def throttled() -> dict[str, Any] | None:
        conditions = shop.dmig("count-visit").get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Throttled"
                     and c["status"] == "True"), None)

    condition = shop.k8s.wait_for("Throttled=True", throttled, timeout=120, every=0.2)
    assert condition["reason"] == "ThrottleQuery"
    assert condition["message"] == ("throttle.query returned 1 (> 0 waits): the worker waits "
                                    "before its next batch")
    status = shop.dmig("count-visit")["status"]
    assert status["phase"] == "Running" and status["throttle"]["reason"] == "ThrottleQuery"
    assert status["progress"]["rowsProcessed"] == 0 and visits(shop) == {0: SEEDED}
    described = shop.k8s.kubectl("describe", "dmig", "count-visit", "-n", shop.namespace).stdout
    print(f"\n--- kubectl describe of a throttled run\n{described}")
    assert re.search(r"Type:\s+Throttled", described) and "ThrottleQuery" in described
    wide = shop.k8s.kubectl("get", "dmig", "-o", "wide", "-n", shop.namespace).stdout
    assert re.search(r"count-visit\s+Running\s+0%.*ThrottleQuery", wide), wide
    assert "Throttled" in shop.events("count-visit")
    series = (f'chunkwise_migration_throttled{{migration="count-visit",namespace='
              f'"{shop.namespace}",reason="ThrottleQuery"}} 1.0')
    shop.k8s.wait_for("the operator's throttled series", lambda: series in operator.scrape(),
                      timeout=30, every=0.2)

    [pod] = [p["metadata"]["name"] for p in shop.pods()]
    shop.patch_spec("count-visit", {"throttle": {"query": "SELECT 0"}})
    shop.k8s.wait_for("Throttled=False", lambda: throttled() is None, timeout=30, every=0.2)
    shop.wait_phase("count-visit", "Succeeded", timeout=120)
    assert [p["metadata"]["name"] for p in shop.pods()] == [pod]  # the same pod went on
    assert visits(shop) == {1: SEEDED}
    final = shop.dmig("count-visit")["status"]
    assert "throttle" not in final or final["throttle"] is None
    events = shop.events("count-visit")
    assert events.index("Throttled") < events.index("Unthrottled") < events.index("Succeeded")
    assert "Retuned" in events
    assert 'chunkwise_migration_throttled{migration="count-visit"' not in \
        operator.scrape()


def test_the_data_work_goes_on_while_the_api_server_is_frozen(shop: Shop) -> None:
    """kube-apiserver stopped (SIGSTOP) for 20 s in the middle of a run capped at 600
    rows/s: the worker's batches keep the cap (its status patches wait in their own
    thread, coalesced), and once the API server is back the status catches up."""
    import os

    freeze = 20.0  # s: the fault itself, not a wait for a condition
    shop.apply(count_visit(rate=600))  # 20,000 rows: about 33 s
    wait_rows(shop, "count-visit", 2000)
    api_server = shop.k8s.processes["kube-apiserver"].pid
    before = visits(shop).get(1, 0)
    os.kill(api_server, signal.SIGSTOP)
    try:
        time.sleep(freeze)
        during = visits(shop).get(1, 0) - before  # PostgreSQL needs no API server
    finally:
        os.kill(api_server, signal.SIGCONT)
    assert during / freeze >= 0.8 * 600, f"{during} rows in {freeze:.0f}s of freeze"
    body = shop.wait_phase("count-visit", "Succeeded", timeout=180)
    assert body["status"]["progress"]["rowsProcessed"] == SEEDED  # caught up
    assert visits(shop) == {1: SEEDED}
