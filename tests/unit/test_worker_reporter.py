"""The worker's status mirror: throttled to one patch per interval, always at the end,
and never failing the run when the API is unreachable."""

from __future__ import annotations

from typing import Any

from chunkwise.engine import BatchReport, CheckpointState, ExitCode, Outcome, Tally, format_duration
from chunkwise.worker import StatusReporter


class FakeClient:
    resource = "shop/customer-status"

    def __init__(self, fail: bool = False) -> None:
        self.patches: list[dict[str, Any]] = []
        self.fail = fail

    def patch_status(self, status: dict[str, Any], timeout: float = 5.0) -> None:
        if self.fail:
            raise OSError("connection refused")
        self.patches.append(status)


def state(rows: int, done: bool = False) -> CheckpointState:
    return CheckpointState(rows, 1000, 1000, Tally(rows, 2, 0), rows // 100, 0.25, done)


def report(rows: int) -> BatchReport:
    return BatchReport(100, 0, 0.01, 0.0, 100, state(rows))


def test_patches_at_most_once_per_interval_and_always_at_the_end() -> None:
    now = [0.0]
    client = FakeClient()
    reporter = StatusReporter(client, interval=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    reporter.started(state(0))
    for step in range(1, 10):
        now[0] = step * 0.5
        reporter.batch_committed(report(step * 100))
        reporter.flush()  # each patch sent before the next batch (see the coalescing test)
    assert len(client.patches) == 1 + 2  # start, then at t=2.0 and t=4.0
    reporter.finished(Outcome(ExitCode.HALTED, "FailedRowsExceeded", "too many", state(900)))
    last = client.patches[-1]
    assert last["worker"] == {"state": "halted", "reason": "FailedRowsExceeded",
                              "message": "too many", "exitCode": 65}
    assert last["progress"]["rowsProcessed"] == 900 and last["progress"]["percent"] == 90
    assert last["progress"]["percentText"] == "90%" and last["progress"]["failedRows"] == 2
    assert last["shards"] == {"0": {"index": 0, "lastKey": 900,  # an integer stays a number
                                    "rowsProcessed": 900, "rowsEstimated": 1000,
                                    "done": False}}


def test_a_shard_patches_its_own_entry_only() -> None:
    """Shard 2 of 4: its entry (with its outcome and its own figures) under shards["2"],
    so a merge patch leaves the other shards' entries alone, and no ``progress`` (the
    operator sums the run's from the entries); it patches every 4 x 2 s, so the four pods
    together write about every 2 s."""
    now = [0.0]
    client = FakeClient()
    reporter = StatusReporter(client, interval=2.0, clock=lambda: now[0],  # type: ignore[arg-type]
                              shard=2, shards=4)
    mine = state(100)
    mine.run_totals = CheckpointState(None, None, 4000, Tally(1500, 3, 0), 15, 1.0, False)
    reporter.started(mine)
    for step in range(1, 20):
        now[0] = step * 0.5
        reporter.batch_committed(BatchReport(100, 0, 0.01, 0.0, 100, mine))
        reporter.flush()
    assert len(client.patches) == 1 + 1  # start, then at t=8.0
    assert set(client.patches[0]["shards"]) == {"2"} and "worker" not in client.patches[0]
    assert client.patches[0]["shards"]["2"]["worker"]["state"] == "running"
    assert all("progress" not in patch for patch in client.patches)
    own = client.patches[-1]["shards"]["2"]["progress"]
    assert (own["rowsProcessed"], own["rowsEstimated"]) == (100, 1000)  # not run_totals
    reporter.finished(Outcome(ExitCode.HALTED, "FailedRowsExceeded", "26 > 25", mine))
    last = client.patches[-1]
    assert "worker" not in last and last["shards"]["2"]["worker"]["exitCode"] == 65
    assert "progress" not in last and last["shards"]["2"]["progress"]["rowsProcessed"] == 100


def test_unreachable_api_does_not_fail_the_run(capsys: Any) -> None:
    """The final report is retried for FINAL_WAIT, then the run ends all the same."""
    import time

    reporter = StatusReporter(FakeClient(fail=True),  # type: ignore[arg-type]
                              retry_backoff=(0.01, 0.05))
    reporter.FINAL_WAIT = 0.3
    reporter.started(state(0))
    started = time.monotonic()
    reporter.finished(Outcome(ExitCode.DONE, "Completed", "ok", state(1000, done=True)))
    assert 0.3 <= time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.count("cannot update DataMigration") == 1
    assert "the final status was not taken within 0s" in err


def test_format_duration_for_columns_and_clocks() -> None:
    assert [format_duration(s, clock=False) for s in (None, 5, 75, 3725)] == [
        "", "5s", "1m15s", "1h02m"]
    assert [format_duration(s) for s in (None, 5, 75, 3725)] == ["--:--", "0:05", "1:15",
                                                                 "1:02:05"]


def test_the_verification_goes_into_the_status() -> None:
    from chunkwise.engine import Verification

    client = FakeClient()
    reporter = StatusReporter(client)  # type: ignore[arg-type]
    reporter.started(state(0))
    reporter.finished(Outcome(ExitCode.DONE, "Completed", "ok", state(1000, done=True),
                              Verification(3, 2, 1000)))
    check = client.patches[-1]["verification"]
    assert {k: v for k, v in check.items() if k != "checkedAt"} == {
        "rowsRemaining": 3, "failedRows": 2, "missedRows": 1, "upToKey": 1000}


def test_a_throttle_is_written_when_it_starts_changes_or_ends_not_per_reading() -> None:
    from chunkwise.engine import Throttle

    now = [0.0]
    client = FakeClient()
    reporter = StatusReporter(client, interval=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    reporter.started(state(0))
    reporter.flush()
    assert client.patches[0].get("throttle", "unset") is None  # a killed pod's throttle is over
    lag = Throttle("replication_lag", "replication lag 12.3s > 5s (throttle.replicationLag)")
    now[0] = 10.0
    reporter.throttle_changed(lag)
    reporter.flush()
    first = client.patches[-1]["throttle"]
    assert first["reason"] == "ReplicationLag" and first["message"] == lag.message
    now[0] = 10.5  # a fresh reading of the same reason, within the interval: not written
    reporter.throttle_changed(Throttle("replication_lag", "replication lag 13.0s > 5s"))
    reporter.flush()
    assert len(client.patches) == 2
    now[0] = 12.5  # past the interval: the fresh value, the same "since"
    reporter.throttle_changed(Throttle("replication_lag", "replication lag 14.0s > 5s"))
    reporter.flush()
    assert client.patches[-1]["throttle"] == {**first, "message": "replication lag 14.0s > 5s"}
    now[0] = 12.6  # the end: at once
    reporter.throttle_changed(None)
    reporter.flush()
    assert client.patches[-1] == {"throttle": None} and len(client.patches) == 4


def test_a_shards_throttle_goes_into_its_own_entry() -> None:
    from chunkwise.engine import Throttle

    client = FakeClient()
    reporter = StatusReporter(client, interval=2.0, clock=lambda: 0.0,  # type: ignore[arg-type]
                              shard=1, shards=2)
    reporter.throttle_changed(Throttle("autovacuum", "autovacuum on t for 3s (scanning heap)",))
    reporter.flush()
    assert client.patches[-1]["shards"]["1"]["throttle"]["reason"] == "Autovacuum"
    assert "throttle" not in client.patches[-1]


def test_a_slow_api_server_never_holds_a_batch_and_gets_the_newest_state_coalesced() -> None:
    """While a patch hangs (the API server frozen), batches go on at once; what they
    report meanwhile goes out as one patch, the newest values winning, and the final
    report waits for it."""
    import threading
    import time

    release, hanging = threading.Event(), threading.Event()

    class HangingClient(FakeClient):
        def patch_status(self, status: dict[str, Any], timeout: float = 5.0) -> None:
            hanging.set()
            release.wait(10)
            super().patch_status(status)

    now = [0.0]
    client = HangingClient()
    reporter = StatusReporter(client, interval=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    reporter.started(state(0))
    assert hanging.wait(5)  # the sender took the first patch and hangs on it
    started = time.monotonic()
    for step in range(1, 9):
        now[0] = step * 1.0
        reporter.batch_committed(report(step * 100))
    assert time.monotonic() - started < 1.0  # no batch waited on the hanging patch
    assert client.patches == []
    release.set()
    reporter.finished(Outcome(ExitCode.DONE, "Completed", "ok", state(1000, done=True)))
    assert len(client.patches) <= 3  # start, then everything after it merged (and the end)
    assert client.patches[0]["worker"]["state"] == "running"
    assert client.patches[-1]["worker"]["state"] == "done"
    assert client.patches[-1]["progress"]["rowsProcessed"] == 1000
    sent = [p["progress"]["rowsProcessed"] for p in client.patches[1:-1]]
    assert sent in ([], [800])  # the newest batch's figures, never an older one's alone


class FlakyClient(FakeClient):
    """Refuses the next ``failures`` patches (the API server away), then takes them."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.refused = 0

    def patch_status(self, status: dict[str, Any], timeout: float = 5.0) -> None:
        if self.failures:
            self.failures -= 1
            self.refused += 1
            raise OSError("connection refused")
        super().patch_status(status)


def applied(patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The status the API server holds after the merge patches it took, in order."""
    def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        result = dict(target)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            elif isinstance(value, dict):
                result[key] = merge(result.get(key) or {}, value)
            else:
                result[key] = value
        return result

    status: dict[str, Any] = {}
    for patch in patches:
        status = merge(status, patch)
    return status


def test_a_refused_patch_is_kept_and_sent_with_the_next_so_no_one_time_update_is_lost() -> None:
    """The end of a throttle and the final report are said once: a patch the API server
    refused (three times here) is retried, merged under what came since, until taken."""
    from chunkwise.engine import Throttle

    client = FlakyClient()
    reporter = StatusReporter(client, interval=2.0, clock=lambda: 0.0,  # type: ignore[arg-type]
                              retry_backoff=(0.01, 0.05))
    reporter.started(state(0))
    reporter.throttle_changed(Throttle("replication_lag", "replication lag 12.3s > 5s"))
    assert reporter.flush(5)
    assert applied(client.patches)["throttle"]["reason"] == "ReplicationLag"
    client.failures = 3
    reporter.throttle_changed(None)  # said once, and refused
    reporter.finished(Outcome(ExitCode.HALTED, "FailedRowsExceeded", "11 > 10", state(900)))
    status = applied(client.patches)
    assert "throttle" not in status  # the end of the throttle was not lost
    assert status["worker"] == {"state": "halted", "reason": "FailedRowsExceeded",
                                "message": "11 > 10", "exitCode": 65,
                                "pod": ""}  # "pod" from the start: a merge patch keeps it
    assert status["progress"]["rowsProcessed"] == 900
    assert client.refused == 3


def test_a_patch_the_api_server_will_never_take_is_dropped_not_retried_for_ever() -> None:
    import urllib.error

    class InvalidFirst(FakeClient):
        def patch_status(self, status: dict[str, Any], timeout: float = 5.0) -> None:
            if not self.fail:
                self.fail = True
                raise urllib.error.HTTPError("https://api/x", 422, "Unprocessable Entity",
                                             None, None)  # type: ignore[arg-type]
            self.patches.append(status)

    client = InvalidFirst()
    reporter = StatusReporter(client, clock=lambda: 0.0,  # type: ignore[arg-type]
                              retry_backoff=(0.01, 0.05))
    reporter.started(state(0))
    assert reporter.flush(5)
    assert client.patches == []  # the invalid one is not sent again
    reporter.finished(Outcome(ExitCode.DONE, "Completed", "ok", state(1000, done=True)))
    assert [p["worker"]["state"] for p in client.patches] == ["done"]


def test_the_final_report_goes_to_the_termination_message(tmp_path: Any) -> None:
    """The kubelet keeps it in the pod's status: the operator reads the verdict there
    when the last patch was lost. Cut to the kubelet's 4096 bytes, still JSON."""
    import json

    from chunkwise.worker import TerminationMessage

    path = tmp_path / "termination-log"
    found = TerminationMessage.from_environment({
        "CHUNKWISE_TERMINATION_LOG": str(path), "CHUNKWISE_SHARDS": "4",
        "JOB_COMPLETION_INDEX": "2"})
    assert found is not None
    found.finished(Outcome(ExitCode.HALTED, "FailedRowsExceeded", "11 rows failed, more "
                           "than haltOn.failedRows=10", state(900)))
    assert json.loads(path.read_text()) == {
        "state": "halted", "exitCode": 65, "reason": "FailedRowsExceeded",
        "message": "11 rows failed, more than haltOn.failedRows=10", "shard": 2,
        "rowsProcessed": 900, "rowsEstimated": 1000}
    TerminationMessage(path).finished(Outcome(ExitCode.ERROR, "Unexpected", "é\n" * 5000))
    report = json.loads(path.read_text())
    assert len(path.read_bytes()) <= 4096 and report["message"].startswith("é\n")
    assert report["exitCode"] == 1 and "shard" not in report
    assert TerminationMessage.from_environment({}) is None  # outside a Job: nothing written


def test_a_delayed_shard_patch_never_lowers_the_runs_progress() -> None:
    """Two shards' workers patch one status. Shard 0's patch, with the run's totals as it
    read them (1,000 rows), hangs while shard 1's newer one (1,100) lands; then shard 0's
    lands. The run's progress, as the status shows it after each patch (and the operator
    derives it from the shards' entries), never goes down."""
    import threading

    from chunkwise.operator.conditions import shards_progress

    server: dict[str, Any] = {}
    versions: list[int] = []
    lock = threading.Lock()
    release, hanging = threading.Event(), threading.Event()

    class Shard(FakeClient):
        def __init__(self, hang: bool) -> None:
            super().__init__()
            self.hang = hang

        def patch_status(self, status: dict[str, Any], timeout: float = 5.0) -> None:
            if self.hang:
                self.hang = False
                hanging.set()
                release.wait(10)
            with lock:
                server.update(applied([server, status]))
                derived = shards_progress(server)  # what the operator writes, if anything
                if derived is not None:
                    server["progress"] = derived
                versions.append(int((server.get("progress") or {}).get("rowsProcessed", 0)))

    def shard_state(own: int, totals: int) -> CheckpointState:
        mine = state(own)
        mine.run_totals = CheckpointState(None, None, 2000, Tally(totals, 0, 0), 10, 0.0,
                                          False)
        return mine

    zero = StatusReporter(Shard(hang=True), clock=lambda: 0.0,  # type: ignore[arg-type]
                          shard=0, shards=2)
    one = StatusReporter(Shard(hang=False), clock=lambda: 0.0,  # type: ignore[arg-type]
                         shard=1, shards=2)
    zero.started(shard_state(500, 1000))
    assert hanging.wait(5)
    one.started(shard_state(600, 1100))
    assert one.flush(5)
    release.set()
    assert zero.flush(5)
    assert versions == sorted(versions) and versions[-1] == 1100, versions


def test_every_report_says_its_run(tmp_path: Any) -> None:
    """So the operator can tell a late report from an earlier run's pod (CHUNKWISE_RUN,
    which the operator sets on the Job's pods)."""
    import json

    from chunkwise.worker import TerminationMessage

    client = FakeClient()
    reporter = StatusReporter(client, clock=lambda: 0.0, run=2)  # type: ignore[arg-type]
    reporter.started(state(0))
    assert reporter.flush(5)
    reporter.finished(Outcome(ExitCode.DONE, "Completed", "ok", state(1000, done=True)))
    assert [p["worker"]["run"] for p in client.patches] == [2, 2]
    found = TerminationMessage.from_environment({
        "CHUNKWISE_TERMINATION_LOG": str(tmp_path / "log"), "CHUNKWISE_RUN": "2"})
    assert found is not None
    found.finished(Outcome(ExitCode.DONE, "Completed", "ok", state(1000, done=True)))
    assert json.loads((tmp_path / "log").read_text())["run"] == 2
