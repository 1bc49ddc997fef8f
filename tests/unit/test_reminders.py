from datetime import UTC, datetime, timedelta

import pytest

from monitors.models import Anomaly, Scope, Status, Subject
from monitors.rules.reminders import due_reminders, open_for

NOW = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def anomaly(device="md-1", opened_hours_ago=30.0, status=Status.OPEN, **fields):
    first = NOW - timedelta(hours=opened_hours_ago)
    a = Anomaly(
        "etg_missing",
        Subject(Scope.DEVICE, managed_device_id=device, deployment_key=device),
        status,
        first,
        NOW,
        "explanation",
        "fix",
        {},
    )
    for name, value in fields.items():
        setattr(a, name, value)
    return a


def test_open_unacknowledged_anomaly_older_than_threshold_is_due():
    a = anomaly()
    assert due_reminders([a], NOW, DAY) == [a]


def test_anomaly_open_less_than_threshold_is_not_due():
    assert due_reminders([anomaly(opened_hours_ago=23.5)], NOW, DAY) == []


def test_threshold_is_inclusive():
    a = anomaly(opened_hours_ago=24)
    assert due_reminders([a], NOW, DAY) == [a]


def test_acknowledged_anomaly_gets_no_reminder():
    acked = anomaly(acknowledged_by="oncall@contoso.com", acknowledged_at=NOW - DAY)
    assert due_reminders([acked], NOW, DAY) == []


@pytest.mark.parametrize("status", [Status.SUPPRESSED, Status.RESOLVED])
def test_suppressed_or_resolved_anomaly_gets_no_reminder(status):
    assert due_reminders([anomaly(status=status)], NOW, DAY) == []


def test_reminded_less_than_a_day_ago_is_not_due_even_with_a_short_threshold():
    a = anomaly(reminded_at=NOW - timedelta(hours=23))
    assert due_reminders([a], NOW, timedelta(hours=1)) == []


def test_reminded_a_day_ago_is_due_again():
    a = anomaly(opened_hours_ago=50, reminded_at=NOW - DAY)
    assert due_reminders([a], NOW, DAY) == [a]


def test_due_reminders_come_oldest_first():
    young, old = anomaly("md-young", 30), anomaly("md-old", 90)
    assert due_reminders([young, old], NOW, DAY) == [old, young]


def test_open_for_measures_from_first_seen():
    assert open_for(anomaly(opened_hours_ago=30), NOW) == timedelta(hours=30)
