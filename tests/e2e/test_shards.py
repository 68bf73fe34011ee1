"""Parallel shards on the real control plane: an Indexed Job, one pod per shard, each
with its own checkpoint and its own entry in the status."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import SEEDED, Shop
from tests.e2e.test_user_path import count_visit, visits

pytestmark = pytest.mark.e2e
SHARDS = 4


def sharded(rate: int, failed_rows: int = 100) -> str:
    return count_visit(rate=rate, failed_rows=failed_rows).replace(
        "stallAfter: 1h", f"stallAfter: 1h\n  parallelism: {SHARDS}")


def test_four_shards_do_every_row_once_even_when_one_pod_is_killed(shop: Shop) -> None:
    shop.apply(sharded(rate=500))  # per shard: 5,000 rows each at 500 rows/s, 10 s
    [job] = shop.k8s.wait_for("the Job", shop.jobs, timeout=60)
    assert job["spec"]["completionMode"] == "Indexed"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (SHARDS, SHARDS)
    assert job["spec"]["backoffLimitPerIndex"] == 6

    def shard_pods() -> list[dict[str, object]] | None:
        running = [p for p in shop.pods() if p["status"].get("phase") == "Running"]
        # the checkpoints, not the status: each pod reports only every 2 s x 4 shards
        [(busy,)] = shop.query("SELECT count(*) FROM chunkwise_checkpoint "
                               "WHERE rows_processed >= 500 AND state = 'running'")
        return running if len(running) == SHARDS and busy >= 2 else None

    pods = shop.k8s.wait_for("four shard pods at work", shard_pods, timeout=120, every=0.2)
    victim = next(p for p in pods if p["metadata"]["annotations"][
        "batch.kubernetes.io/job-completion-index"] == "2")
    shop.kill(victim)
    body = shop.wait_phase("count-visit", "Succeeded", timeout=240)
    assert visits(shop) == {1: SEEDED}  # every row exactly once, across the kill
    status = body["status"]
    assert sorted(status["shards"]) == ["0", "1", "2", "3"]
    assert all(entry["done"] for entry in status["shards"].values())
    assert sum(e["rowsProcessed"] for e in status["shards"].values()) == SEEDED
    assert [e["rowsEstimated"] for _, e in sorted(status["shards"].items())] == \
        [SEEDED // SHARDS] * SHARDS  # balanced by row count
    assert status["progress"]["rowsProcessed"] == SEEDED
    assert status["progress"]["percent"] == 100
    [job] = shop.jobs()  # never a second Job; index 2 was retried alone
    assert job["status"].get("failed") == 1 and job["status"].get("succeeded") == SHARDS
    checkpoints = shop.query("SELECT shard, shard_count, state, rows_processed "
                             "FROM chunkwise_checkpoint ORDER BY shard")
    assert checkpoints == [(i, SHARDS, "done", SEEDED // SHARDS) for i in range(SHARDS)]


def test_a_halting_shard_halts_the_migration_and_stops_the_others(shop: Shop) -> None:
    """Rows that overflow sit in shard 1's range only: it halts (its share of
    haltOn.failedRows is 1), the Job fails at once, the others stop after a batch."""
    shop.query("UPDATE shop_customer SET visits = 2147483647 WHERE id BETWEEN 6001 AND 6003 "
               "RETURNING id")
    shop.apply(sharded(rate=500, failed_rows=4))
    body = shop.wait_phase("count-visit", "Halted", timeout=180)
    halted = {c["type"]: c for c in body["status"]["conditions"]}["Halted"]
    assert halted["reason"] == "FailedRowsExceeded"
    assert halted["message"].startswith("shard 1: ")
    shop.k8s.wait_for("the other shards stopped", lambda: not [
        p for p in shop.pods() if p["status"].get("phase") == "Running"], timeout=60)
    done = visits(shop).get(1, 0)
    assert 0 < done < SEEDED - 3  # the others stopped early, not at their end
    changing = shop.k8s.kubectl("patch", "dmig", "count-visit", "-n", shop.namespace,
                                "--type", "merge", "-p", '{"spec":{"parallelism":2}}',
                                check=False)
    assert changing.returncode != 0
    assert "spec.parallelism: Forbidden: cannot change once a run has started" in \
        changing.stderr
