from datetime import UTC, datetime, timedelta

import pytest

from monitors.jobs.suppressions import new_suppression, parse_expiry
from monitors.models import Anomaly, Finding, Scope, Status, Subject
from monitors.rules.lifecycle import Change, reconcile
from monitors.rules.suppression import (
    Suppression,
    SuppressionScope,
    apply_suppressions,
    checker,
)

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def anomaly(kind="etg_missing", status=Status.OPEN, **subject):
    base = {
        "managed_device_id": "md-1",
        "device_name": "PC-1",
        "serial_number": "SN1",
        "policy_id": "pol-1",
        "policy_name": "Standard",
    }
    base.update(subject)
    return Anomaly(
        kind, Subject(Scope.DEVICE, deployment_key="k", **base), status, NOW, NOW, "x", "y", {}
    )


def sup(scope, value, expires=None):
    return Suppression("s-1", scope, value, "known issue", NOW, expires)


@pytest.mark.parametrize(
    "scope,value",
    [
        (SuppressionScope.DEVICE, "md-1"),
        (SuppressionScope.DEVICE, "pc-1"),
        (SuppressionScope.DEVICE, "SN1"),
        (SuppressionScope.POLICY, "pol-1"),
        (SuppressionScope.POLICY, "standard"),
        (SuppressionScope.KIND, "etg_missing"),
    ],
)
def test_suppression_matches_device_policy_or_kind_by_id_or_name(scope, value):
    assert sup(scope, value).matches(anomaly())


def test_suppression_does_not_match_other_subjects():
    assert not sup(SuppressionScope.DEVICE, "PC-2").matches(anomaly())
    assert not sup(SuppressionScope.KIND, "etg_late").matches(anomaly())


def test_open_anomaly_becomes_suppressed_with_reason_in_history():
    [t] = apply_suppressions([anomaly()], [sup(SuppressionScope.KIND, "etg_missing")], NOW)
    assert t.anomaly.status is Status.SUPPRESSED and t.change is Change.SUPPRESSED
    assert not t.alerts
    assert "known issue" in t.anomaly.history[-1]["why"]


def test_expired_suppression_returns_anomaly_to_open_and_alerts():
    expired = sup(SuppressionScope.KIND, "etg_missing", expires=NOW - timedelta(seconds=1))
    [t] = apply_suppressions([anomaly(status=Status.SUPPRESSED)], [expired], NOW)
    assert t.anomaly.status is Status.OPEN and t.alerts


def test_resolved_anomalies_are_left_alone():
    assert (
        apply_suppressions(
            [anomaly(status=Status.RESOLVED)], [sup(SuppressionScope.KIND, "etg_missing")], NOW
        )
        == []
    )


def test_reason_is_mandatory_and_expiry_is_parsed():
    with pytest.raises(ValueError, match="reason"):
        new_suppression(SuppressionScope.KIND, "etg_late", "  ", NOW, None)
    assert parse_expiry("7d", NOW) == NOW + timedelta(days=7)
    assert parse_expiry("12h", NOW) == NOW + timedelta(hours=12)
    assert parse_expiry("2026-12-01T00:00Z", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="past"):
        parse_expiry("2020-01-01T00:00Z", NOW)
    with pytest.raises(ValueError):
        parse_expiry("soon", NOW)


def test_a_suppression_is_recorded_alike_by_the_suppression_job_and_by_a_scan_finding_it_again():
    stored = anomaly()
    suppressions = [sup(SuppressionScope.KIND, "etg_missing")]
    [by_job] = apply_suppressions([stored], suppressions, NOW)
    again = Finding(stored.kind, stored.subject, stored.explanation, stored.fix, stored.evidence)
    [by_scan] = reconcile({stored.key: stored}, [again], NOW, suppressed=checker(suppressions, NOW))
    assert by_job.change is by_scan.change is Change.SUPPRESSED
    assert by_job.anomaly.history == by_scan.anomaly.history != stored.history
    assert by_job.anomaly.status is by_scan.anomaly.status is Status.SUPPRESSED
