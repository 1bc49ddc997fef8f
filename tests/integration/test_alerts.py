"""Alerts end to end: anomalies -> outbox (same transaction) -> dispatcher -> simulated Teams."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from monitors.jobs.config_check import check_config
from monitors.scan.pipeline import run_scan
from monitors.store.outbox import OutboxRepository
from tests.helpers import in_store, outbox, run_job, send_alerts

pytestmark = pytest.mark.integration


def headlines(tenant):
    return [m.card["body"][0]["text"] for m in tenant.teams_messages()]


def test_config_findings_alert_one_card_each(alert_settings, tenant):
    run_job(alert_settings, tenant, check_config)
    result = send_alerts(alert_settings, tenant)
    assert result.messages_sent == 4 and result.items_sent == 4
    assert sorted(headlines(tenant)) == [
        "ETG owner missing: Contoso - Finance",
        "ETG unusable: Contoso - Engineering",
        "Policy apps or scripts not ready: Contoso - Standard Laptops",
        "Policy has no ETG: Contoso - Kiosk",
    ]
    assert outbox(alert_settings, "pending") == []


def test_a_scan_that_opens_many_anomalies_sends_one_digest(alert_settings, tenant):
    run_job(alert_settings, tenant, run_scan)
    result = send_alerts(alert_settings, tenant)
    assert result.messages_sent == 1 and result.items_sent == 12
    assert headlines(tenant) == ["12 ETG anomalies opened"]
    # Nothing is sent twice: the next round finds nothing due.
    assert send_alerts(alert_settings, tenant).messages_sent == 0
    assert len(tenant.teams_messages()) == 1


def test_resolution_alerts_after_the_fix(alert_settings, tenant, scenario):
    run_job(alert_settings, tenant, check_config)
    send_alerts(alert_settings, tenant)
    finance = next(p for p in scenario.policies if "Finance" in p.name)
    tenant.state.add_group_owner(finance.etg_group_id, scenario.provisioning_client.object_id)
    tenant.clock.advance(600)
    run_job(alert_settings, tenant, check_config)
    send_alerts(alert_settings, tenant)
    assert headlines(tenant)[-1] == "Resolved: ETG owner missing: Contoso - Finance"


def test_429_is_retried_after_retry_after(alert_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(
        FaultRule(endpoint="teams", kind="status", status=429, retry_after=120, first_n=1)
    )
    run_job(alert_settings, tenant, check_config)
    first = send_alerts(alert_settings, tenant)
    assert first.throttled and first.messages_sent == 0 and first.pending == 4
    assert send_alerts(alert_settings, tenant).messages_sent == 0  # not due yet
    tenant.clock.advance(121)
    assert send_alerts(alert_settings, tenant).messages_sent == 4
    assert len(tenant.teams_messages()) == 4


def test_500_storm_then_recovery_delivers_everything_once(alert_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    storm = tenant.faults.add(FaultRule(endpoint="teams", kind="status", status=500))
    run_job(alert_settings, tenant, check_config)
    for _ in range(4):
        result = send_alerts(alert_settings, tenant)
        assert result.messages_sent == 0
        tenant.clock.advance(3600)
    assert {i.attempts for i in outbox(alert_settings, "pending")} == {4}
    tenant.faults.remove(storm)
    assert send_alerts(alert_settings, tenant).messages_sent == 4
    assert len(tenant.teams_messages()) == 4


def test_alerts_are_given_up_after_the_maximum_age_and_recorded(alert_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(FaultRule(endpoint="teams", kind="status", status=500))
    run_job(alert_settings, tenant, check_config)
    send_alerts(alert_settings, tenant)
    tenant.clock.advance(25 * 3600)
    result = send_alerts(alert_settings, tenant)
    assert result.gave_up == 4
    failed = outbox(alert_settings, "failed")
    assert len(failed) == 4 and "gave up" in failed[0].last_error


def finding_headlines(tenant):
    """Headlines of the cards about the tenant, leaving out the monitor's own job alerts."""
    return [h for h in headlines(tenant) if not h.startswith(("etg-monitor", "Resolved: etg-"))]


