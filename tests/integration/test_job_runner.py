"""One way to run a job: every job under its lease with its run recorded, alerts claimed before
they are sent, and the CLI's output and failures shaped for scripts and people."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from monitors import service
from monitors.alerts.dispatch import dispatch
from monitors.jobs.context import open_store
from monitors.store.outbox import OutboxRepository, OutboxStatus
from monitors.store.runs import RunRepository
from tests.helpers import in_store, outbox

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(settings, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ETG_") and not k.endswith("_SCHEDULE")
    }
    env.update(
        ETG_GRAPH_ENDPOINT=settings.graph_endpoint,
        ETG_GRAPH_CREDENTIAL="none",
        ETG_STORAGE_CONNECTION=settings.storage_connection,
        ETG_TABLE_PREFIX=settings.table_prefix,
        PYTHONPATH=str(REPO_ROOT),
    )
    env.update(extra)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitors", *args],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _queue_alerts(settings, clock=None) -> int:
    """Run the configuration check with no Teams webhook: its alerts wait in the outbox. The
    clock is the senders' (alerts older than a day are given up, not sent)."""
    quiet = replace(settings, teams_webhook_url=None)
    ran = asyncio.run(service.check_config(quiet, clock=clock))
    assert ran.report is not None

    return len(outbox(settings, OutboxStatus.PENDING))


def test_three_cli_alert_senders_started_together_deliver_each_message_once(settings, tenant):
    queued = _queue_alerts(settings)  # the CLI runs on the system clock
    assert queued >= 3
    env = _env(settings, ETG_TEAMS_WEBHOOK_URL=tenant.teams_url)
    senders = [_cli(env, "alerts", "send") for _ in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in senders]
    for p in senders:
        if p.stdout:
            p.stdout.close()
        if p.stderr:
            p.stderr.close()
    assert all(code in (0, 3) for code, _ in results), results
    titles = [json.dumps(m.card, sort_keys=True) for m in tenant.teams_messages()]
    assert len(titles) == queued
    assert len(set(titles)) == queued
    items = outbox(settings)
    assert {i.status for i in items} == {OutboxStatus.SENT}


def test_overlapping_dispatchers_without_the_lease_still_send_each_item_once(settings, tenant):
    queued = _queue_alerts(settings, tenant.clock)

    async def both() -> list:
        async with open_store(settings) as a, open_store(settings) as b:
            now = tenant.clock.now()
            kwargs = {"graph_endpoint": settings.graph_endpoint}
            return await asyncio.gather(
                dispatch(a, tenant.teams_url, now, owner="first", **kwargs),
                dispatch(b, tenant.teams_url, now, owner="second", **kwargs),
            )

    first, second = asyncio.run(both())
    assert first.items_sent + second.items_sent == queued
    assert len(tenant.teams_messages()) == queued


def test_an_expired_claim_is_sent_again_and_a_live_one_is_left_alone(settings, tenant):
    _queue_alerts(settings, tenant.clock)

    async def claim_all(hold: timedelta) -> None:
        async with open_store(settings) as store:
            outbox = OutboxRepository(store)
            for item in await outbox.items(OutboxStatus.PENDING):
                assert await outbox.claim(item, "crashed-run", tenant.clock.now(), hold)

    async def send() -> int:
        async with open_store(settings) as store:
            result = await dispatch(
                store,
                tenant.teams_url,
                tenant.clock.now(),
                owner="next-run",
                graph_endpoint=settings.graph_endpoint,
            )
            return result.items_sent

    asyncio.run(claim_all(timedelta(minutes=2)))
    assert asyncio.run(send()) == 0  # the claiming dispatcher may still be posting
    tenant.clock.advance(3 * 60)
    assert asyncio.run(send()) > 0  # it died: its items are due again
    assert {i.status for i in outbox(settings)} == {OutboxStatus.SENT}


def test_alerts_and_summary_jobs_run_under_their_lease_and_record_their_run(settings, tenant):
    async def hold(job: str) -> None:
        async with open_store(settings) as store:
            await store.leases.acquire(job, "someone-else", tenant.clock.now(), 600)

    sending = replace(settings, teams_webhook_url=tenant.teams_url)
    _queue_alerts(settings, tenant.clock)
    asyncio.run(hold("alerts"))
    skipped = asyncio.run(service.send_alerts(sending, clock=tenant.clock))
    assert skipped.report is None and skipped.skipped and "alerts" in skipped.skipped
    assert tenant.teams_messages() == []

    asyncio.run(hold("weekly_summary"))
    assert asyncio.run(service.weekly_summary(sending, clock=tenant.clock)).skipped

    tenant.clock.advance(3600)  # both leases run out
    ran = asyncio.run(service.weekly_summary(sending, clock=tenant.clock))
    assert ran.report is not None and ran.dispatched is not None
    assert ran.dispatched.report is not None and ran.dispatched.report.messages_sent >= 1

    recorded = in_store(settings, lambda store: RunRepository(store).all())
    for job in ("alerts", "weekly_summary"):
        assert recorded[job].last_outcome == "ok"
        assert recorded[job].last_run_id and recorded[job].last_success == tenant.clock.now()


