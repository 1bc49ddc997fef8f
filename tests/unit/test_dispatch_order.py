"""The order alerts leave in: the most severe first, whatever order they were queued in."""

from datetime import UTC, datetime, timedelta

from monitors.alerts.dispatch import plan_messages
from monitors.alerts.samples import sample_anomaly
from monitors.rules.kinds import KINDS, severity_rank
from monitors.store.outbox import OutboxItem

GLOBAL = "https://graph.microsoft.com"
START = datetime(2026, 11, 20, tzinfo=UTC)


def _queued(kind: str, scope: str, minute: int, run: str) -> OutboxItem:
    payload = sample_anomaly(kind).to_json()
    payload["scope"] = scope
    return OutboxItem(kind, "opened", run, START + timedelta(minutes=minute), payload, id=kind)


def test_a_critical_policy_problem_queued_last_is_sent_before_a_high_monitor_problem():
    assert severity_rank("provisioning_client_missing") < severity_rank("monitor_job_failing")
    items = [
        _queued("monitor_job_failing", "monitor", 0, "r1"),
        _queued("etg_missing", "device", 1, "r2"),
        _queued("provisioning_client_missing", "tenant", 2, "r3"),
    ]
    sent = [m.items[0].payload["kind"] for m in plan_messages(items, 5, GLOBAL)]
    assert sent == ["provisioning_client_missing", "monitor_job_failing", "etg_missing"]


def test_every_kind_has_a_rank_and_unknown_kinds_go_last():
    ranks = {kind: severity_rank(kind) for kind in KINDS}
    assert all(rank < severity_rank("not_a_kind") for rank in ranks.values())
