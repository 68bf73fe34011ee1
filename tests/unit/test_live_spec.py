"""Live retuning's source: the spec from each status patch's answer, taken once."""

from __future__ import annotations

from chunkwise.worker import LiveSpec


def resource(generation: int, **batch: object) -> dict[str, object]:
    return {"metadata": {"generation": generation},
            "spec": {"batch": {"size": 5000, **batch}, "haltOn": {"failedRows": 100}}}


def test_only_a_change_of_tunables_is_offered_and_only_once() -> None:
    live = LiveSpec({"CHUNKWISE_BATCH_SIZE": "5000", "CHUNKWISE_HALT_FAILED_ROWS": "100",
                     "CHUNKWISE_APP": "shop", "PATH": "/bin"})
    live.offer(resource(1))  # what the pod started with
    assert live.take() is None
    live.offer(resource(2, maxRowsPerSecond=20000))
    live.offer(resource(3, maxRowsPerSecond=30000))  # the newest wins
    assert live.take() == (3, {"CHUNKWISE_BATCH_SIZE": "5000",
                               "CHUNKWISE_MAX_ROWS_PER_SECOND": "30000",
                               "CHUNKWISE_HALT_FAILED_ROWS": "100"})
    assert live.take() is None
    live.offer(resource(3, maxRowsPerSecond=30000))  # the same again: nothing new
    assert live.take() is None
    live.offer({"metadata": {}, "spec": None})  # not a resource: ignored
    assert live.take() is None


def test_the_offered_tunables_are_all_the_pod_would_have_its_template_env_on_top() -> None:
    """What a pod started from the spec has, complete: a tunable the spec no longer sets
    is left out (the run goes back to the operation's own value or the default), and a
    tunable the template's worker env overrides stays overridden, as at start."""
    live = LiveSpec({"CHUNKWISE_BATCH_SIZE": "5000", "CHUNKWISE_HALT_FAILED_ROWS": "7",
                     "CHUNKWISE_MAX_ROWS_PER_SECOND": "20000"})
    override = {"spec": {"containers": [
        {"name": "worker", "env": [{"name": "CHUNKWISE_HALT_FAILED_ROWS", "value": "7"},
                                   {"name": "PGSSLMODE", "value": "require"}]},
        {"name": "proxy", "env": [{"name": "CHUNKWISE_BATCH_SIZE", "value": "1"}]}]}}
    started = resource(1, maxRowsPerSecond=20000)
    started["spec"]["template"] = override  # type: ignore[index]
    live.offer(started)
    assert live.take() is None  # as the pod started: its template's override included
    removed = resource(2)
    removed["spec"]["template"] = override  # type: ignore[index]
    live.offer(removed)
    assert live.take() == (2, {"CHUNKWISE_BATCH_SIZE": "5000",
                               "CHUNKWISE_HALT_FAILED_ROWS": "7"})
