from datetime import UTC, datetime, timedelta

from monitors.models import Clear, Finding, NotEvaluated, Scope, Status, Subject
from monitors.rules.lifecycle import Change, reconcile

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SUBJECT = Subject(Scope.POLICY, policy_id="p1", policy_name="Standard")


def finding(text="broken"):
    return Finding("etg_owner_missing", SUBJECT, text, "fix it", {"n": text})


def store(transitions, db=None):
    db = dict(db or {})
    for t in transitions:
        db[t.anomaly.key] = t.anomaly
    return db


def test_first_finding_opens_and_alerts():
    [t] = reconcile({}, [finding()], T0)
    assert t.change is Change.OPENED and t.alerts
    assert t.anomaly.status is Status.OPEN
    assert t.anomaly.first_seen == T0 == t.anomaly.last_seen


def test_repeated_finding_updates_one_record_without_alerting():
    db = store(reconcile({}, [finding()], T0))
    [t] = reconcile(db, [finding("still broken")], T0 + timedelta(hours=1))
    assert t.change is Change.UPDATED and not t.alerts
    assert t.anomaly.first_seen == T0
    assert t.anomaly.last_seen == T0 + timedelta(hours=1)
    assert t.anomaly.explanation == "still broken"
    assert len(store([t], db)) == 1


def test_clear_resolves_open_anomaly_and_keeps_history():
    db = store(reconcile({}, [finding()], T0))
    [t] = reconcile(db, [Clear("etg_owner_missing", SUBJECT, "owner restored")], T0 + timedelta(1))
    assert t.change is Change.RESOLVED and t.alerts
    assert t.anomaly.status is Status.RESOLVED
    assert t.anomaly.resolved_at == T0 + timedelta(1)
    assert [h["status"] for h in t.anomaly.history] == ["open", "resolved"]
    assert t.anomaly.history[-1]["why"] == "owner restored"


def test_not_evaluated_never_opens_or_resolves():
    db = store(reconcile({}, [finding()], T0))
    assert reconcile(db, [NotEvaluated("etg_owner_missing", SUBJECT)], T0) == []
    assert reconcile({}, [NotEvaluated("etg_owner_missing", SUBJECT)], T0) == []


def test_clear_without_stored_anomaly_changes_nothing():
    assert reconcile({}, [Clear("etg_owner_missing", SUBJECT)], T0) == []


def test_resolved_anomaly_that_returns_is_reopened_not_duplicated():
    db = store(reconcile({}, [finding()], T0))
    db = store(reconcile(db, [Clear("etg_owner_missing", SUBJECT)], T0 + timedelta(1)), db)
    [t] = reconcile(db, [finding()], T0 + timedelta(2))
    assert t.change is Change.REOPENED and t.alerts
    assert t.anomaly.first_seen == T0 and t.anomaly.resolved_at is None
    assert len(store([t], db)) == 1


def test_suppressed_finding_is_recorded_but_silent_and_returns_to_open_on_expiry():
    [t] = reconcile({}, [finding()], T0, suppressed=lambda a: "planned migration")
    assert t.anomaly.status is Status.SUPPRESSED and not t.alerts
    db = store([t])
    [t2] = reconcile(db, [finding()], T0 + timedelta(2))
    assert t2.change is Change.UNSUPPRESSED and t2.alerts
    assert t2.anomaly.status is Status.OPEN


def test_resolving_a_suppressed_anomaly_does_not_alert():
    db = store(reconcile({}, [finding()], T0, suppressed=lambda a: "known"))
    [t] = reconcile(db, [Clear("etg_owner_missing", SUBJECT)], T0 + timedelta(1))
    assert t.anomaly.status is Status.RESOLVED and not t.alerts


def test_reconcile_does_not_mutate_stored_records():
    db = store(reconcile({}, [finding()], T0))
    before = list(db[next(iter(db))].history)
    reconcile(db, [Clear("etg_owner_missing", SUBJECT)], T0 + timedelta(1))
    assert db[next(iter(db))].history == before
    assert db[next(iter(db))].status is Status.OPEN
