"""The simulated-day benchmark's harness: its scoring against the ground truth, and a tiny day
run end to end through the same code (targets and timings live in `make bench`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bench.day import SentAlert, mode_figures, score, simulate, targets
from devtools.simtenant.day import Truth, generate_day_scenario, ground_truth

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def truth(device: str, mode: str, kinds: set[str], since: float | None) -> Truth:
    """A deployment whose anomaly (if any) began ``since`` minutes in, the report showing it
    five minutes later."""
    family = None if not kinds else ("etg" if min(kinds).startswith("etg") else min(kinds))
    when = at(since) if since is not None else None
    report_at = when + timedelta(minutes=5) if when else None
    return Truth(device, f"DEV-{device}", mode, family, frozenset(kinds), when, when, report_at)


def opened(
    kind: str, device: str | None, sent: float | None, change: str = "opened", queued: float = 0
) -> SentAlert:
    """An outbox row queued at ``queued`` (default: when sent) and sent at ``sent`` minutes."""
    created = at(queued or sent or 0)
    return SentAlert(
        change, kind, device, f"DEV-{device}", created, at(sent) if sent is not None else None
    )


TRUTH = {
    "a": truth("a", "missing", {"etg_missing", "etg_late"}, since=10),
    "b": truth("b", "missing", {"etg_missing", "etg_late"}, since=20),
    "c": truth("c", "healthy", set(), since=None),
    "d": truth("d", "failed", {"deployment_failed"}, since=30),
    "e": truth("e", "removed", {"etg_removed"}, since=100),
}


def test_latencies_are_measured_from_the_event_and_from_the_report_per_kind() -> None:
    alerts = [opened("etg_missing", "a", 22), opened("etg_missing", "b", 50)]
    result = score(alerts, {k: TRUTH[k] for k in "ab"}, at(600))
    figures = result["kinds"]["etg_missing"]
    assert figures["from_event_min"] == {"n": 2, "median": 21.0, "p95": 30.0, "max": 30.0}
    assert figures["from_report_min"] == {"n": 2, "median": 16.0, "p95": 25.0, "max": 25.0}
    assert targets(result)["etg_missing_p95_from_report_min"] == 25.0
    assert targets(result)["etg_missing_p95_ok"] is False


def test_alerts_the_ground_truth_does_not_call_for_are_false_alarms() -> None:
    alerts = [
        opened("etg_missing", "c", 40),  # healthy device
        opened("deployment_failed", "a", 40),  # wrong family for a missing join
        opened("etg_removed", "e", 90),  # before the removal happened
        opened("etg_owner_missing", None, 40),  # the generated tenant has no policy problem
        opened("monitor_job_failing", None, 40),  # health, not a finding
    ]
    result = score(alerts, TRUTH, at(600))
    assert result["false_alarms"] == 4
    assert {a["why"] for a in result["false_alarm_examples"]} >= {
        "healthy deployment needs no alert",
        "alerted before it happened",
        "tenant or policy alert",
    }
    assert result["monitor_job_failing"] == 1
    assert targets(result)["no_false_alarms"] is False


def test_a_refined_kind_is_one_opening_and_a_reopening_is_a_second() -> None:
    alerts = [
        opened("etg_missing", "a", 22),
        opened("etg_late", "a", 40, change="resolved"),  # the refinement's history, no opening
        opened("etg_missing", "b", 30),
        opened("etg_late", "b", 45, change="reopened"),
    ]
    result = score(alerts, {k: TRUTH[k] for k in "ab"}, at(600))
    assert result["second_openings"] == 1
    assert result["openings"] == 3
    # Latency is the first opening's.
    assert result["kinds"]["etg_missing"]["from_event_min"]["max"] == 12.0
    assert "etg_late" not in result["kinds"]


def test_anomalies_never_alerted_are_missed_once_they_had_time_to_settle() -> None:
    alerts = [opened("etg_missing", "a", 22), opened("deployment_failed", "d", None, queued=40)]
    result = score(alerts, TRUTH, at(200))
    # b is missed; d was queued but never sent; e happened too recently to be owed an alert.
    assert result["missed"] == 1
    assert [m["device_name"] for m in result["missed_examples"]] == ["DEV-b"]
    assert result["unsent_openings"] == 1
    assert score(alerts, TRUTH, at(300))["missed"] == 2  # now e is owed one too


# --- a tiny day, end to end -------------------------------------------------------------------

MODES = ("missing", "healthy", "failed", "healthy", "late", "healthy")


@pytest.fixture(scope="module")
def tiny_day(azurite: Any) -> tuple[Any, dict[str, Truth], Any]:
    scenario = generate_day_scenario(12, 1.5, seed=3, modes=MODES)
    spec = ground_truth(scenario)
    day = simulate(scenario, azurite.connection_string, early=False, hours=3.5)
    return scenario, spec, day


@pytest.mark.integration
def test_tiny_day_scores_what_left_the_outbox_against_each_devices_spec(tiny_day: Any) -> None:
    scenario, spec, day = tiny_day
    figures = mode_figures(day, spec, early=False)
    assert figures["early_conclusion"] is False
    assert figures["webhook_errors"] == 0
    assert figures["job_runs"]["NOTIFICATIONS_SCHEDULE"] == 3.5 * 60 + 1
    # Every alert marked sent reached the Teams channel at that sim minute.
    sent = [a.sent_at for a in day.alerts if a.sent_at is not None]
    assert sent and set(sent) <= set(day.teams_received)
    # The failed deployments' latencies, recomputed from their specs alone.
    failed = [d for d in scenario.devices if d.note == "failed"]
    expected = sorted(
        (a.sent_at - d.enrolled_at - timedelta(seconds=d.deployment.duration_s)).total_seconds()
        / 60
        for d in failed
        for a in day.alerts
        if a.managed_device_id == d.managed_device_id
        and a.change == "opened"
        and a.sent_at is not None
    )
    assert len(expected) == len(failed) == 2
    shown = figures["kinds"]["deployment_failed"]["from_event_min"]
    assert (shown["n"], shown["max"]) == (2, round(expected[-1], 1))
    lagged = figures["kinds"]["deployment_failed"]["from_report_min"]
    assert lagged["max"] < shown["max"]  # the report showed the failure minutes after it
    # The two never-joined deployments were alerted as a missing or late join.
    missing = {d.managed_device_id for d in scenario.devices if d.note == "missing"}
    alerted = {
        a.managed_device_id
        for a in day.alerts
        if a.change == "opened" and a.kind in ("etg_missing", "etg_late")
    }
    assert missing <= alerted
    assert figures["missed"] == 0
