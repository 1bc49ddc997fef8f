"""Early conclusion of etg_missing from live membership, before the audit log settles: the
rules, the refinement when it settles, and how the lifecycle records it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from monitors.models import (
    Anomaly,
    Clear,
    Deployment,
    DeploymentFacts,
    DeploymentStatus,
    EarlyCheck,
    Finding,
    MembershipEvent,
    MembershipOp,
    NotEvaluated,
    Policy,
    PolicyMatch,
    Status,
    Unverified,
    UnverifiedReason,
)
from monitors.rules.enrollment import (
    false_alarm_at,
    judge,
    needs_membership_check,
    opened_early,
)
from monitors.rules.lifecycle import Change, reconcile

ENROLLED = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
COMPLETED = ENROLLED + timedelta(minutes=20)
GROUP, OBJ = "etg-1", "device-object-1"
POLICY = PolicyMatch(Policy("pol-1", "Standard", "t", 60), (GROUP,), "enrollmentProfileName")
GRACE = timedelta(minutes=10)
LATENCY = timedelta(minutes=60)
AT_11 = COMPLETED + timedelta(minutes=11)


def event(op, minutes, exact=True, actor="Intune Provisioning Client"):
    at = COMPLETED + timedelta(minutes=minutes)
    source = "audit" if exact else "delta"
    return MembershipEvent(op, GROUP, OBJ, at, exact, source, f"{op}{minutes}{source}", actor)


def facts(now, events=(), member=None, grace=GRACE, early=None):
    deployment = Deployment(
        "md-1",
        ENROLLED,
        DeploymentStatus.SUCCESS,
        "Success",
        device_name="PC-1",
        duration_seconds=int((COMPLETED - ENROLLED).total_seconds()),
    )
    return DeploymentFacts(
        deployment,
        POLICY,
        OBJ,
        tuple(events),
        now - LATENCY,
        member,
        membership_grace=grace,
        early_check=early,
    )


def verdict(j, kind):
    return next(v for v in j.verdicts if v.kind == kind)


def early_finding(now=AT_11):
    j = judge(facts(now, member=False), now)
    found = verdict(j, "etg_missing")
    assert isinstance(found, Finding)
    return j, found


def standing(found: Finding) -> EarlyCheck:
    """What the scan reads back from the anomaly the early finding opened."""
    ev = found.evidence
    return EarlyCheck(
        datetime.fromisoformat(str(ev["checked_at"])),
        datetime.fromisoformat(str(ev["audit_searched_until"])),
    )


# --- when the live check is asked ------------------------------------------------------------


def test_live_check_is_asked_before_the_audit_settles_once_the_grace_has_passed():
    assert needs_membership_check(facts(AT_11), AT_11)
    assert needs_membership_check(facts(COMPLETED + GRACE), COMPLETED + GRACE)


def test_live_check_is_not_asked_inside_the_grace():
    at = COMPLETED + GRACE - timedelta(seconds=1)
    assert not needs_membership_check(facts(at), at)


def test_live_check_is_not_asked_early_when_early_conclusion_is_off():
    assert not needs_membership_check(facts(AT_11, grace=None), AT_11)


def test_live_check_is_not_asked_once_an_add_was_observed_through_delta():
    seen = event(MembershipOp.ADD, 3, exact=False)
    assert not needs_membership_check(facts(AT_11, [seen]), AT_11)


# --- the early finding -----------------------------------------------------------------------


def test_not_a_member_past_the_grace_with_no_join_seen_opens_etg_missing_early():
    j, found = early_finding()
    ev = found.evidence
    assert ev["member_now"] is False and ev["early"] is True and ev["audit_settled"] is False
    assert ev["checked_at"] == AT_11.isoformat()
    assert ev["audit_searched_until"] == (AT_11 - LATENCY).isoformat()
    assert ev["grace_minutes"] == 10
    assert f"At {AT_11.isoformat()} the device was not a member" in found.explanation
    assert "not settled yet" in found.explanation
    # etg_late waits for the audit log: a join may still appear, late or on time after all.
    late = verdict(j, "etg_late")
    assert isinstance(late, NotEvaluated) and late.pending
    assert j.state == "pending"


def test_not_a_member_inside_the_grace_is_pending():
    at = COMPLETED + timedelta(minutes=5)
    j = judge(facts(at, member=False), at)
    assert not any(isinstance(v, Finding) for v in j.verdicts)
    assert j.state == "pending"


def test_a_member_now_before_the_audit_settles_is_pending_not_missing():
    j = judge(facts(AT_11, member=True), AT_11)
    assert not any(isinstance(v, Finding) for v in j.verdicts)
    assert j.state == "pending"


def test_early_conclusion_off_waits_for_the_audit_log():
    j = judge(facts(AT_11, member=False, grace=None), AT_11)
    assert not any(isinstance(v, Finding) for v in j.verdicts)
    assert j.state == "pending"


def test_an_unreadable_live_check_is_unverified_not_missing():
    unreadable = Unverified("checkMemberGroups", UnverifiedReason.THROTTLED, "retries ran out")
    j = judge(facts(AT_11, member=unreadable), AT_11)
    assert not any(isinstance(v, Finding) for v in j.verdicts)
    assert j.state == "unverified"


def test_early_evidence_stays_the_same_on_later_scans():
    _, first = early_finding()
    later = AT_11 + timedelta(minutes=20)
    again = verdict(judge(facts(later, member=False, early=standing(first)), later), "etg_missing")
    assert isinstance(again, Finding)
    assert again.evidence == first.evidence
    assert again.explanation == first.explanation


def test_an_add_observed_before_completion_proves_on_time_without_the_audit_log():
    seen = event(MembershipOp.ADD, -2, exact=False)
    j = judge(facts(AT_11, [seen]), AT_11)
    assert isinstance(verdict(j, "etg_missing"), Clear)
    assert isinstance(verdict(j, "etg_late"), Clear)
    assert j.state == "conclusive"


# --- refinement when the audit log settles ---------------------------------------------------

SETTLED_AT = COMPLETED + LATENCY + timedelta(minutes=5)


def test_settled_with_no_join_confirms_it_in_the_settled_form_with_one_history_note():
    _, first = early_finding()
    j = judge(facts(SETTLED_AT, member=False, early=standing(first)), SETTLED_AT)
    found = verdict(j, "etg_missing")
    assert isinstance(found, Finding)
    ev = found.evidence
    assert ev["audit_settled"] is True and ev["member_now"] is False
    assert ev["join"] is None and ev["late_join"] is None
    assert ev["audit_searched_until"] == (SETTLED_AT - LATENCY).isoformat()
    assert "early" not in ev and ev["checked_at"] == first.evidence["checked_at"]
    assert found.note and found.note.startswith("confirmed by the audit log")
    assert j.state == "conclusive"


def test_settled_without_an_early_alert_keeps_todays_evidence_and_no_note():
    j = judge(facts(SETTLED_AT, member=False), SETTLED_AT)
    found = verdict(j, "etg_missing")
    assert isinstance(found, Finding)
    assert found.note is None and "checked_at" not in found.evidence
    assert found.evidence["audit_settled"] is True


def test_joined_and_removed_before_the_check_refines_to_removed_on_the_same_anomaly():
    _, first = early_finding()
    events = [event(MembershipOp.ADD, -5), event(MembershipOp.REMOVE, 4, actor="admin@contoso")]
    j = judge(facts(SETTLED_AT, events, early=standing(first)), SETTLED_AT, previously_missing=True)
    found = verdict(j, "etg_missing")
    assert isinstance(found, Finding)
    assert found.evidence["refined"] == "etg_removed"
    assert found.evidence["removal"]["actor"] == "admin@contoso"
    assert found.note == (
        f"refined: joined at {events[0].at.isoformat()}, removed at "
        f"{events[1].at.isoformat()} by admin@contoso"
    )
    assert "was removed at" in found.explanation
    removed = verdict(j, "etg_removed")
    assert isinstance(removed, NotEvaluated) and not removed.pending and not removed.unverified
    assert removed.reason == "recorded on the etg_missing anomaly"


def test_joined_and_removed_before_completion_refines_too():
    _, first = early_finding()
    events = [event(MembershipOp.ADD, -8), event(MembershipOp.REMOVE, -3, actor="admin")]
    j = judge(facts(SETTLED_AT, events, member=False, early=standing(first)), SETTLED_AT)
    found = verdict(j, "etg_missing")
    assert isinstance(found, Finding) and found.evidence["refined"] == "etg_removed"
    assert isinstance(verdict(j, "etg_removed"), NotEvaluated)


def test_a_removal_without_an_early_alert_still_opens_etg_removed():
    events = [event(MembershipOp.ADD, -5), event(MembershipOp.REMOVE, 4, actor="admin")]
    j = judge(facts(SETTLED_AT, events), SETTLED_AT)
    assert isinstance(verdict(j, "etg_removed"), Finding)
    assert isinstance(verdict(j, "etg_missing"), Clear)


def test_member_at_completion_after_all_resolves_as_a_false_alarm():
    _, first = early_finding()
    events = [event(MembershipOp.ADD, -3)]
    at = AT_11 + timedelta(minutes=9)
    assert needs_membership_check(facts(at, events, early=standing(first)), at)
    j = judge(facts(at, events, member=True, early=standing(first)), at)
    cleared = verdict(j, "etg_missing")
    assert isinstance(cleared, Clear) and cleared.false_alarm
    assert cleared.reason == (
        f"was a member at completion after all (the live check at {AT_11.isoformat()} came "
        "before directory replication)"
    )
    assert isinstance(verdict(j, "etg_late"), Clear)


def test_a_join_before_completion_while_still_not_a_member_waits_for_the_removal():
    _, first = early_finding()
    events = [event(MembershipOp.ADD, -3)]
    j = judge(facts(SETTLED_AT, events, member=False, early=standing(first)), SETTLED_AT)
    waiting = verdict(j, "etg_missing")
    assert isinstance(waiting, NotEvaluated) and waiting.pending
    assert "removal not seen yet" in waiting.reason


def test_joined_late_after_the_early_alert_resolves_as_late_and_excuses_etg_late():
    _, first = early_finding()
    joined = [event(MembershipOp.ADD, 13, actor="admin")]
    j = judge(facts(SETTLED_AT, joined, early=standing(first)), SETTLED_AT, previously_missing=True)
    cleared = verdict(j, "etg_missing")
    assert isinstance(cleared, Clear) and not cleared.false_alarm
    assert cleared.reason.startswith(f"joined the ETG at {joined[0].at.isoformat()}, 13 min after")
    assert isinstance(verdict(j, "etg_late"), Clear)


def test_a_join_observed_after_the_early_alert_waits_for_the_audit_log():
    _, first = early_finding()
    seen = [event(MembershipOp.ADD, 13, exact=False)]
    at = COMPLETED + timedelta(minutes=15)
    j = judge(facts(at, seen, early=standing(first)), at, previously_missing=True)
    assert isinstance(verdict(j, "etg_missing"), NotEvaluated)
    assert j.state == "pending"


# --- the lifecycle: one opening, notes once, false alarms marked -----------------------------


def anomaly_of(found: Finding, at: datetime) -> Anomaly:
    [opened] = reconcile({}, [found], at)
    assert opened.change is Change.OPENED
    return opened.anomaly


def test_refinement_is_an_update_with_one_history_line_and_no_alert():
    _, first = early_finding()
    stored = anomaly_of(first, AT_11)
    events = [event(MembershipOp.ADD, -5), event(MembershipOp.REMOVE, 4, actor="admin")]
    j = judge(facts(SETTLED_AT, events, early=standing(first)), SETTLED_AT)
    [t] = reconcile({stored.key: stored}, [verdict(j, "etg_missing")], SETTLED_AT)
    assert t.change is Change.UPDATED and not t.alerts
    assert [h["why"] for h in t.anomaly.history][-1].startswith("refined: joined at")
    later = SETTLED_AT + timedelta(hours=2)
    j2 = judge(facts(later, events, early=standing(first)), later)
    again = reconcile({stored.key: t.anomaly}, [verdict(j2, "etg_missing")], later)
    assert all(len(x.anomaly.history) == len(t.anomaly.history) for x in again)


def test_a_false_alarm_resolution_is_marked_and_counted():
    _, first = early_finding()
    stored = anomaly_of(first, AT_11)
    assert opened_early(stored) and false_alarm_at(stored) is None
    joined = [event(MembershipOp.ADD, -3)]
    j = judge(facts(SETTLED_AT, joined, member=True, early=standing(first)), SETTLED_AT)
    [t] = reconcile({stored.key: stored}, [verdict(j, "etg_missing")], SETTLED_AT)
    assert t.change is Change.RESOLVED and t.anomaly.status is Status.RESOLVED
    assert t.anomaly.history[-1]["false_alarm"] is True
    assert false_alarm_at(t.anomaly) == SETTLED_AT


def test_a_resolution_that_is_no_false_alarm_is_not_marked():
    _, first = early_finding()
    stored = anomaly_of(first, AT_11)
    joined = [event(MembershipOp.ADD, 13, actor="admin")]
    j = judge(facts(SETTLED_AT, joined, early=standing(first)), SETTLED_AT, previously_missing=True)
    [t] = reconcile({stored.key: stored}, [verdict(j, "etg_missing")], SETTLED_AT)
    assert t.change is Change.RESOLVED
    assert "false_alarm" not in t.anomaly.history[-1] and false_alarm_at(t.anomaly) is None


def test_an_etg_missing_concluded_from_the_settled_audit_log_is_not_an_early_alert():
    found = verdict(judge(facts(SETTLED_AT, member=False), SETTLED_AT), "etg_missing")
    assert isinstance(found, Finding)
    assert not opened_early(anomaly_of(found, SETTLED_AT))
    assert opened_early(anomaly_of(early_finding()[1], AT_11))
    other = dataclasses.replace(anomaly_of(early_finding()[1], AT_11), kind="etg_late")
    assert not opened_early(other)


# --- the weekly summary's line ----------------------------------------------------------------


def test_the_weekly_summary_counts_early_alerts_and_false_alarms_of_its_week():
    from monitors.summary.card import summary_card
    from monitors.summary.compute import IsoWeek, compute_summary
    from monitors.summary.html import render_html

    _, first = early_finding()
    stored = anomaly_of(first, AT_11)
    joined = [event(MembershipOp.ADD, -3)]
    j = judge(facts(SETTLED_AT, joined, member=True, early=standing(first)), SETTLED_AT)
    [t] = reconcile({stored.key: stored}, [verdict(j, "etg_missing")], SETTLED_AT)
    settled = verdict(judge(facts(SETTLED_AT, member=False), SETTLED_AT), "etg_missing")
    assert isinstance(settled, Finding)
    other = dataclasses.replace(
        anomaly_of(settled, SETTLED_AT),
        subject=dataclasses.replace(settled.subject, deployment_key="md-2_x"),
    )
    week = IsoWeek.of(SETTLED_AT)
    summary = compute_summary(week, [], [t.anomaly, other], [], {}, SETTLED_AT)
    assert summary["early_conclusion"] == {"early_alerts": 1, "false_alarms": 1}
    line = "early alerts: 1, false alarms: 1"
    assert any(line in str(b.get("text")) for b in summary_card(summary)["body"])
    assert line in render_html(summary)
    next_week = compute_summary(week.previous(-1), [], [t.anomaly], [], {}, SETTLED_AT)
    assert next_week["early_conclusion"] == {"early_alerts": 0, "false_alarms": 0}


def test_a_summary_stored_before_early_conclusion_renders_without_the_line():
    from monitors.summary.compute import early_line

    assert early_line({"week": "2026-W47"}) is None