JSON_COMMANDS = [
    ["check-config", "--json"],
    ["scan", "--json"],
    ["anomalies", "--json"],
    ["anomalies", "--json", "--status", "all"],
    ["suppressions", "--json"],
    ["alerts", "--json"],
    ["alerts", "send", "--json"],
    ["summary", "--json"],
    ["subscriptions", "--json"],
    ["subscriptions", "sync", "--json"],
    ["health", "--json"],
    ["remediate", "--json"],
    ["remediate", "--json", "--device", "CTSO-J5NB1GX"],
    ["remediations", "--json"],
]


def test_every_json_command_writes_exactly_one_json_document_to_stdout(settings, tenant):
    # Teams is configured so that the jobs' dispatch line has somewhere to go: stderr.
    # Remediation in dry-run: the scan's and check's remediation line goes to stderr too.
    env = _env(settings, ETG_TEAMS_WEBHOOK_URL=tenant.teams_url, ETG_REMEDIATION="dry-run")
    notes = []
    for command in JSON_COMMANDS:
        process = _cli(env, *command)
        out, err = process.communicate(timeout=180)
        assert process.returncode in (0, 1, 3), (command, err)
        json.loads(out)  # one document, nothing before or after it
        notes.append(err)
    assert any("Teams:" in err for err in notes)  # the line exists, just not on stdout
    assert any("remediation (dry-run):" in err for err in notes)


def test_a_malformed_connection_string_is_a_settings_error_without_the_key(settings):
    secret = "c2VjcmV0a2V5LXRoYXQtbXVzdC1uZXZlci1wcmludA=="
    env = _env(settings, ETG_STORAGE_CONNECTION=f"AccountKey={secret};garbage")
    process = _cli(env, "check-config")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "ETG_STORAGE_CONNECTION" in err
    assert "Traceback" not in err and secret not in err + out
    assert len(err.strip().splitlines()) <= 4


def test_a_table_endpoint_that_does_not_answer_is_one_message_naming_the_setting(settings):
    from devtools.simtenant.azurite import free_port

    key = "a2V5LW9mLWFuLWFjY291bnQtdGhhdC1kb2VzLW5vdC1hbnN3ZXI="
    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={key};TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1"
    )
    env = _env(settings, ETG_STORAGE_CONNECTION=dead)
    for command in (["check-config"], ["anomalies", "--json"], ["health"]):
        process = _cli(env, *command)
        out, err = process.communicate(timeout=180)
        assert process.returncode == 4, (command, err)
        assert "ETG_STORAGE_CONNECTION" in err and "could not be reached" in err
        assert "Traceback" not in err and key not in err + out
        assert out == ""


def test_an_invalid_schedule_is_refused_at_start(settings):
    env = _env(settings, SCAN_SCHEDULE="every ten minutes")
    process = _cli(env, "health")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "SCAN_SCHEDULE" in err and "Traceback" not in err


def test_timers_and_routes_turn_an_unreachable_store_into_one_line_and_a_503(
    settings, monkeypatch, capsys
):
    from devtools.simtenant.azurite import free_port
    from monitors import entry
    from tests.helpers import call_route, run_timer

    key = "a2V5LW9mLWFuLWFjY291bnQtdGhhdC1kb2VzLW5vdC1hbnN3ZXI="
    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={key};TableEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1"
    )
    for name, value in _env(settings, ETG_STORAGE_CONNECTION=dead, ETG_LOG_FORMAT="json").items():
        if name.startswith("ETG_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(entry, "_settings", None)
    capsys.readouterr()

    run_timer("alerts")  # returns: the failure is the operator's to fix, not the host's to retry
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    [failure] = [e for e in logged if e["event"] == "job.not_run"]
    assert failure["level"] == "error" and "ETG_STORAGE_CONNECTION" in failure["problem"]
    assert not any("exception" in e for e in logged)

    report = call_route("weekly_report", "GET", "reports/weekly")
    health = call_route("health", "GET", "health")
    assert (
        report.status_code == 503 and report.get_body() == b"state store unavailable; retry later"
    )
    assert health.status_code == 503
    assert "could not be reached" in json.loads(health.get_body())["error"]
    assert key not in capsys.readouterr().err


def test_a_scan_waits_for_a_brief_holder_of_its_lease_instead_of_skipping(settings, tenant):
    from monitors.jobs.context import BRIEF_HOLDER

    async def hold_then_release() -> service.Ran:
        async with open_store(settings) as store:
            owner = BRIEF_HOLDER + "recheck"
            etag = await store.leases.acquire("scan", owner, tenant.clock.now(), 300)
            scan = asyncio.ensure_future(service.scan(settings, clock=tenant.clock))
            await asyncio.sleep(1.0)  # the re-check's seconds
            assert not scan.done()
            await store.leases.release("scan", owner, etag)
            return await scan

    ran = asyncio.run(hold_then_release())
    assert not ran.skipped and ran.report is not None


def test_a_scan_still_skips_when_another_scan_holds_its_lease(settings, tenant):
    async def hold() -> None:
        async with open_store(settings) as store:
            await store.leases.acquire("scan", "another-scan", tenant.clock.now(), 600)

    asyncio.run(hold())
    ran = asyncio.run(service.scan(settings, clock=tenant.clock))
    assert ran.skipped and ran.report is None
