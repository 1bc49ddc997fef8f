"""Early etg_missing from live membership, end to end: real scans on the simulated tenant's
clock, state in Azurite. Each test adds one deployment that completes "now" and moves the
clock minute by minute past the grace (10 min) and the audit latency (60 min)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from devtools.simtenant.generate import add_deployments
from monitors.jobs.health import health_report
from monitors.jobs.summary import keep_summary
from monitors.models import Status
from monitors.summary.card import summary_card
from monitors.summary.compute import IsoWeek
from monitors.summary.html import render_html
from tests.helpers import etg_of, in_store, outbox, scan, stored_anomalies

pytestmark = pytest.mark.integration

DURATION_S = 600  # provisioning takes 10 minutes: completion is enrollment + 600 s


class Timeline:
    """One new deployment completing at the moment it is made, and scans at minutes after."""

    def __init__(self, settings: Any, tenant: Any, scenario: Any, membership: list[Any]) -> None:
        self.settings, self.tenant = settings, tenant
        scan(settings, tenant)  # the demo tenant's own deployments, judged once beforehand
        self.completed = tenant.clock.now()
        [spec] = add_deployments(scenario, 1, at=self.completed - timedelta(seconds=DURATION_S))
        spec.deployment = dataclasses.replace(spec.deployment, duration_s=float(DURATION_S))
        spec.membership = membership
        tenant.state.add_devices([spec])
        self.spec, self.etg = spec, etg_of(scenario, spec)
        self.key = f"{spec.managed_device_id}_{spec.enrolled_at:%Y%m%dT%H%M%S}"

    def scan_at(self, minutes: float) -> Any:
        self.tenant.clock.set(self.completed + timedelta(minutes=minutes))
        return scan(self.settings, self.tenant)

    def anomalies(self) -> list[Any]:
        mine = stored_anomalies(self.settings)
        return [a for a in mine if a.subject.deployment_key == self.key]

    def missing(self) -> Any:
        [found] = [a for a in self.anomalies() if a.kind == "etg_missing"]
        return found

    def alerts(self) -> Counter[tuple[str, str]]:
        return Counter(
            (i.change, i.payload.get("kind"))
            for i in outbox(self.settings)
            if i.payload.get("deployment_key") == self.key
        )


def member_event(op: str, offset_s: float, delay_s: float, actor: str = "provisioning_client"):
    from devtools.simtenant.scenario import MembershipEvent

    return MembershipEvent(op, offset_s, None, actor, delay_s, "both")


def before_completion(seconds: float) -> float:
    return DURATION_S - seconds


def test_replication_lag_inside_the_grace_opens_nothing(settings, tenant, scenario):
    t = Timeline(settings, tenant, scenario, [])
    t.scan_at(5)  # not a member, but inside the grace: not asked, not concluded
    assert t.anomalies() == []
    # The add took effect before completion; replication shows it by +12 min, and its audit
    # event comes 30 minutes after it happened.
    tenant.state.add_membership_event(
        t.spec.managed_device_id, "add", before_completion(60), audit_delay_s=1800
    )
    t.scan_at(12)  # a member now, no join in the audit log yet: pending, no alert
    t.scan_at(40)  # the audit event arrived: on time
    assert t.anomalies() == []
    assert t.alerts() == Counter()


def test_replication_lag_beyond_the_grace_alerts_then_resolves_as_a_counted_false_alarm(
    settings, tenant, scenario
):
    t = Timeline(settings, tenant, scenario, [])
    health_before = _health(settings, tenant)["early_conclusion"]
    assert health_before["false_alarms_7d"] == 0
    t.scan_at(11)
    opened = t.missing()
    assert opened.status is Status.OPEN
    assert opened.evidence["early"] is True and opened.evidence["member_now"] is False
    assert opened.evidence["checked_at"] == (t.completed + timedelta(minutes=11)).isoformat()
    # The add was made before completion after all: replication took longer than the grace.
    tenant.state.add_membership_event(
        t.spec.managed_device_id, "add", before_completion(60), audit_delay_s=1200
    )
    t.scan_at(12)  # a member now, the audit log shows nothing yet: the anomaly is left as it is
    assert t.missing().evidence == opened.evidence and t.missing().status is Status.OPEN
    t.scan_at(21)  # the audit event shows the add before completion
    resolved = t.missing()
    assert resolved.status is Status.RESOLVED
    assert resolved.history[-1]["false_alarm"] is True
    assert "was a member at completion after all" in resolved.history[-1]["why"]
    assert t.alerts() == Counter({("opened", "etg_missing"): 1, ("resolved", "etg_missing"): 1})

    health = _health(settings, tenant)["early_conclusion"]
    assert health["false_alarms_7d"] == health_before["false_alarms_7d"] + 1
    assert health["early_alerts_7d"] == health_before["early_alerts_7d"] + 1
    now = tenant.clock.now()
    summary = in_store(settings, lambda store: keep_summary(store, IsoWeek.of(now), now))
    early = summary["early_conclusion"]
    assert early["false_alarms"] == 1 and early["early_alerts"] >= 1
    line = f"early alerts: {early['early_alerts']}, false alarms: 1"
    card_text = [b.get("text", "") for b in summary_card(summary)["body"]]
    assert any(line in text for text in card_text)
    assert line in render_html(summary)


def test_device_added_late_two_minutes_after_the_early_alert_resolves_as_late(
    settings, tenant, scenario
):
    t = Timeline(settings, tenant, scenario, [])
    t.scan_at(11)
    assert t.missing().status is Status.OPEN
    tenant.clock.set(t.completed + timedelta(minutes=13))
    tenant.state.add_member_now(t.etg, t.spec.object_id, actor="admin", audit_delay_s=300)
    t.scan_at(21)
    resolved = t.missing()
    assert resolved.status is Status.RESOLVED
    why = resolved.history[-1]["why"]
    assert "joined the ETG at" in why and "13 min after provisioning completed" in why
    assert "false_alarm" not in resolved.history[-1]
    assert [a.kind for a in t.anomalies()] == ["etg_missing"]  # no etg_late
    assert t.alerts() == Counter({("opened", "etg_missing"): 1, ("resolved", "etg_missing"): 1})


def test_device_removed_after_joining_is_refined_without_a_second_opening_alert(
    settings, tenant, scenario
):
    # Joined before completion, removed 20 s after it; both audit events 50 minutes late.
    membership = [
        member_event("add", before_completion(300), 3000),
        member_event("remove", DURATION_S + 20, 3000, actor="admin"),
    ]
    t = Timeline(settings, tenant, scenario, membership)
    t.scan_at(11)
    assert t.missing().evidence["early"] is True
    t.scan_at(46)  # only the add is visible: not a member now, so the removal is awaited
    assert t.missing().evidence["early"] is True and t.missing().status is Status.OPEN
    t.scan_at(71)
    refined = t.missing()
    assert refined.status is Status.OPEN
    assert refined.evidence["refined"] == "etg_removed"
    assert refined.evidence["removal"]["op"] == "remove"
    assert refined.history[-1]["why"].startswith("refined: joined at")
    assert "was removed at" in refined.explanation
    assert [a.kind for a in t.anomalies()] == ["etg_missing"]  # no etg_removed of its own
    assert t.alerts() == Counter({("opened", "etg_missing"): 1})


def test_audit_events_an_hour_late_alert_at_the_grace_and_refine_when_they_arrive(
    settings, tenant, scenario
):
    # Joined and removed before completion; the audit log shows both 70 minutes later.
    membership = [
        member_event("add", before_completion(300), 4200),
        member_event("remove", before_completion(100), 4200, actor="admin"),
    ]
    t = Timeline(settings, tenant, scenario, membership)
    t.scan_at(11)
    assert t.missing().evidence["early"] is True
    t.scan_at(61)  # settled past completion with nothing in the audit log: confirmed
    confirmed = t.missing()
    assert confirmed.evidence["audit_settled"] is True and "refined" not in confirmed.evidence
    assert confirmed.history[-1]["why"].startswith("confirmed by the audit log")
    t.scan_at(75)  # both events arrived
    refined = t.missing()
    assert refined.status is Status.OPEN and refined.evidence["refined"] == "etg_removed"
    assert [h["why"].split(":")[0] for h in refined.history] == [
        "detected",
        "confirmed by the audit log",
        "refined",
    ]
    assert [a.kind for a in t.anomalies()] == ["etg_missing"]
    assert t.alerts() == Counter({("opened", "etg_missing"): 1})


def test_early_conclusion_off_waits_for_the_audit_log(settings, tenant, scenario):
    off = dataclasses.replace(settings, early_conclusion=False)
    t = Timeline(off, tenant, scenario, [])
    t.scan_at(11)
    t.scan_at(51)
    assert t.anomalies() == []
    t.scan_at(61)
    found = t.missing()
    assert found.status is Status.OPEN and found.evidence["audit_settled"] is True
    assert "early" not in found.evidence and "checked_at" not in found.evidence
    assert t.alerts() == Counter({("opened", "etg_missing"): 1})


def _health(settings: Any, tenant: Any) -> dict[str, Any]:
    now = tenant.clock.now()
    _, report = in_store(settings, lambda store: health_report(store, now, settings.schedules))
    return report