def test_crash_between_send_and_mark_repeats_only_that_message_once_its_claim_lapses(
    alert_settings, tenant, monkeypatch
):
    run_job(alert_settings, tenant, check_config)
    original = OutboxRepository.update
    calls = {"n": 0}

    async def crash_once(self, item):
        calls["n"] += 1
        if calls["n"] == 2:  # the first message was claimed and posted, then the process died
            raise RuntimeError("killed")
        return await original(self, item)

    monkeypatch.setattr(OutboxRepository, "update", crash_once)
    with pytest.raises(RuntimeError):
        send_alerts(alert_settings, tenant)
    monkeypatch.setattr(OutboxRepository, "update", original)
    send_alerts(alert_settings, tenant)
    # The others are sent; the posted one stays claimed by the run that died.
    assert len(finding_headlines(tenant)) == len(set(finding_headlines(tenant))) == 4
    tenant.clock.advance(15 * 60)  # well past the claim
    send_alerts(alert_settings, tenant)
    sent = finding_headlines(tenant)
    assert len(sent) == 5 and len(set(sent)) == 4  # exactly one repeat
    assert outbox(alert_settings, "pending", "sending") == []


def test_suppressed_anomalies_do_not_alert(alert_settings, tenant):
    from monitors.jobs.suppressions import new_suppression
    from monitors.rules.suppression import SuppressionScope

    suppression = new_suppression(
        SuppressionScope.POLICY, "Contoso - Kiosk", "pilot", tenant.clock.now(), None
    )
    in_store(alert_settings, lambda store: store.suppressions.add(suppression))
    run_job(alert_settings, tenant, check_config)
    send_alerts(alert_settings, tenant)
    assert not any("Kiosk" in h for h in headlines(tenant))
    assert len(headlines(tenant)) == 3


def test_the_webhook_url_never_reaches_logs_or_tables(alert_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(FaultRule(endpoint="teams", kind="status", status=500))
    run_job(alert_settings, tenant, check_config)
    with capture_logs() as logs:
        send_alerts(alert_settings, tenant)
    assert logs and tenant.teams_url not in repr(logs)
    secret = tenant.teams_url.split("sig=")[-1]
    assert all(secret not in repr(i.to_entity()) for i in outbox(alert_settings))


def test_no_webhook_configured_keeps_alerts_pending(settings, tenant):
    run_job(settings, tenant, check_config)
    result = send_alerts(settings, tenant)
    assert result.messages_sent == 0 and result.pending == 4
    assert len(outbox(settings, "pending")) == 4


def send_with_timeout(settings, tenant, seconds):
    from monitors.alerts.dispatch import dispatch

    return in_store(
        settings,
        lambda store: dispatch(
            store,
            settings.teams_webhook_url,
            tenant.clock.now(),
            owner="test",
            graph_endpoint=settings.graph_endpoint,
            timeout_seconds=seconds,
        ),
    )


def test_a_teams_timeout_defers_the_run_and_delivers_everything_once_after(alert_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(FaultRule(endpoint="teams", kind="hang", first_n=1))
    run_job(alert_settings, tenant, check_config)
    first = send_with_timeout(alert_settings, tenant, 1.0)
    assert first.messages_sent == 0 and first.retry_scheduled == 4
    assert tenant.stats()["teams"] == 1  # the rest waited instead of timing out one by one
    assert all("Timeout" in i.last_error for i in outbox(alert_settings, "pending"))
    tenant.clock.advance(31)
    assert send_with_timeout(alert_settings, tenant, 1.0).messages_sent == 4
    assert len(tenant.teams_messages()) == 4 and outbox(alert_settings, "pending") == []


def test_a_post_delivered_after_the_timeout_repeats_only_that_message(alert_settings, tenant):
    from devtools.simtenant.faults import FaultRule

    tenant.faults.add(FaultRule(endpoint="teams", kind="late_answer", first_n=1))
    run_job(alert_settings, tenant, check_config)
    assert send_with_timeout(alert_settings, tenant, 0.5).messages_sent == 0
    assert len(tenant.teams_messages()) == 1  # delivered, but the answer never came
    tenant.clock.advance(31)
    assert send_with_timeout(alert_settings, tenant, 5.0).messages_sent == 4
    seen = headlines(tenant)
    assert len(seen) == 5 and len(set(seen)) == 4  # one repeat, the documented window
